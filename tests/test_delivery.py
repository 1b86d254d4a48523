"""At-least-once delivery from the SQLite outbox to a real Mosquitto."""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import load_config
from agent.pipeline import Pipeline
from agent.store import Store
from tests.conftest import (
    Mosquitto,
    Subscriber,
    make_event,
    make_jpeg,
    start_agent,
    wait_until,
    write_config,
)


def counts(db: Path) -> dict[str, int]:
    with Store(db) as s:
        return s.counts()


@pytest.fixture
def running_pipeline() -> Iterator[Callable[[Path], Pipeline]]:
    pipes: list[Pipeline] = []

    def start(config: Path) -> Pipeline:
        p = Pipeline(load_config(config))
        p.start()
        pipes.append(p)
        return p

    yield start
    for p in pipes:
        p.stop()


def add_events(db: Path, n: int, start: int = 0, batch: int = 1) -> list[str]:
    ids = []
    with Store(db) as s:
        for k in range(start, start + n, batch):
            evs = [make_event(i) for i in range(k, min(k + batch, start + n))]
            s.add_many(evs)
            ids += [e.id for e in evs]
    return ids


def test_events_stored_while_broker_down_are_delivered_when_it_is_up(
        tmp_path: Path, subscriber_factory: Callable[..., Subscriber],
        running_pipeline: Callable[[Path], Pipeline]) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    sub = subscriber_factory(broker.port)  # persistent session, kept across the restart
    broker.stop()
    db = tmp_path / "outbox.db"
    cfg = write_config(tmp_path / "agent.toml", broker.port, db)
    pipe = running_pipeline(cfg)
    ids = [make_event(i) for i in range(40)]
    for ev in ids:
        pipe.submit(ev)
    time.sleep(2.0)  # several connection attempts against the dead port
    assert pipe.uplink is not None
    assert pipe.uplink.stats.last_error, "the failed connection attempts were not reported"
    assert counts(db) == {"pending": 40, "delivered": 0}

    broker.start()
    try:
        wait_until(lambda: counts(db)["delivered"] == 40, 30, "all events delivered")
        wait_until(lambda: sub.event_ids() >= {e.id for e in ids}, 15, "subscriber has all")
        # each event's image arrived intact, on its own topic
        images = sub.images()
        for ev in ids:
            assert hashlib.sha256(images[ev.id]).digest() == hashlib.sha256(ev.image_jpeg).digest()
        by_id = {m["id"]: m for m in sub.events()}
        m = by_id[ids[5].id]
        assert m["schema"] == 1 and m["device"] == "unit-1" and m["label"] == "garbage"
        assert m["position"]["lat"] == pytest.approx(ids[5].position.lat)
        assert m["image"]["topic"] == f"patrol/unit-1/images/{ids[5].id}"
    finally:
        broker.stop(signal.SIGKILL)


