"""Desired config from the office over a real Mosquitto to ``patrol-agent run`` as a
process: changed live or by restarting only the stage concerned, rejected with each bad
key named, stale versions ignored, kept across a restart without the broker, and rolled
back when the unit cannot work with it."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import Config, read_config_file
from agent.desired import Desired, effective, load_kept, persist
from agent.store import Store
from tests.conftest import Mosquitto, Office, Unit, unit_config, wait_until

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
BASE = "patrol/unit-r"


def _hash(cfg_path: Path, **docs: Desired) -> str:
    """The config hash the unit should report with these documents over its file."""
    return effective(read_config_file(cfg_path), docs, "test").content_hash()


class Rig:
    def __init__(self, tmp: Path, extra: str = "", broker_conf: str = "",
                 office_auth: tuple[str, str] | None = None, mqtt_extra: str = "") -> None:
        self.tmp = tmp
        self.broker = Mosquitto(tmp / "broker", extra_conf=broker_conf).start()
        self.office = Office(self.broker.port, BASE, auth=office_auth)
        self.db = tmp / "state" / "outbox.db"
        self.db.parent.mkdir()
        self.cfg = unit_config(tmp / "agent.toml", device="unit-r",
                               camera=str(SAMPLE / "video.mp4"), db=self.db,
                               broker_port=self.broker.port)
        text = self.cfg.read_text().replace("keepalive_s = 5\n", f"keepalive_s = 5\n{mqtt_extra}")
        self.cfg.write_text(text + extra)
        self.unit = self.start()

    def start(self) -> Unit:
        onlines = self.office.onlines()
        self.unit = Unit(self.cfg)
        self.office.wait_online(60, more_than=onlines)
        return self.unit

    def close(self) -> None:
        self.unit.kill()
        self.office.close()
        self.broker.stop(signal.SIGKILL)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _doc(version: int, config: dict, rid: str | None = None) -> dict:
    return {"version": version, "config": config, **({"request_id": rid} if rid else {})}


def test_a_threshold_changed_live_is_reported_and_nothing_restarts(rig: Rig) -> None:
    before = rig.office.ask("ping")
    rig.office.desire(_doc(4, {"detector": {"score_threshold": 0.72},
                               "events": {"min_score": 0.8}}, rid="th-1"))
    r = rig.office.report(lambda r: r.get("request_id") == "th-1")
    assert r["status"] == "accepted" and r["scope"] == "device" and r["version"] == 4
    assert r["changed"] == ["detector.score_threshold", "events.min_score"]
    assert "restarted" not in r and "on_trial" not in r
    assert r["in_force"] == {"device": 4}
    want = _hash(rig.cfg, device=Desired("device", 4, {"detector": {"score_threshold": 0.72},
                                                       "events": {"min_score": 0.8}}))
    assert r["config_hash"] == want
    # The same process, the same connection, the same camera: nothing restarted.
    after = rig.office.ask("ping")
    assert after["result"]["uptime_s"] >= before["result"]["uptime_s"]
    assert rig.unit.proc.poll() is None
    assert rig.unit.log.count("connected to broker") == 1
    assert "camera" not in rig.unit.log.split("in force")[-1].split("\n")[0]
    # Kept beside the outbox, readable by the owner only (it may hold a password).
    kept = rig.db.parent / "config" / "device.json"
    assert json.loads(kept.read_text())["version"] == 4
    assert kept.stat().st_mode & 0o077 == 0


def test_a_camera_source_changed_restarts_only_the_camera(rig: Rig) -> None:
    other = rig.tmp / "other.mp4"
    shutil.copy(SAMPLE / "video.mp4", other)
    rig.office.desire(_doc(1, {"camera": {"source": str(other)}}, rid="cam-1"))
    r = rig.office.report(lambda r: r.get("request_id") == "cam-1")
    assert r["status"] == "accepted", r
    assert r["restarted"] == ["camera"] and r["on_trial"] == ["camera"]
    rig.unit.wait_for("the device config version 1 works (camera)", 30)
    assert rig.unit.log.count("connected to broker") == 1  # the uplink kept its connection
    assert rig.unit.proc.poll() is None
    assert "failed" not in rig.unit.log
    assert rig.office.ask("ping")["ok"] is True


def test_a_bad_key_is_rejected_and_named_and_the_old_config_keeps_working(rig: Rig) -> None:
    rig.office.desire(_doc(2, {"detector": {"score_threshold": 0.7}}, rid="ok-2"))
    good = rig.office.report(lambda r: r.get("request_id") == "ok-2")
    rig.office.desire(_doc(3, {"detector": {"score_threshold": 7, "colour": "red"},
                               "mqtt": {"password": "hunter2", "qos": 5}}, rid="bad-3"))
    r = rig.office.report(lambda r: r.get("request_id") == "bad-3")
    assert r["status"] == "rejected"
    problems = {p["key"]: p for p in r["problems"]}
    assert set(problems) == {"detector.score_threshold", "detector.colour", "mqtt.qos"}
    assert problems["detector.score_threshold"]["value"] == 7
    assert "less than or equal to 1" in problems["detector.score_threshold"]["why"]
    assert problems["detector.colour"]["why"] == "unknown key"
    assert problems["mqtt.qos"]["value"] == 5
    assert "hunter2" not in json.dumps(r) and "hunter2" not in rig.unit.log
    # What was in force stays in force, and kept.
    assert r["in_force"] == {"device": 2} and r["config_hash"] == good["config_hash"]
    assert json.loads((rig.db.parent / "config" / "device.json").read_text())["version"] == 2
    assert rig.office.ask("ping")["ok"] is True


def test_a_stale_version_is_reported_and_never_applied(rig: Rig) -> None:
    rig.office.desire(_doc(5, {"events": {"min_score": 0.9}}, rid="v5"))
    five = rig.office.report(lambda r: r.get("request_id") == "v5")
    rig.office.desire(_doc(3, {"events": {"min_score": 0.5}}, rid="v3"))
    r = rig.office.report(lambda r: r.get("request_id") == "v3")
    assert r["status"] == "stale" and "version 3 is not above the 5" in r["reason"]
    assert r["config_hash"] == five["config_hash"] and r["in_force"] == {"device": 5}
    # The same version with other content is stale too; clearing the retained
    # document changes nothing.
    rig.office.desire(_doc(5, {"events": {"min_score": 0.1}}, rid="v5b"))
    assert rig.office.report(lambda r: r.get("request_id") == "v5b")["status"] == "stale"
    rig.office.desire(b"")
    rig.unit.wait_for("the office cleared the device desired config", 10)
    assert rig.office.ask("ping")["ok"] is True
    assert json.loads((rig.db.parent / "config" / "device.json").read_text())["version"] == 5


def test_fleet_and_device_documents_are_layered_over_the_file(rig: Rig) -> None:
    fleet = {"detector": {"score_threshold": 0.6}, "events": {"min_score": 0.85}}
    rig.office.desire(_doc(10, fleet, rid="f10"), fleet=True)
    rig.office.report(lambda r: r.get("request_id") == "f10")
    device = {"detector": {"score_threshold": 0.7}}
    rig.office.desire(_doc(1, device, rid="d1"))
    r = rig.office.report(lambda r: r.get("request_id") == "d1")
    assert r["in_force"] == {"fleet": 10, "device": 1}
    assert r["changed"] == ["detector.score_threshold"]
    assert r["config_hash"] == _hash(rig.cfg, fleet=Desired("fleet", 10, fleet),
                                     device=Desired("device", 1, device))
    eff = effective(read_config_file(rig.cfg), {"fleet": Desired("fleet", 10, fleet),
                                                "device": Desired("device", 1, device)}, "t")
    assert eff.detector.score_threshold == 0.7 and eff.events.min_score == 0.85


def test_the_kept_config_is_in_force_after_a_restart_before_the_broker_is_back(
        rig: Rig) -> None:
    doc = {"events": {"min_score": 0.93}, "health": {"telemetry_interval_s": 5}}
    rig.office.desire(_doc(7, doc, rid="keep-7"))
    r = rig.office.report(lambda r: r.get("request_id") == "keep-7")
    rig.unit.stop()
    rig.broker.stop()
    unit = Unit(rig.cfg)  # offline: the broker is down
    try:
        unit.wait_for("config from the office in force: device 7", 30)
        # Its telemetry file (written with or without a broker) carries the same hash.
        tele = rig.db.parent / "telemetry.json"
        wait_until(lambda: tele.exists() and json.loads(tele.read_text()).get(
            "config_hash") == r["config_hash"], 30, "telemetry with the kept config")
        # The retained copy, when the broker is back, changes nothing and says nothing.
        onlines = rig.office.onlines()
        rig.broker.start()
        rig.office.wait_online(30, more_than=onlines)
        assert rig.office.ask("ping")["ok"] is True  # the retained copy came before it
        assert "pipeline: device config" not in unit.log and "config in force" not in unit.log
    finally:
        unit.kill()


def test_reload_config_reads_the_file_again_with_the_office_documents_over_it(
        rig: Rig) -> None:
    rig.office.desire(_doc(1, {"events": {"min_score": 0.9}}, rid="r1"))
    rig.office.report(lambda r: r.get("request_id") == "r1")
    rig.cfg.write_text(rig.cfg.read_text() + "[detector]\nscore_threshold = 0.66\n")
    body = rig.office.ask("reload-config")
    assert body["ok"] is True and body["result"]["changed"] == ["detector.score_threshold"]
    assert body["result"]["config_hash"] == _hash(
        rig.cfg, device=Desired("device", 1, {"events": {"min_score": 0.9}}))
    rig.cfg.write_text(rig.cfg.read_text() + "[nonsense]\n")
    body = rig.office.ask("reload-config")
    assert body["ok"] is False and "not reloaded, the config in force stays" in body["error"]
    assert "nonsense" in body["error"]


def test_wrong_broker_credentials_are_rolled_back_within_the_grace_time(
        tmp_path: Path) -> None:
    pwfile = tmp_path / "passwd"
    for i, (user, pw) in enumerate([("unit-r", "right"), ("office", "o")]):
        subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                        "-b", *(["-c"] if i == 0 else []), str(pwfile), user, pw], check=True)
    rig = Rig(tmp_path, extra="[control]\ngrace_s = 5\n", office_auth=("office", "o"),
              broker_conf=f"password_file {pwfile}\nallow_anonymous false\n",
              mqtt_extra='username = "unit-r"\npassword = "right"\n')
    try:
        rig.office.desire(_doc(1, {"mqtt": {"password": "wrong-one"}}, rid="pw-1"))
        t0 = time.monotonic()
        r = rig.office.report(lambda r: r.get("request_id") == "pw-1"
                              and r["status"] == "rolled_back", timeout=30)
        took = time.monotonic() - t0
        assert "the broker was not reached with it" in r["reason"]
        assert r["in_force"] == {} and took < 5 + 10, took
        assert "wrong-one" not in json.dumps(rig.office.reports()) + rig.unit.log
        # Nothing kept: a restart uses the file alone; and the unit works on.
        assert load_kept(rig.db.parent / "config") == {}
        assert rig.unit.log.count("connected to broker") == 2
        assert rig.office.ask("ping")["ok"] is True
        # The retained document that failed is not tried again after a reconnect
        # (only a newer version is).
        rig.broker.stop()
        rig.broker.start()
        wait_until(lambda: rig.unit.log.count("connected to broker") >= 3, 30, "reconnect")
        time.sleep(2)
        assert rig.unit.log.count("config in force") == 2  # the change and its rollback
        said = [line.split("device config ")[1].split(":")[0]
                for line in rig.unit.log.splitlines() if "pipeline: device config " in line]
        assert said == ["accepted", "rolled_back"]
        # Nor after a restart of the unit; an older version is stale.
        rig.unit.stop()
        rig.start()
        time.sleep(2)
        assert "config in force" not in rig.unit.log
        assert "pipeline: device config" not in rig.unit.log
        rig.office.desire(_doc(0, {"mqtt": {"password": "wrong-two"}}, rid="pw-0"))
        r = rig.office.report(lambda r: r.get("request_id") == "pw-0")
        assert r["status"] == "stale" and "the 1 rolled back for the device" in r["reason"]
    finally:
        rig.close()


_KILL_CHILD = """
import sys
from pathlib import Path
from agent.desired import Desired, persist
d = Path(sys.argv[1])
v = int(sys.argv[2])
while True:
    v += 1
    persist(d, Desired("device", v, {"events": {"note": f"v{v}" * 20000}}, f"r{v}"))
    print(v, flush=True)
