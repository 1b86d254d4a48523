"""The road, for tests that run the agent as it runs in the vehicle.

A recorded drive (a video and the receiver's NMEA log) is played back as the world a
unit would see, on one clock that the test keeps: the world's GPS time ``epoch0 + (t -
origin)`` at this machine's time ``t``.

* :class:`PacedGps` is the receiver: gpsfake (in its prompt mode, ``-i``) serves the
  log through a real gpsd, one line whenever the test says, and the test says so when
  the world's clock reaches that line's time.
* The camera is either a recording given to the agent (a file or an image folder, which
  the agent plays at its own frame rate from when it says so: the world's clock starts
  then), or :class:`MjpegCamera`, a live MJPEG camera on loopback that shows frame k
  when the world's clock reaches the drive's first frame + k / fps.

Because the test keeps the clock, it knows where the vehicle was when any picture was
shown: the truth a live finding's geotag is checked against.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

from agent.nmea import format_gga, format_rmc, read_nmea
from agent.records import Fix
from tests.conftest import GPSFAKE, free_port

# --- NMEA logs ------------------------------------------------------------------------


def write_log(fixes: list[Fix], path: Path) -> Path:
    """RMC + GGA per fix, as the simulator's receiver logs them (two lines a second)."""
    lines = []
    for f in fixes:
        lines += [format_rmc(f), format_gga(f)]
    path.write_text("\r\n".join(lines) + "\r\n")
    return path


def lead_in(fixes: list[Fix], seconds: int) -> list[Fix]:
    """``seconds`` of the vehicle parked at its first fix, then the drive: time for the
    agent to start and find the world before the drive begins."""
    first = fixes[0]
    parked = [Fix(first.utc - timedelta(seconds=s), first.lat, first.lon, first.mode, 0.0,
                  None, first.eph_m, first.epv_m, first.alt_m)
              for s in range(seconds, 0, -1)]
    return parked + fixes


def shifted(log: Path, out: Path, by: timedelta) -> Path:
    """The same drive ``by`` later (a second lap past the same places)."""
    fixes = [Fix(f.utc + by, f.lat, f.lon, f.mode, f.speed_mps, f.track_deg, f.eph_m,
                 f.epv_m, f.alt_m) for f in read_nmea(log)]
    return write_log(fixes, out)


def cut(log: Path, out: Path, start: datetime, end: datetime) -> Path:
    return write_log([f for f in read_nmea(log) if start <= f.utc <= end], out)


# --- the receiver ------------------------------------------------------------------


class PacedGps:
    """A real gpsd, fed the drive's fixes by gpsfake one NMEA line at a time, each when
    the world's clock reaches its fix's time: the RMC then, the GGA ``GAP_S`` later, as a
    9600-baud receiver's burst of sentences takes a third of a second or so. gpsd sends
    its fix when the burst is in; its TOFF report stamps the RMC. ``port`` is where gpsd
    listens; it serves nothing until :meth:`play`."""

    GAP_S = 0.3

    def __init__(self, fixes: list[Fix], workdir: Path, port: int | None = None) -> None:
        self.fixes = fixes
        workdir.mkdir(parents=True, exist_ok=True)
        log = write_log(fixes, workdir / "receiver.nmea")
        self.port = port or free_port()
        # -c 0: no pacing of its own; -i: each line waits for a line on stdin (the test).
        self.proc = subprocess.Popen([GPSFAKE, "-i", "-q", "-1", "-c", "0", "-P",
                                      str(self.port), str(log)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("gpsfake's gpsd did not start listening")
        self.origin: float | None = None
        self.epoch0: datetime | None = None
        self._thread: threading.Thread | None = None

    def play(self, origin: float, epoch0: datetime) -> None:
        """Start the world's clock: GPS time ``epoch0`` is this machine's ``origin``."""
        self.origin, self.epoch0 = origin, epoch0
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def gps_time(self, t: float) -> datetime:
        """The world's GPS time at this machine's time ``t``."""
        assert self.origin is not None and self.epoch0 is not None
        return self.epoch0 + timedelta(seconds=t - self.origin)

    def at(self, when: datetime) -> float:
        """This machine's time when the world's GPS time is ``when``."""
        assert self.origin is not None and self.epoch0 is not None
        return self.origin + (when - self.epoch0).total_seconds()

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def _feed(self) -> None:
        assert self.proc.stdin is not None
        for fix in self.fixes:
            for gap in (0.0, self.GAP_S):
                wait = self.at(fix.utc) + gap - time.time()
                if wait > 0:
                    time.sleep(wait)
                try:
                    self.proc.stdin.write(b"\n")
                    self.proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    return

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


# --- a live camera ----------------------------------------------------------------------


def video_frames(video: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


class MjpegCamera:
    """The drive's video as a live MJPEG camera on loopback: frame k is sent when the
    world's clock (``gps``'s) reaches ``start_utc + k / fps``; before that it shows the
    first frame (the vehicle parked), after the last it closes. ``shown[k]`` is this
    machine's time frame k was sent."""

    def __init__(self, frames: list[np.ndarray], start_utc: datetime, fps: float,
                 gps: PacedGps, quality: int = 95, port: int = 0) -> None:
        self.jpegs = [cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1]
                      .tobytes() for f in frames]
        self.fps = fps
        self.start_utc = start_utc
        self.gps = gps
        self.shown: dict[int, float] = {}
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    cam._stream(self.wfile)  # until the drive ends or the agent hangs up

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def due(self, k: int) -> float:
        """This machine's time at which frame k is shown."""
        return self.gps.at(self.start_utc + timedelta(seconds=k / self.fps))

    @property
    def done(self) -> bool:
        return time.time() > self.due(len(self.jpegs)) + 1.0

    def _send(self, out: object, jpeg: bytes) -> float:
        out.write(b"--frame\r\nContent-Type: image/jpeg\r\n"  # type: ignore[attr-defined]
                  b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg + b"\r\n")
        out.flush()  # type: ignore[attr-defined]
        return time.time()

    def _stream(self, out: object) -> None:
        period = 1.0 / self.fps
        k = -1  # parked until the drive starts
        while k < len(self.jpegs):
            now = time.time()
            k = max(k, math.floor((now - self.due(0)) * self.fps))
            if k < 0:  # before the drive: parked, showing its first frame at the camera's rate
                self._send(out, self.jpegs[0])
                time.sleep(max(0.0, min(period, self.due(0) - now)))
                continue
            if k >= len(self.jpegs):
                break
            wait = self.due(k) - time.time()
            if wait > 0:
                time.sleep(wait)
            sent = self._send(out, self.jpegs[k])
            self.shown.setdefault(k, sent)
            k += 1

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def which_frame(jpeg: bytes, thumbs: np.ndarray) -> int:
    """The video frame a finding's picture was taken from (its nearest thumbnail)."""
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    t = cv2.resize(img, (thumbs.shape[2], thumbs.shape[1]), interpolation=cv2.INTER_AREA)
    d = ((thumbs.astype(np.float32) - t.astype(np.float32)) ** 2).mean(axis=(1, 2))
    return int(np.argmin(d))


def thumbnails(frames: list[np.ndarray], size: tuple[int, int] = (96, 54)) -> np.ndarray:
    return np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), size,
                                interpolation=cv2.INTER_AREA) for f in frames])


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