def test_an_events_crop_is_published_before_it_and_named_in_it(
        tmp_path: Path, broker: Mosquitto, subscriber_factory: Callable[..., Subscriber],
        running_pipeline: Callable[[Path], Pipeline]) -> None:
    sub = subscriber_factory(broker.port)
    # An MQTT 5 subscriber too: content types only exist there.
    v5: dict[str, str] = {}
    got_v5 = threading.Event()
    c5 = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-sub-v5",
                     protocol=mqtt.MQTTv5)
    c5.on_connect = lambda c, u, f, rc, p: c.subscribe("patrol/+/images/#", qos=1)
    c5.on_subscribe = lambda *a: got_v5.set()
    c5.on_message = lambda c, u, m: v5.__setitem__(
        m.topic, getattr(m.properties, "ContentType", ""))
    c5.connect("127.0.0.1", broker.port)
    c5.loop_start()
    try:
        assert got_v5.wait(10), "v5 subscriber could not subscribe"
        db = tmp_path / "outbox.db"
        pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db))
        cropped = make_event(1).replace(crop_jpeg=make_jpeg(21, size=32))
        plain = make_event(2)  # as the store gives back events from before crops
        pipe.submit(cropped)
        pipe.submit(plain)
        wait_until(lambda: sub.event_ids() >= {cropped.id, plain.id}, 20, "both events")
        wait_until(lambda: counts(db) == {"pending": 0, "delivered": 2}, 10, "both delivered")

        crop_topic = f"patrol/unit-1/images/{cropped.id}/crop"
        assert sub.crops() == {cropped.id: cropped.crop_jpeg}
        assert sub.images()[cropped.id] == cropped.image_jpeg  # the full picture, not the crop
        # picture, crop, then the JSON that names them
        topics = sub.topics()
        with sub.lock:
            its_json = next(i for i, (t, p, _) in enumerate(sub.messages)
                            if t.endswith("/events") and json.loads(p)["id"] == cropped.id)
        assert topics.index(f"patrol/unit-1/images/{cropped.id}") < topics.index(crop_topic) \
            < its_json

        by_id = {m["id"]: m for m in sub.events()}
        assert by_id[cropped.id]["schema"] == 1
        assert by_id[cropped.id]["crop"] == {
            "topic": crop_topic, "content_type": "image/jpeg",
            "bytes": len(cropped.crop_jpeg),  # type: ignore[arg-type]
            "sha256": hashlib.sha256(cropped.crop_jpeg).hexdigest()}  # type: ignore[arg-type]
        # an event without a crop still goes, says so, and sends no crop message
        assert by_id[plain.id]["crop"] is None
        assert sub.images()[plain.id] == plain.image_jpeg
        assert not any(t.endswith(f"{plain.id}/crop") for t in topics)

        wait_until(lambda: crop_topic in v5, 10, "crop at the v5 subscriber")
        assert v5[crop_topic] == "image/jpeg"
    finally:
        c5.loop_stop()
        c5.disconnect()