"""


def test_sigkill_while_persisting_leaves_the_old_or_the_new(tmp_path: Path) -> None:
    directory = tmp_path / "config"
    persist(directory, Desired("device", 0, {"events": {"note": "v0" * 20000}}, "r0"))
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    version = 0
    for _ in range(25):
        child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(directory),
                                  str(version)], stdout=subprocess.PIPE, env=env, text=True)
        assert child.stdout is not None
        child.stdout.readline()  # it is writing
        time.sleep(rng.uniform(0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        kept = load_kept(directory)["device"]
        # Whole: the version, its content and its request id all agree.
        assert kept.config["events"]["note"] == f"v{kept.version}" * 20000
        assert kept.request_id == f"r{kept.version}" and kept.version >= version
        version = kept.version


_TEXT = st.text(max_size=20)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(_TEXT, c, max_size=4),
                     max_leaves=12)
# Documents that must never change the config: not JSON at all, any JSON, a config with
# values of the wrong kind, or a valid change at a version that is not new.
_SECTIONS = set(Config.model_fields)
_HOSTILE = st.one_of(
    st.binary(max_size=200),
    _JSON.map(lambda v: json.dumps(v).encode()),
    # Sections that do not exist (a valid change at a new version would rightly be taken).
    st.fixed_dictionaries({"version": st.integers(-5, 10**20) | _TEXT,
                           "config": st.dictionaries(_TEXT.filter(lambda k: k not in _SECTIONS),
                                                     _JSON, min_size=1, max_size=3)}
                          ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"version": st.integers(0, 50), "config": st.just(
        {"detector": {"score_threshold": 0.51}})}).map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.slow
def test_500_hostile_payloads_on_the_config_topics_change_nothing(rig: Rig) -> None:
    rig.office.desire(_doc(50, {"events": {"min_score": 0.9}}, rid="base"), fleet=True)
    rig.office.desire(_doc(50, {"events": {"min_score": 0.91}}, rid="base-d"))
    base = rig.office.report(lambda r: r.get("request_id") == "base-d")
    sent = []

    # 500: each is a config report to make and publish, and with the other test file's unit
    # beside it (the suite runs two at a time) a thousand took over three minutes once.
    # derandomize: the same 500 every run. The unit once stopped answering after them (the
    # ping, sent while the flood still filled the control queue, was dropped); a scope's
    # waiting desired configs now give way to its newest (tests/test_control.py).
    @settings(max_examples=500, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(payload=_HOSTILE, fleet=st.booleans())
    def send(payload: bytes, fleet: bool) -> None:
        topic = "patrol/fleet/config/desired" if fleet else f"{BASE}/config/desired"
        rig.office.client.publish(topic, payload, qos=0, retain=True)
        sent.append(payload)

    send()
    assert len(sent) >= 500
    # Five hundred reports to make first; on a loaded machine that takes a while. The
    # claim is that it gets through them, not how fast.
    assert rig.office.answer_within("ping", 200)["ok"] is True
    assert rig.unit.proc.poll() is None
    last = rig.office.reports()[-1]
    assert last["config_hash"] == base["config_hash"]
    assert last["in_force"] == {"fleet": 50, "device": 50}
    assert {d.version for d in load_kept(rig.db.parent / "config").values()} == {50}
    # And it went on with its work: the drive's findings all delivered.
    def delivered() -> bool:
        with Store(rig.db) as store:
            counts = store.counts()
        return counts["pending"] == 0 and counts["delivered"] >= 3

    wait_until(delivered, 120, "the drive's findings delivered")
