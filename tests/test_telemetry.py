"""Telemetry from ``patrol-agent run`` as a process: real figures on the telemetry topic
of a real Mosquitto, and ``patrol-agent status`` saying the same at the unit."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from agent.store import Store
from tests.conftest import (
    NMEA_DIR,
    Gpsfake,
    Mosquitto,
    Subscriber,
    Unit,
    agent_cmd,
    make_event,
    unit_config,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"


def test_telemetry_carries_real_figures_and_status_shows_them(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    fake = Gpsfake(NMEA_DIR / "neo-m8n.log", cycle_s=0.1, loop=True).start()  # says satellites
    sub = Subscriber(broker.port, topic="patrol/unit-t/telemetry")
    db = tmp_path / "outbox.db"
    with Store(db) as s:
        s.add_many([make_event(i) for i in range(2)])
    cfg = unit_config(tmp_path / "a.toml", device="unit-t", camera=str(SAMPLE / "video.mp4"),
                      db=db, gps_port=fake.port, broker_port=broker.port,
                      extra="[health]\ntelemetry_interval_s = 1\n")
    unit = Unit(cfg)
    try:
        def reports() -> list[dict]:
            with sub.lock:
                return [json.loads(p) for _, p, _ in sub.messages]

        def judged(r: dict) -> bool:
            # with satellites, and the outbox drained: the unit finds objects of its own as
            # it plays the drive, and each waits a moment for its picture; the report to
            # judge is one between those
            return ("satellites_used" in r.get("gps", {}) and r["outbox"]["pending"] == 0
                    and r["outbox"]["delivered"] >= 2)

        wait_until(lambda: len(reports()) >= 5 and judged(reports()[-1]), 60,
                   "five reports, with satellites, the outbox delivered")
        # the newest such report (later ones may come with a finding of the drive pending)
        r = next(x for x in reversed(reports()) if judged(x))
        status = subprocess.run(agent_cmd("status", "--config", str(cfg)), capture_output=True,
                                text=True, timeout=30)
    finally:
        unit.kill()
        sub.close()
        fake.stop()
        broker.stop(signal.SIGKILL)
    assert r["schema"] == 1 and r["device"] == "unit-t" and r["config_version"] == 1
    assert r["uptime_s"] > 3 and 0.5 < r["interval_s"] < 2
    cam, det = r["camera"], r["detector"]
    assert cam["frames_captured"] >= 30 and cam["frames_analysed"] >= 30
    assert cam["frames_dropped"] >= 0 and cam["running"] is True
    assert 7.0 < det["frames_per_s"] < 13.0, det  # the file plays at 10 frames/s
    assert 0 < det["invoke_ms_p50"] <= det["invoke_ms_p95"]
    assert r["outbox"]["pending"] == 0 and r["outbox"]["delivered"] >= 2
    assert r["broker"]["connected"] is True and r["broker"]["puback_ms"] > 0
    g = r["gps"]
    assert g["connected"] and g["fix"] and g["mode"] >= 2
    assert 0 < g["satellites_used"] <= g["satellites_seen"]
    assert abs(g["clock_offset_s"]) > 1e6 and g["time_source"] == "gps"  # a log from 2018
    pos = g["position"]  # the office's fleet panel places the unit from it
    assert -90 <= pos["lat"] <= 90 and -180 <= pos["lon"] <= 180 and pos["at"].endswith("Z")
    m = r["machine"]
    assert m["disk_free_mb"] > 0 and 30 < m["rss_mb"] < 2000 and m["load_1m"] >= 0
    if not Path("/sys/class/thermal/thermal_zone0/temp").exists():
        assert "cpu_temperature_c" not in m  # absent here, not 0
    assert "throttling" not in m  # no Raspberry Pi firmware here

    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "unit unit-t" in out and "frames/s analysed" in out and "invoke" in out
    assert "satellites" in out and "broker    connected, PUBACK in" in out
    assert "RSS" in out and "disk" in out