def test_an_event_is_not_delivered_until_its_crop_is_acknowledged(
        tmp_path: Path, running_pipeline: Callable[[Path], Pipeline]) -> None:
    """The broker takes the picture and the JSON but refuses the crop: not delivered."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite patrol/unit-1/status\ntopic readwrite patrol/unit-1/events\n"
                   "topic readwrite patrol/unit-1/images/+\n")  # + is one level: not …/crop
    broker = Mosquitto(tmp_path / "broker", extra_conf=f"acl_file {acl}\n").start()
    try:
        db = tmp_path / "outbox.db"
        pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db))
        cropped = make_event(1).replace(crop_jpeg=make_jpeg(22, size=32))
        plain = make_event(2)
        pipe.submit(cropped)
        pipe.submit(plain)
        assert pipe.uplink is not None
        wait_until(lambda: pipe.uplink.stats.rejected >= 1, 20, "the broker's refusal")
        wait_until(lambda: counts(db)["delivered"] == 1, 20, "the event without a crop")
        time.sleep(1.0)
        with Store(db) as s:
            assert s.get(cropped.id).state == "pending"  # type: ignore[union-attr]
            assert s.get(plain.id).state == "delivered"  # type: ignore[union-attr]
    finally:
        broker.stop(signal.SIGKILL)


def test_nothing_is_marked_delivered_without_the_brokers_puback(
        tmp_path: Path, broker: Mosquitto, running_pipeline: Callable[[Path], Pipeline]) -> None:
    """A frozen broker takes the bytes (publish() succeeds) but acknowledges nothing."""
    db = tmp_path / "outbox.db"
    pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db))
    assert pipe.uplink is not None
    wait_until(lambda: pipe.uplink.stats.connected, 10, "agent connected")
    broker.pause()
    try:
        evs = [make_event(i) for i in range(10)]
        for ev in evs:
            pipe.submit(ev)
        wait_until(lambda: pipe.uplink.stats.published >= 10, 10, "events handed to paho")
        time.sleep(1.0)
        with Store(db) as s:
            rows = list(s.iter_events())
        assert all(r.attempts >= 1 for r in rows), "events were not even attempted"
        assert all(r.state == "pending" for r in rows), "marked delivered without a PUBACK"
    finally:
        broker.resume()
    wait_until(lambda: counts(db)["delivered"] == 10, 20, "delivered after the broker resumed")


def _burst(db: Path, n: int, done: threading.Event) -> list[str]:
    ids: list[str] = []

    def run() -> None:
        ids.extend(add_events(db, n, batch=10))
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return ids


def test_broker_restarted_in_the_middle_of_a_burst_loses_nothing(
        tmp_path: Path, subscriber_factory: Callable[..., Subscriber],
        running_pipeline: Callable[[Path], Pipeline]) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        sub = subscriber_factory(broker.port)
        db = tmp_path / "outbox.db"
        pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db))
        assert pipe.uplink is not None
        wait_until(lambda: pipe.uplink.stats.connected, 10, "agent connected")
        done = threading.Event()
        ids = _burst(db, 1000, done)
        wait_until(lambda: counts(db)["delivered"] >= 250, 60, "a quarter delivered")
        broker.stop()  # mid-burst
        time.sleep(1.0)
        assert counts(db)["delivered"] < 1000
        broker.start()
        wait_until(done.is_set, 60, "burst written")
        wait_until(lambda: counts(db) == {"pending": 0, "delivered": 1000}, 120,
                   "all 1000 delivered")
        wait_until(lambda: sub.event_ids() >= set(ids), 30, "subscriber got every id")
        assert pipe.uplink.stats.reconnects >= 2
    finally:
        broker.stop(signal.SIGKILL)


def test_agent_killed_in_the_middle_of_a_burst_loses_nothing(
        tmp_path: Path, broker: Mosquitto, subscriber_factory: Callable[..., Subscriber]) -> None:
    sub = subscriber_factory(broker.port)
    db = tmp_path / "outbox.db"
    cfg = write_config(tmp_path / "agent.toml", broker.port, db)
    with Store(db):
        pass  # created before the agent so that the burst can start at once
    log = tmp_path / "agent.log"
    agent = start_agent(cfg, log)
    try:
        done = threading.Event()
        ids = _burst(db, 1000, done)
        wait_until(lambda: counts(db)["delivered"] >= 250, 60, "a quarter delivered")
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        # the Last Will tells the office the unit is gone
        wait_until(lambda: any(s["state"] == "offline" for s in sub.statuses()), 15,
                   "offline status (Last Will)")
        before = counts(db)
        assert before["delivered"] < 1000
        agent = start_agent(cfg, log)
        wait_until(done.is_set, 60, "burst written")
        wait_until(lambda: counts(db) == {"pending": 0, "delivered": 1000}, 120,
                   "all 1000 delivered after the restart")
        wait_until(lambda: sub.event_ids() >= set(ids), 30, "subscriber got every id")
        assert sub.statuses()[-1]["state"] == "online"
    finally:
        agent.kill()
        agent.wait()
    with Store(db) as s:
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_backlog_does_not_starve_new_events(
        tmp_path: Path, broker: Mosquitto, subscriber_factory: Callable[..., Subscriber],
        running_pipeline: Callable[[Path], Pipeline]) -> None:
    db = tmp_path / "outbox.db"
    backlog = add_events(db, 600, batch=100)  # what piled up in a dead zone
    sub = subscriber_factory(broker.port)
    cfg = write_config(tmp_path / "agent.toml", broker.port, db,
                       mqtt_extra="inflight_window = 4")
    pipe = running_pipeline(cfg)
    wait_until(lambda: len(sub.event_ids()) >= 20, 30, "backlog started draining")
    fresh = make_event(10_000, label="banner")
    pipe.submit(fresh)
    wait_until(lambda: fresh.id in sub.event_ids(), 30, "fresh event delivered")
    order = [m["id"] for m in sub.events()]
    pos = order.index(fresh.id)
    assert pos < 300, f"fresh event waited behind {pos} backlog events"
    wait_until(lambda: sub.event_ids() >= set(backlog), 120, "backlog delivered")
    # and the backlog itself goes oldest first
    first = [i for i in order if i in set(backlog)][:10]
    assert first == sorted(first)


def test_mqtt_3_1_1_delivers_too(tmp_path: Path, broker: Mosquitto,
                                 subscriber_factory: Callable[..., Subscriber],
                                 running_pipeline: Callable[[Path], Pipeline]) -> None:
    sub = subscriber_factory(broker.port)
    db = tmp_path / "outbox.db"
    pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db,
                                         mqtt_extra='protocol = "3.1.1"'))
    evs = [make_event(i) for i in range(5)]
    for ev in evs:
        pipe.submit(ev)
    wait_until(lambda: sub.event_ids() >= {e.id for e in evs}, 20, "3.1.1 delivery")
    wait_until(lambda: counts(db)["delivered"] == 5, 10, "marked delivered")
    online = [s for s in sub.statuses() if s["state"] == "online"]
    assert online and online[-1]["config_version"] == 3


def test_acl_rejection_is_not_delivery(tmp_path: Path,
                                       running_pipeline: Callable[[Path], Pipeline]) -> None:
    """MQTT 5 brokers may refuse a publish in the PUBACK; that event stays pending."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite patrol/unit-1/status\ntopic readwrite patrol/unit-1/images/#\n")
    broker = Mosquitto(tmp_path / "broker", extra_conf=f"acl_file {acl}\n").start()
    try:
        db = tmp_path / "outbox.db"
        pipe = running_pipeline(write_config(tmp_path / "agent.toml", broker.port, db))
        pipe.submit(make_event(1))
        assert pipe.uplink is not None
        wait_until(lambda: pipe.uplink.stats.rejected >= 1, 20, "the broker's refusal")
        time.sleep(1.0)  # mosquitto also drops the connection; the agent reconnects
        assert counts(db) == {"pending": 1, "delivered": 0}
    finally:
        broker.stop(signal.SIGKILL)


