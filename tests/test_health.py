"""systemd's notify protocol over real datagram sockets: READY once the stages run, a
watchdog that pings only while every stage makes progress, STATUS lines, STOPPING; and a
unit that starts with no camera, no gpsd and no broker, and picks each up."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.config import parse_config
from agent.health import Notifier
from agent.nmea import read_nmea
from agent.pipeline import Feeds, Pipeline
from agent.sources import FrameSource, OpenCVSource
from tests.conftest import Mosquitto, Unit, free_port, unit_config, wait_until
from tests.world import MjpegCamera, PacedGps, lead_in, video_frames

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
T0 = datetime(2025, 5, 14, 1, 30, tzinfo=UTC)


class NotifySocket:
    """What systemd listens on: a datagram socket, by path or in the abstract namespace."""

    def __init__(self, tmp_path: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"patrol-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.address = str(tmp_path / "notify.sock")
            self.sock.bind(self.address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, key: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in list(self.messages) if m.startswith(key)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(params=["abstract", "path"])
def notify(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path, abstract=request.param == "abstract")
    yield s
    s.close()


def test_the_notifier_speaks_to_a_real_socket(notify: NotifySocket) -> None:
    n = Notifier(notify.address)
    assert n.send("READY=1", "STATUS=hello")
    wait_until(lambda: len(notify.messages) == 2, 5, "the datagram")
    assert [m for _, m in notify.messages] == ["READY=1", "STATUS=hello"]
    assert not Notifier("").send("READY=1")  # not under systemd: nothing sent, no error


def test_the_daemon_under_systemds_notify_protocol(notify: NotifySocket, tmp_path: Path
                                                   ) -> None:
    """READY=1 once the stages run, WATCHDOG=1 every half WatchdogSec, a STATUS line an
    operator can read, and STOPPING=1 on SIGTERM."""
    cfg = unit_config(tmp_path / "a.toml", device="unit", camera=str(SAMPLE / "video.mp4"),
                      db=tmp_path / "outbox.db")
    unit = Unit(cfg, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "2000000"})
    try:
        wait_until(lambda: notify.lines("READY=1"), 60, "READY=1")
        time.sleep(7.0)
        rc, _ = unit.stop()
    finally:
        unit.kill()
    assert rc == 0, unit.log
    ready = notify.lines("READY=1")[0][0]
    pings = [t for t, _ in notify.lines("WATCHDOG=1")]
    assert len(pings) >= 5 and all(t > ready for t in pings), pings
    gaps = np.diff(pings)
    assert gaps.max() < 1.6, gaps  # every second (half of WATCHDOG_USEC), none missed
    status = [m for _, m in notify.lines("STATUS=")]
    assert any(_frames_per_s(m) and 8.0 <= _frames_per_s(m) <= 12.0  # type: ignore[operator]
               for m in status), status  # "STATUS=10.0 frames/s, 0 findings to deliver"
    assert notify.lines("STOPPING=1") and "told systemd the agent is ready" in unit.log


def _frames_per_s(line: str) -> float | None:
    m = re.search(r"([\d.]+) frames/s, \d+ findings to deliver", line)
    return float(m.group(1)) if m else None


class HangingDetector:
    """A real detector whose inference never returns from one frame on, until let go:
    a detector stuck in a driver or a runtime."""

    def __init__(self, real: Any, hang_at: int) -> None:
        self.real, self.hang_at, self.calls = real, hang_at, 0
        self.release = threading.Event()

    def detect(self, image: np.ndarray) -> list:
        self.calls += 1
        if self.calls == self.hang_at:
            self.release.wait()
        return self.real.detect(image)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_a_stuck_detector_stops_the_watchdog_pings(
        notify: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The process lives and its other threads run, but detection hangs on a frame: the
    pings stop once it has made no progress for health.stall_s, the log names it, and the
    status says so; when it goes again, so do the pings."""
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("NOTIFY_SOCKET", notify.address)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, img in enumerate(video_frames(SAMPLE / "video.mp4")[:100]):
        cv2.imwrite(str(frames / f"{k:05d}.png"), img)
    cfg = parse_config({"device": {"id": "unit"}, "store": {"path": str(tmp_path / "o.db")},
                        "health": {"stall_s": 5}})

    def camera(stop: threading.Event) -> FrameSource:  # played like a camera, 10 frames/s
        return OpenCVSource(str(frames), fps=10.0, start_utc=T0, paced=True, stop=stop)

    pipe = Pipeline(cfg, Feeds(camera=camera, fixes=read_nmea(SAMPLE / "track.nmea"),
                               fix_history_s=math.inf))
    assert pipe.perception is not None
    stuck = HangingDetector(pipe.perception.detector, hang_at=20)
    pipe.perception.detector = stuck
    runner = threading.Thread(target=pipe.run)
    runner.start()
    try:
        wait_until(lambda: stuck.calls >= 20, 30, "the hang")
        hung_at = time.monotonic()
        wait_until(lambda: "perception made no progress" in caplog.text, 10, "the stall noticed")
        time.sleep(2.0)
        late = [t for t, _ in notify.lines("WATCHDOG=1") if t > hung_at + 5.5]
        assert late == [], "pinged although detection was stuck"
        wait_until(lambda: any(m.startswith("STATUS=STALLED: perception")
                               for _, m in notify.lines("STATUS=")), 6, "the status saying so")
        stuck.release.set()
        going = time.monotonic()
        wait_until(lambda: any(t > going for t, _ in notify.lines("WATCHDOG=1")), 5,
                   "pings again")
    finally:
        stuck.release.set()
        pipe.stop_requested.set()
        runner.join(30)
    assert "perception made no progress for 5 s" in caplog.text
    assert "perception going again" in caplog.text
    early = [t for t, _ in notify.lines("WATCHDOG=1") if t < hung_at]
    assert early  # it pinged while all was well


