"""Benchmark: the outbox's commit rate and the uplink's delivery rate.

Prints figures, asserts nothing. Each rate is also given as a ratio to a
baseline measured in the same run against the same private Mosquitto: a plain
paho QoS 1 publish loop (image, crop and event JSON per event, no store), so
the numbers mean something on any machine, a Pi included. Events carry a crop,
as the agent's do.

    python benchmarks/bench_outbox.py [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import parse_config
from agent.records import Event
from agent.store import Store
from agent.uplink import Uplink
from tests.conftest import Mosquitto, make_event, make_jpeg


def event(i: int) -> Event:
    """A test event with its crop, like every event the agent makes."""
    return replace(make_event(i), crop_jpeg=make_jpeg((i + 3) % 8))


def plain_paho(port: int, n: int, window: int) -> float:
    """Events/s for a bare paho loop: publish image, crop and JSON at QoS 1, wait for all
    PUBACKs."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-plain", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(3 * window + 3)
    done = threading.Semaphore(0)
    c.on_publish = lambda *a: done.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    evs = [event(i) for i in range(n)]
    t0 = time.perf_counter()
    for ev in evs:
        c.publish(f"bench/images/{ev.id}", ev.image_jpeg, qos=1)
        c.publish(f"bench/images/{ev.id}/crop", ev.crop_jpeg, qos=1)
        c.publish("bench/events", json.dumps({"id": ev.id, "label": ev.label}), qos=1)
    for _ in range(3 * n):
        done.acquire()
    dt = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    return n / dt


def commits(path: Path, n: int, synchronous: str, batch: int) -> float:
    evs = [event(i) for i in range(n)]
    with Store(path, synchronous=synchronous) as s:  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for k in range(0, n, batch):
            s.add_many(evs[k:k + batch])
        return n / (time.perf_counter() - t0)


def delivery(path: Path, port: int, n: int, window: int) -> float:
    with Store(path) as s:
        s.add_many([event(i) for i in range(n)])
    cfg = parse_config({"device": {"id": "bench"}, "store": {"path": str(path)},
                        "mqtt": {"host": "127.0.0.1", "port": port,
                                 "inflight_window": window}})
    up = Uplink(cfg)
    t0 = time.perf_counter()
    up.run(until_drained=True)
    dt = time.perf_counter() - t0
    assert up.stats.delivered == n
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--window", type=int, default=20)
    args = ap.parse_args()
    n, w = args.events, args.window
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        broker = Mosquitto(tmp / "broker").start()
        try:
            base = plain_paho(broker.port, n, w)
            print(f"baseline: plain paho QoS 1 publish loop, no store: {base:8.0f} events/s "
                  f"(3 messages each, window {w})")
            rows = [
                ("commit, synchronous=FULL, 1 event/txn (chosen)",
                 commits(tmp / "full.db", n, "FULL", 1)),
                ("commit, synchronous=NORMAL, 1 event/txn", commits(tmp / "normal.db", n,
                                                                      "NORMAL", 1)),
                ("commit, synchronous=FULL, 10 events/txn", commits(tmp / "batch.db", n,
                                                                      "FULL", 10)),
                ("delivery outbox -> broker, QoS 1, acked + marked",
                 delivery(tmp / "deliver.db", broker.port, n, w)),
            ]
            for name, rate in rows:
                print(f"{name:<50} {rate:8.0f} events/s  = {rate / base:5.2f} x baseline")
        finally:
            broker.stop(signal.SIGKILL)


if __name__ == "__main__":
    main()