def test_retention_prunes_only_delivered(tmp_path: Path, broker: Mosquitto,
                                         running_pipeline: Callable[[Path], Pipeline],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.gps

    synced = tmp_path / "synchronized"  # as systemd-timesyncd marks a clock set by NTP
    synced.touch()
    monkeypatch.setattr(agent.gps, "NTP_SYNCED", synced)
    db = tmp_path / "outbox.db"
    # about a second of retention, checked every 0.3 s
    cfg = write_config(tmp_path / "agent.toml", broker.port, db,
                       store_extra="retention_hours = 0.0003\nprune_interval_s = 0.3")
    pipe = running_pipeline(cfg)
    pipe.submit(make_event(1))
    wait_until(lambda: counts(db)["delivered"] == 1, 20, "delivered")
    wait_until(lambda: counts(db) == {"pending": 0, "delivered": 0}, 20, "pruned after retention")
    with Store(db) as s:
        assert s.db.execute("SELECT count(*) FROM images").fetchone()[0] == 0


def test_with_a_clock_nobody_set_nothing_is_pruned(
        tmp_path: Path, broker: Mosquitto, running_pipeline: Callable[[Path], Pipeline],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No GPS fix and no NTP (a Pi that booted without a clock): retention is counted on a
    clock that may be 1970 or years ahead, so delivered findings are kept until it is set."""
    import logging

    import agent.gps

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(agent.gps, "NTP_SYNCED", tmp_path / "not-synchronized")
    db = tmp_path / "outbox.db"
    cfg = write_config(tmp_path / "agent.toml", broker.port, db,
                       store_extra="retention_hours = 0.0001\nprune_interval_s = 0.2")
    pipe = running_pipeline(cfg)
    pipe.submit(make_event(1))
    wait_until(lambda: counts(db)["delivered"] == 1, 20, "delivered")
    time.sleep(2.0)  # five times the retention, four prune intervals
    assert counts(db) == {"pending": 0, "delivered": 1}
    assert "the system clock is not trusted yet" in caplog.text


def test_username_password_and_refusal_are_clear(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        running_pipeline: Callable[[Path], Pipeline]) -> None:
    import logging
    import shutil
    import subprocess

    pwfile = tmp_path / "passwd"
    subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", "-c",
                    str(pwfile), "van-7", "right-horse-battery"], check=True)
    broker = Mosquitto(tmp_path / "broker",
                       extra_conf=f"password_file {pwfile}\nallow_anonymous false\n").start()
    caplog.set_level(logging.INFO)
    try:
        db = tmp_path / "outbox.db"
        cfg = write_config(tmp_path / "agent.toml", broker.port, db,
                           mqtt_extra='username = "van-7"')
        monkeypatch.setenv("PATROL_MQTT_PASSWORD", "wrong-staple-7731")
        pipe = running_pipeline(cfg)
        pipe.submit(make_event(1))
        assert pipe.uplink is not None
        wait_until(lambda: "refused" in pipe.uplink.stats.last_error, 10, "refusal")
        assert counts(db)["delivered"] == 0
        pipe.stop()
        monkeypatch.setenv("PATROL_MQTT_PASSWORD", "right-horse-battery")
        running_pipeline(cfg)
        wait_until(lambda: counts(db)["delivered"] == 1, 15, "delivered with the right password")
    finally:
        broker.stop(signal.SIGKILL)
    assert "refused the connection" in caplog.text
    assert "wrong-staple-7731" not in caplog.text and "right-horse-battery" not in caplog.text


def test_a_row_damaged_on_the_card_does_not_hold_up_the_rest(
        tmp_path: Path, broker: Mosquitto, subscriber_factory: Callable[..., Subscriber]
        ) -> None:
    """An event whose picture was damaged on the SD card cannot be sent as it was made:
    it is named in the log and kept, and everything around it is delivered."""
    import subprocess

    from tests.conftest import agent_cmd

    db = tmp_path / "outbox.db"
    ids = add_events(db, 5)
    with Store(db) as s:
        s.db.execute("UPDATE images SET jpeg = X'00FF' WHERE event_id = ?", [ids[2]])
    sub = subscriber_factory(broker.port)
    cfg = write_config(tmp_path / "agent.toml", broker.port, db)
    r = subprocess.run(agent_cmd("run", "--config", str(cfg), "--until-drained"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert f"event {ids[2]} in the outbox" in r.stderr and "cannot be read back" in r.stderr
    assert "1 findings are still pending" in r.stderr and "Traceback" not in r.stderr
    wait_until(lambda: sub.event_ids() == set(ids) - {ids[2]}, 10, "the others delivered")
    assert counts(db) == {"pending": 1, "delivered": 4}


def test_a_finding_whose_picture_was_evicted_is_delivered_without_it(
        tmp_path: Path, broker: Mosquitto, subscriber_factory: Callable[..., Subscriber]
        ) -> None:
    """At the outbox's quota with nothing delivered, the oldest findings lose their
    pictures: they still reach the office, with "image": null and no picture message."""
    db = tmp_path / "outbox.db"
    ids = add_events(db, 4)
    with Store(db) as s:
        s.db.execute("UPDATE images SET jpeg = X'', crop = NULL, crop_sha256 = NULL, "
                      "evicted_utc = '2026-11-30T10:00:00.000Z' WHERE event_id IN (?, ?)",
                      ids[:2])
    sub = subscriber_factory(broker.port)
    cfg = write_config(tmp_path / "agent.toml", broker.port, db)
    import subprocess

    from tests.conftest import agent_cmd

    r = subprocess.run(agent_cmd("run", "--config", str(cfg), "--until-drained"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: sub.event_ids() == set(ids), 10, "all four delivered")
    by_id = {e["id"]: e for e in sub.events()}
    assert [by_id[i]["image"] is None for i in ids] == [True, True, False, False]
    assert set(sub.images()) == set(ids[2:])
