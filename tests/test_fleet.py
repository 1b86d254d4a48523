"""The office's tools and signed control, as they run: ``patrol-agent fleet …`` as a
process against a real Mosquitto, and a unit (``patrol-agent run`` as a process, its clock
from a real gpsd through gpsfake) that trusts only the office's key: signed configs and
commands are done, unsigned, tampered, foreign-key, expired and replayed ones are
refused and reported, and the config in force stays as it was."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.nmea import read_nmea
from agent.signing import new_private_key, read_private_key, sign
from tests.conftest import Mosquitto, Office, Unit, agent_cmd, unit_config, wait_until
from tests.world import PacedGps, lead_in

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
BASE = "patrol/unit-s"


def fleet(broker: Mosquitto, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = agent_cmd("fleet", *args[:1], *(["--broker", f"mqtt://127.0.0.1:{broker.port}"]
                                          if args[0] != "keygen" else []), *args[1:])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class SignedRig:
    """A broker, the office's key (made by ``fleet keygen``), and a unit that trusts it
    and has GPS time (signed commands' expiry needs a clock the unit can trust)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.broker = Mosquitto(tmp / "broker").start()
        self.key = tmp / "office.key"
        out = fleet(self.broker, "keygen", "--out", str(self.key))
        assert out.returncode == 0, out.stderr
        self.public = next(line.split()[-1] for line in out.stdout.splitlines()
                           if line.startswith("public key:"))
        # The receiver's fixes, moved to today: GPS time is the real time.
        fixes = lead_in(read_nmea(SAMPLE / "track.nmea"), 180)
        shift = datetime.now(UTC) - fixes[0].utc
        fixes = [dataclasses.replace(f, utc=f.utc + shift) for f in fixes]
        self.gps = PacedGps(fixes, tmp / "gps")
        self.gps.play(origin=time.time(), epoch0=fixes[0].utc)
        self.db = tmp / "state" / "outbox.db"
        self.db.parent.mkdir()
        self.cfg = unit_config(
            tmp / "agent.toml", device="unit-s", camera=None, db=self.db,
            gps_port=self.gps.port, broker_port=self.broker.port,
            extra=f'[control]\ntrusted_keys = ["{self.public}"]\n'
                  "[health]\ntelemetry_interval_s = 1.0\n")
        self.office = Office(self.broker.port, BASE)
        self.office.client.subscribe(f"{BASE}/cmd/+", qos=1)  # to replay what was sent
        self.unit = Unit(self.cfg)
        self.office.wait_online(60)
        self.unit.wait_for("GPS fix acquired", 60)

    def push(self, *args: str) -> subprocess.CompletedProcess:
        return fleet(self.broker, "push-config", *args)

    def close(self) -> None:
        self.unit.kill()
        self.office.close()
        self.gps.stop()
        self.broker.stop(signal.SIGKILL)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[SignedRig]:
    r = SignedRig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def _toml(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_signed_configs_are_taken_and_the_rest_refused(rig: SignedRig) -> None:
    t = rig.tmp
    good = rig.push("--device", "unit-s", _toml(t / "v.toml", "[detector]\n"
                    "score_threshold = 0.61\n"), "--key", str(rig.key))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "unit-s: accepted" in good.stdout and "detector.score_threshold" in good.stdout
    accepted = rig.office.report(lambda r: r["status"] == "accepted")
    assert accepted["version"] == 1  # one above nothing retained

    # Unsigned: refused by the unit, and the push says so with a failing exit code.
    unsigned = rig.push("--device", "unit-s", _toml(t / "u.toml", "[detector]\n"
                        "score_threshold = 0.3\n"))
    assert unsigned.returncode == 1
    assert "unit-s: rejected" in unsigned.stdout and "not signed" in unsigned.stdout

    key = read_private_key(rig.key)
    # Tampered after signing: the threshold changed under a good signature.
    body = sign({"version": 5, "config": {"detector": {"score_threshold": 0.62}},
                 "request_id": "tampered"}, key)
    body["config"]["detector"]["score_threshold"] = 0.2
    rig.office.desire(body)
    r = rig.office.report(lambda r: r.get("request_id") == "tampered")
    assert r["status"] == "rejected" and "does not match" in r["reason"]
    # Signed by a key the unit does not trust.
    rig.office.desire(sign({"version": 6, "config": {"detector": {"score_threshold": 0.2}},
                            "request_id": "foreign"}, new_private_key()))
    r = rig.office.report(lambda r: r.get("request_id") == "foreign")
    assert r["status"] == "rejected" and "does not trust" in r["reason"]
    # A well-signed document replayed after a newer one: stale, never applied.
    newer = rig.push("--device", "unit-s", _toml(t / "w.toml", "version = 7\n[detector]\n"
                     "score_threshold = 0.64\n"), "--key", str(rig.key))
    assert newer.returncode == 0, newer.stdout
    old = sign({"version": 2, "config": {"detector": {"score_threshold": 0.2}},
                "request_id": "replayed"}, key)
    rig.office.desire(old)
    r = rig.office.report(lambda r: r.get("request_id") == "replayed")
    assert r["status"] == "stale"
    assert r["in_force"] == {"device": 7}
    # What is in force is what the signed pushes set, and nothing else.
    assert r["config_hash"] == rig.office.report(lambda r: r.get("version") == 7)["config_hash"]
    status = json.loads(fleet(rig.broker, "status", "--json").stdout)
    assert status["unit-s"]["status"]["config_hash"] == r["config_hash"]
    kept = json.loads((rig.db.parent / "config" / "device.json").read_text())
    assert kept["version"] == 7 and kept["config"] == {"detector": {"score_threshold": 0.64}}


def test_signed_commands_are_done_once_and_not_after_they_expire(rig: SignedRig) -> None:
    out = fleet(rig.broker, "command", "unit-s", "ping", "--key", str(rig.key))
    assert out.returncode == 0, out.stdout + out.stderr
    answer = json.loads(out.stdout)
    assert answer["ok"] is True and answer["result"]["device"] == "unit-s"

    # The same signed message again, as someone who recorded it would: refused.
    with rig.office.lock:
        sent = [p for topic, p, _ in rig.office.messages if topic == f"{BASE}/cmd/ping"]
    assert len(sent) == 1
    rid = json.loads(sent[0])["request_id"]
    rig.office.client.publish(f"{BASE}/cmd/ping", sent[0], qos=1).wait_for_publish(5)
    wait_until(lambda: len([a for a, _ in rig.office.answers("ping")
                            if a["request_id"] == rid]) == 2, 15, "the replay's answer")
    replay = [a for a, _ in rig.office.answers("ping") if a["request_id"] == rid][-1]
    assert replay["ok"] is False and "replayed" in replay["error"]

    key = read_private_key(rig.key)
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    rig.office.send("flush", sign({"request_id": "late", "expires_at": past}, key))
    late, _ = rig.office.answer("late")
    assert late["ok"] is False and "expired" in late["error"]

    unsigned = fleet(rig.broker, "command", "unit-s", "ping")
    assert unsigned.returncode == 1
    assert "not signed" in json.loads(unsigned.stdout)["error"]

    # A restart does not forget what was done: the replay is still refused.
    rig.unit.stop()
    onlines = rig.office.onlines()
    rig.unit = Unit(rig.cfg)
    rig.office.wait_online(60, more_than=onlines)
    rig.unit.wait_for("GPS fix acquired", 60)
    rig.office.client.publish(f"{BASE}/cmd/ping", sent[0], qos=1).wait_for_publish(5)
    wait_until(lambda: len([a for a, _ in rig.office.answers("ping")
                            if a["request_id"] == rid]) == 3, 15, "the second replay's answer")
    again = [a for a, _ in rig.office.answers("ping") if a["request_id"] == rid][-1]
    assert again["ok"] is False and "replayed" in again["error"]


def test_fleet_status_and_a_fleet_push_name_every_unit(rig: SignedRig) -> None:
    # A second unit the broker knows of, whose van is parked with its unit off.
    rig.office.client.publish("patrol/van-9/status", json.dumps(
        {"state": "offline", "device": "van-9", "agent_version": "0.1.0",
         "config_version": 1, "config_hash": "ab" * 32}), qos=1,
        retain=True).wait_for_publish(5)
    wait_until(lambda: (rig.db.parent / "telemetry.json").exists(), 30, "telemetry")

    out = fleet(rig.broker, "push-config", "--fleet", _toml(rig.tmp / "f.toml", "[events]\n"
                "min_score = 0.8\n"), "--key", str(rig.key), "--timeout", "6")
    assert out.returncode == 1, out.stdout  # not every unit answered
    assert "unit-s: accepted" in out.stdout
    assert "van-9: no report" in out.stdout

    wait_until(lambda: "unit-s" in fleet(rig.broker, "status").stdout, 20, "status")
    table = fleet(rig.broker, "status").stdout.splitlines()
    unit = next(line for line in table if line.startswith("unit-s"))
    van = next(line for line in table if line.startswith("van-9"))
    assert " online " in unit and "f1" in unit and "accepted" in unit and "s ago" in unit
    assert " offline " in van
