"""Commands from the office over a real Mosquitto to ``patrol-agent run`` as a process:
each answered on its result topic with its request_id, and hostile payloads refused with
a reason while the unit keeps working."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.pipeline import STOP_BUDGET_S
from agent.store import Store
from tests.conftest import Mosquitto, Office, Unit, make_event, unit_config, wait_until

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
BASE = "patrol/unit-c"


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[tuple[Unit, Office, Mosquitto, Path]]:
    broker = Mosquitto(tmp_path / "broker").start()
    office = Office(broker.port, BASE)
    db = tmp_path / "outbox.db"
    cfg = unit_config(tmp_path / "a.toml", device="unit-c", camera=str(SAMPLE / "video.mp4"),
                      db=db, broker_port=broker.port)
    u = Unit(cfg)
    office.wait_online(60)
    try:
        yield u, office, broker, db
    finally:
        u.kill()
        office.close()
        broker.stop(signal.SIGKILL)


def test_ping_is_answered_with_its_request_id_and_correlation_data(unit: tuple) -> None:
    _u, office, _, _ = unit
    office.send("ping", {"request_id": "r-1"}, correlation=b"\x01\x02corr")
    body, props = office.answer("r-1")
    assert body["ok"] is True and body["command"] == "ping" and body["error"] is None
    assert body["result"]["device"] == "unit-c" and body["result"]["uptime_s"] >= 0
    assert props is not None and props.CorrelationData == b"\x01\x02corr"


def test_an_unknown_command_is_answered_with_an_error(unit: tuple) -> None:
    _u, office, _, _ = unit
    body = office.ask("self-destruct")
    assert body["ok"] is False and "unknown command 'self-destruct'" in body["error"]
    assert "ping" in body["error"]


@pytest.mark.parametrize(("payload", "why"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe\x00garbage", "not UTF-8"),
    (b"[1, 2, 3]", "not a JSON object but list"),
    (b'{"request_id": 5}', "request_id must be text"),
    (b'{"args": "x"}', "args must be a JSON object"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper than 16 levels"),
    (b'{"n": 1e400}', "a number is not finite"),
    (b'{"n": 123456789012345678901234567890}', "a number is too large"),
    (b'{"x": "' + b"a" * 70000 + b'"}', "over the 65536-byte limit"),
])
def test_a_hostile_payload_is_refused_with_a_reason_and_changes_nothing(
        unit: tuple, payload: bytes, why: str) -> None:
    _u, office, _, _ = unit
    office.send("ping", payload)
    wait_until(lambda: office.answers("ping"), 10, "the refusal")
    (body, _), = office.answers("ping")
    assert body["ok"] is False and why in body["error"], body
    assert office.ask("ping")["ok"] is True  # and it still answers


def test_a_retained_command_is_not_done_at_the_next_start(tmp_path: Path) -> None:
    """A command someone published retained is handed to the unit again at every
    reconnect; it is refused, not done (a retained restart would restart it for ever)."""
    broker = Mosquitto(tmp_path / "broker").start()
    office = Office(broker.port, BASE)
    office.send("restart", {"request_id": "stale"}, retain=True)
    cfg = unit_config(tmp_path / "a.toml", device="unit-c", camera=None,
                      db=tmp_path / "outbox.db", broker_port=broker.port)
    u = Unit(cfg)
    try:
        body, _ = office.answer("stale", timeout=60)
        assert body["ok"] is False and "not to be retained" in body["error"]
        time.sleep(1.0)
        assert u.proc.poll() is None, u.log
    finally:
        u.kill()
        office.client.publish(f"{BASE}/cmd/restart", b"", qos=1, retain=True)
        office.close()
        broker.stop(signal.SIGKILL)


def test_purge_delivered_and_flush(unit: tuple) -> None:
    _u, office, _, db = unit
    with Store(db) as s:
        evs = [make_event(i) for i in range(3)]
        s.add_many(evs)
    wait_until(lambda: office.ask("flush")["result"]["pending"] == 0, 20, "all delivered")
    body = office.ask("purge-delivered")
    assert body["ok"] and body["result"]["deleted"] >= 3 and body["result"]["delivered"] == 0
    with Store(db) as s:
        assert all(s.get(e.id) is None for e in evs)


def test_a_snapshot_is_a_redacted_picture_of_what_the_camera_sees_now(unit: tuple) -> None:
    _u, office, _, _ = unit
    time.sleep(1.0)  # the camera has given frames
    body = office.ask("snapshot")
    assert body["ok"], body
    r = body["result"]
    assert r["redaction"]["ran"] is True and r["topic"].startswith(f"{BASE}/snapshots/")

    def picture() -> bytes | None:
        with office.lock:
            return next((p for t, p, _ in office.messages if t == r["topic"]), None)

    wait_until(lambda: picture() is not None, 10, "the picture")
    jpeg = picture()
    assert jpeg is not None and len(jpeg) == r["bytes"]
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (360, 640, 3)


def test_restart_is_answered_then_a_clean_exit(unit: tuple) -> None:
    u, office, _, _ = unit
    t0 = time.monotonic()
    body = office.ask("restart")
    assert body["ok"] and body["result"]["restarting"] is True
    assert u.wait(STOP_BUDGET_S) == 0, u.log
    assert time.monotonic() - t0 < STOP_BUDGET_S
    assert "restarting, as the office asked" in u.log
    with office.lock:
        last_status = [json.loads(p) for t, p, _ in office.messages if t.endswith("/status")]
    assert last_status and last_status[-1]["state"] == "offline"


@pytest.mark.slow
def test_a_thousand_hostile_payloads_leave_the_unit_working(tmp_path: Path, unit: tuple
                                                            ) -> None:
    """Random bytes, random JSON and random command names on the command topics: the unit
    stays up, keeps answering and delivering, and its config stays as it was."""
    u, office, _broker, db = unit
    wait_until(lambda: bool(office.statuses()), 15, "the unit's retained status")
    first_status = office.statuses()[0]
    names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=20)
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() |
                               st.text(max_size=30),
                               lambda inner: st.lists(inner, max_size=4) |
                               st.dictionaries(st.text(max_size=10), inner, max_size=4),
                               max_leaves=20)
    payloads = st.one_of(st.binary(max_size=300),
                         json_values.map(lambda v: json.dumps(v).encode()),
                         st.dictionaries(st.sampled_from(["request_id", "args", "x"]),
                                         json_values).map(lambda v: json.dumps(v).encode()))
    sent = [0]

    @settings(max_examples=1100, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(name=st.one_of(names, st.sampled_from(["ping", "flush", "snapshot", "restart",
                                                  "purge-delivered"])), payload=payloads)
    def hostile(name: str, payload: bytes) -> None:
        if name == "restart":
            payload = b"\xff" + payload  # a well-formed one (even empty) is a real restart
        office.client.publish(f"{BASE}/cmd/{name}", payload, qos=0)
        sent[0] += 1

    hostile()
    assert sent[0] >= 1000
    time.sleep(2.0)
    assert u.proc.poll() is None, u.log
    assert office.ask("ping")["ok"] is True
    with Store(db) as s:
        ev = make_event(99)
        s.add(ev)
    wait_until(lambda: office.ask("flush")["result"]["pending"] == 0, 20,
               "a finding delivered after the storm")
    with office.lock:
        statuses = [json.loads(p) for t, p, _ in office.messages if t.endswith("/status")]
    assert statuses[-1]["config_hash"] == first_status["config_hash"]
    assert "Traceback" not in u.log


def test_a_flood_of_desired_configs_never_crowds_out_a_command_or_the_newest_config() -> None:
    """The control stage's queue, as the uplink's thread fills it while the stage is busy:
    of each scope's desired configs only the newest waits, so a command sent after 500 of
    them is still taken, and the last document is the one handled (a flood on the config
    topics once made a unit drop the office's ping)."""
    from agent.control import MAX_QUEUE, Control
    from agent.records import ControlMessage
    from agent.topics import Topics

    topics = Topics("patrol", "unit-q")
    handled: list[tuple[str, bytes]] = []
    answers: list[bytes] = []
    control = Control(topics, lambda topic, body, **kw: answers.append(body),
                      {"ping": lambda req: {"pong": True}},
                      desired=lambda scope, msg: handled.append((scope, msg.payload)))
    for i in range(500):
        topic = topics.config_desired if i % 2 else topics.fleet_config_desired
        control.put(ControlMessage(topic, f"doc {i}".encode(), retained=True))
    control.put(ControlMessage(topics.cmd("ping"), b'{"request_id": "p1"}'))
    assert control.stats.dropped == 0 and control.stats.superseded == 498
    control.close()
    control.run()  # handles what waits, then returns: closed
    assert handled == [("fleet", b"doc 498"), ("device", b"doc 499")]
    assert len(answers) == 1 and json.loads(answers[0])["ok"] is True
    assert MAX_QUEUE < 500  # the flood was larger than the queue