@pytest.mark.slow
def test_a_unit_without_camera_gpsd_or_broker_is_ready_and_picks_each_up(
        tmp_path: Path) -> None:
    """Ignition with the camera unplugged, gpsd not up and no network: the agent reaches
    READY and keeps the watchdog fed; as the broker, gpsd and camera appear it takes each
    up, without a restart."""
    notify = NotifySocket(tmp_path, abstract=True)
    broker_port, gps_port, camera_port = free_port(), free_port(), free_port()
    cfg = unit_config(tmp_path / "a.toml", device="unit",
                      camera=f"http://127.0.0.1:{camera_port}/stream.mjpg",
                      db=tmp_path / "outbox.db", gps_port=gps_port, broker_port=broker_port)
    unit = Unit(cfg, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "4000000"})
    broker = gps = camera = None
    try:
        wait_until(lambda: notify.lines("READY=1"), 60, "READY=1 with nothing there")
        ready = time.monotonic()
        time.sleep(5.0)
        assert unit.proc.poll() is None
        assert len([t for t, _ in notify.lines("WATCHDOG=1") if t > ready]) >= 2
        broker = Mosquitto(tmp_path / "broker", port=broker_port).start()
        unit.wait_for("connected to broker", 30)
        fixes = lead_in(read_nmea(SAMPLE / "track.nmea"), 30)
        gps = PacedGps(fixes, tmp_path / "gps", port=gps_port)
        gps.play(origin=time.time(), epoch0=fixes[0].utc)
        unit.wait_for("GPS fix acquired", 40)
        camera = MjpegCamera(video_frames(SAMPLE / "video.mp4"), T0, 10.0, gps,
                             port=camera_port)
        unit.wait_for(f"camera stream:http://127.0.0.1:{camera_port}/stream.mjpg reopened", 45)
        wait_until(lambda: any((_frames_per_s(m) or 0) > 5 and "GPS 3D fix" in m
                               and "broker connected" in m for _, m in notify.lines("STATUS=")),
                   20, "a status line with frames, a fix and the broker")
        rc, _ = unit.stop()
    finally:
        unit.kill()
        for part in (camera, gps):
            if part is not None:
                part.close() if isinstance(part, MjpegCamera) else part.stop()
        if broker is not None:
            broker.stop(signal.SIGKILL)
        notify.close()
    assert rc == 0, unit.log
    assert "made no progress" not in unit.log, unit.log
    assert unit.log.count("starting:") == 1  # one process, never restarted


def test_pings_are_for_this_process_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """WATCHDOG_PID names another process (a wrapper's): the pings are not ours to send."""
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier("@x").watchdog_s is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier("@x").watchdog_s == 1.0
