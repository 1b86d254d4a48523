"""Camera: frame sources behind one interface.

``OpenCVSource`` reads a device index (``"0"``), an RTSP/HTTP URL, a video file
or a folder of images; ``Picamera2Source`` reads the Pi camera module through
picamera2, imported only when chosen. Every frame carries its capture time.

Live sources (a device index or ``/dev/...`` path, a URL, the Pi camera) never
end: a camera that disappears or returns broken frames is closed and reopened
with backoff, counted, and reported in ``stats``; ``read()`` keeps trying until
it gets a frame or ``stop`` is set. Recorded sources (a file, a folder) end
cleanly when they end: ``read()`` returns None.

Two ways to time a recording:

* as a live camera (``paced``, no ``start_utc``; what ``run`` does with a file):
  it plays at its own frame rate from the first ``read()``, frames it falls
  behind on are skipped as a camera's would be, and each frame is stamped with
  this machine's clocks at the moment it is due (``timebase`` 'system'), so the
  GPS clock check places it exactly as it would a camera's frame;
* as the drive it recorded (``start_utc`` given; what ``replay`` does): frames
  are stamped with the drive's own time (``timebase`` 'recording'), played at
  recorded speed if ``paced`` or as fast as they are read if not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from agent.backoff import Backoff
from agent.records import Frame
from agent.stages import Heartbeat

log = logging.getLogger("camera")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# A stream that stops sending is given up (and reopened) after this long, so that a
# stalled IP camera neither hangs the camera thread nor an orderly stop.
STREAM_TIMEOUT_MS = 5000

Timebase = Literal["system", "recording"]


class SourceError(Exception):
    """The camera cannot be used at all (as opposed to a passing failure)."""


@dataclass
class SourceStats:
    frames: int = 0
    broken: int = 0
    """Frames that came back empty or malformed (skipped)."""
    skipped: int = 0
    """Frames of a recording played as a live camera that were due before the last
    one was taken (the reader fell behind): dropped as a camera would drop them."""
    reopens: int = 0
    last_error: str = ""


class FrameSource(Protocol):
    """What the pipeline needs from a camera."""

    name: str
    live: bool
    """Never ends (a camera); a recording ends."""
    timebase: Timebase
    """'system': frames carry this machine's clocks at capture (the GPS clock check maps
    them); 'recording': frames carry the recorded drive's own time."""
    stats: SourceStats
    drops_unread: bool
    """Frames not read are dropped by the source itself (a device's one-frame buffer, a
    recording played at its pace), so reading slowly loses only frames, never time. A
    stream buffers them instead: read slowly, it falls behind the world."""
    heartbeat: Heartbeat
    """Beaten for every frame and every second spent waiting to reopen the camera: a
    camera that is absent is retried, not stuck."""

    def read(self) -> Frame | None:
        """The next frame; None when a recorded source has ended (or stop was set)."""
        ...

    def close(self) -> None: ...


def _wait(stop: threading.Event, seconds: float, heartbeat: Heartbeat) -> bool:
    """Sleep ``seconds`` unless stopped (True), beating the heartbeat each second."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        heartbeat.beat()
        if stop.wait(min(1.0, left)):
            return True
    heartbeat.beat()
    return stop.is_set()


def _valid(img: Any) -> bool:
    return (isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3
            and img.shape[0] >= 8 and img.shape[1] >= 8 and img.dtype == np.uint8)


class OpenCVSource:
    """A device, a stream URL, a video file or a folder of images, through OpenCV."""

    def __init__(self, spec: str, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, start_utc: datetime | None = None,
                 paced: bool = False, stop: threading.Event | None = None,
                 reopen_min_s: float = 0.5, reopen_max_s: float = 30.0) -> None:
        self.spec = spec
        self.stats = SourceStats()
        self.heartbeat = Heartbeat()
        self._stop = stop or threading.Event()
        self._size = (width, height)
        self._backoff = Backoff(reopen_min_s, reopen_max_s)
        self._index = 0
        self._cap: cv2.VideoCapture | None = None
        self._images: list[Path] = []
        path = Path(spec)
        if spec.isdigit() or spec.startswith("/dev/"):
            # A /dev path may be a USB camera not plugged in yet: live, so retried.
            self.kind, self.live = "device", True
        elif "://" in spec:
            self.kind, self.live = "stream", True
        elif path.is_dir():
            self.kind, self.live = "folder", False
            self._images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._images:
                raise SourceError(f"camera.source {spec}: folder has no images")
        elif path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind, self.live = "folder", False  # one picture: a folder of one
            self._images = [path]
        elif path.is_file():
            self.kind, self.live = "file", False
        else:
            raise SourceError(f"camera.source {spec!r}: no such file, folder or device")
        self.name = f"{self.kind}:{spec}"
        self.paced = paced and not self.live
        self.drops_unread = self.kind == "device" or self.paced
        self.timebase: Timebase = "recording" if start_utc is not None and not self.live \
            else "system"
        # A recording's clock starts at its first read (a paced one plays from then);
        # with start_utc its frames carry the drive's time instead of ours.
        self._start_utc = start_utc
        self._start_mono: float | None = None
        self.fps = fps
        if self.kind == "file":
            self._open()
            file_fps = self._cap.get(cv2.CAP_PROP_FPS) if self._cap else 0
            # The file's own rate times its frames; the config's is only a fallback.
            self.fps = file_fps if file_fps and file_fps > 0 else (fps or 10.0)
        elif self.kind == "folder":
            self.fps = fps or 10.0
        elif self._open():
            log.info("camera %s is open", self.name)
        else:
            log.warning("camera %s did not open; will keep trying", self.name)

    # --- opening ----------------------------------------------------------

    def _open(self) -> bool:
        if self.kind == "folder":
            return True
        if self.kind == "stream":
            cap = cv2.VideoCapture(self.spec, cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
        else:
            cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
        if not cap.isOpened():
            cap.release()
            self.stats.last_error = f"cannot open {self.name}"
            if self.kind == "file":
                raise SourceError(f"camera.source {self.spec}: not a readable video file")
            return False
        w, h = self._size
        if self.live and w and h:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        if self.live:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the freshest frame, not a stale queue
        self._cap = cap
        return True

    def _reopen(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        delay = self._backoff.next_delay()
        log.warning("camera %s failed (%s); reopening in %.1f s", self.name,
                    self.stats.last_error, delay)
        if _wait(self._stop, delay, self.heartbeat):
            return
        if self._open():
            self.stats.reopens += 1
            log.info("camera %s reopened", self.name)

    # --- reading ----------------------------------------------------------

    def read(self) -> Frame | None:
        self.heartbeat.beat()
        if self.kind == "folder":
            return self._read_folder()
        if self.kind == "file":
            return self._read_file()
        while not self._stop.is_set():
            self.heartbeat.beat()
            if self._cap is None:
                self._reopen()
                continue
            ok, img = self._cap.read()
            if not ok or not _valid(img):
                self.stats.broken += 1
                self.stats.last_error = "no frame" if not ok else "broken frame"
                self._reopen()
                continue
            self._backoff.reset()
            return self._frame(img, datetime.now(UTC), time.monotonic())
        return None

    def _read_file(self) -> Frame | None:
        assert self._cap is not None
        while True:
            if self.paced and not self._wait_turn():
                return None
            ok, img = self._cap.read()
            if not ok:
                return None  # the recording ended
            if _valid(img):
                return self._recorded_frame(img)
            self.stats.broken += 1
            self._index += 1

    def image_path(self, index: int) -> Path | None:
        """The picture a folder source's frame ``index`` came from."""
        return self._images[index] if 0 <= index < len(self._images) else None

    def _read_folder(self) -> Frame | None:
        while self._index < len(self._images):
            if self.paced and not self._wait_turn():
                return None
            if self._index >= len(self._images):
                break
            path = self._images[self._index]
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if _valid(img):
                return self._recorded_frame(img)
            self.stats.broken += 1
            self.stats.last_error = f"unreadable image {path.name}"
            log.warning("camera %s: skipping unreadable image %s", self.name, path.name)
            self._index += 1
        return None

    def _period(self) -> float:
        return 1.0 / (self.fps or 10.0)

    def _clock_start(self) -> float:
        if self._start_mono is None:
            self._start_mono = time.monotonic()
            if self._start_utc is None:
                self._start_utc = datetime.now(UTC)
            if self.paced:
                log.info("camera %s: playing as a live camera at %.1f frames/s", self.name,
                         self.fps or 10.0)
        return self._start_mono

    def _wait_turn(self) -> bool:
        """Paced: wait until the next frame is due. Frames more than one period overdue
        are skipped unread, as a camera drops what nobody took. False if stopped."""
        start = self._clock_start()
        period = self._period()
        while time.monotonic() - (start + self._index * period) > period:
            if self.kind == "file":
                assert self._cap is not None
                if not self._cap.grab():
                    return True  # the end: the read that follows finds it
            elif self._index >= len(self._images) - 1:
                return True
            self._index += 1
            self.stats.skipped += 1
        wait = start + self._index * period - time.monotonic()
        return not (wait > 0 and _wait(self._stop, wait, self.heartbeat))

    def _recorded_frame(self, img: np.ndarray) -> Frame:
        """A recording's frame, stamped at the instant it is due on the recording's timeline:
        the drive's time (timebase 'recording') or this machine's (timebase 'system')."""
        start = self._clock_start()
        assert self._start_utc is not None
        offset = self._index * self._period()
        return self._frame(img, self._start_utc + timedelta(seconds=offset), start + offset)

    def _frame(self, img: np.ndarray, utc: datetime, mono: float) -> Frame:
        f = Frame(image=img, captured_utc=utc, captured_mono=mono, index=self._index,
                  source=self.name)
        self._index += 1
        self.stats.frames += 1
        return f

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _boottime_to_monotonic_offset() -> float:
    """picamera2 stamps frames with CLOCK_BOOTTIME; the rest of the agent uses monotonic."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - time.monotonic()


class Picamera2Source:
    """The Pi camera module through picamera2 (only on a Raspberry Pi)."""

    live = True
    timebase: Timebase = "system"
    drops_unread = False  # its request queue holds frames: never read slowly

    def __init__(self, *, width: int, height: int, fps: float,
                 stop: threading.Event | None = None,
                 factory: Callable[[], Any] | None = None, reopen_min_s: float = 0.5,
                 reopen_max_s: float = 30.0) -> None:
        if factory is None:
            try:
                from picamera2 import Picamera2  # type: ignore[import-not-found]
            except ImportError:
                raise SourceError(
                    "camera.kind = 'picamera2' needs the picamera2 package, which exists only "
                    "on a Raspberry Pi (apt install python3-picamera2); elsewhere use "
                    "camera.kind = 'opencv'") from None
            factory = Picamera2
        self._factory = factory
        self._size = (width, height)
        self._fps = fps
        self._stop = stop or threading.Event()
        self._backoff = Backoff(reopen_min_s, reopen_max_s)
        self._cam: Any = None
        self._index = 0
        self.stats = SourceStats()
        self.heartbeat = Heartbeat()
        self.name = "picamera2"
        if not self._open():
            log.warning("camera %s did not open; will keep trying", self.name)

    def _open(self) -> bool:
        try:
            cam = self._factory()
            # RGB888 in picamera2 is laid out B, G, R in memory: OpenCV's order.
            cfg = cam.create_video_configuration(
                main={"size": self._size, "format": "RGB888"},
                controls={"FrameRate": self._fps}, buffer_count=2)
            cam.configure(cfg)
            cam.start()
        except Exception as e:  # noqa: BLE001 - libcamera raises many kinds; all mean "not now"
            self.stats.last_error = f"cannot start: {e}"
            return False
        self._cam = cam
        return True

    def _close_cam(self) -> None:
        if self._cam is None:
            return
        for op in ("stop", "close"):
            try:
                getattr(self._cam, op)()
            except Exception as e:  # noqa: BLE001 - closing a failed camera may fail too
                log.debug("camera %s %s failed: %s", self.name, op, e)
        self._cam = None

    def read(self) -> Frame | None:
        while not self._stop.is_set():
            self.heartbeat.beat()
            if self._cam is None:
                delay = self._backoff.next_delay()
                log.warning("camera %s failed (%s); reopening in %.1f s", self.name,
                            self.stats.last_error, delay)
                if _wait(self._stop, delay, self.heartbeat):
                    return None
                if self._open():
                    self.stats.reopens += 1
                    log.info("camera %s reopened", self.name)
                continue
            try:
                req = self._cam.capture_request()
                try:
                    img = req.make_array("main")
                    meta = req.get_metadata() or {}
                finally:
                    req.release()
            except Exception as e:  # noqa: BLE001 - a dead camera surfaces as anything
                self.stats.last_error = f"capture failed: {e}"
                self._close_cam()
                continue
            if not _valid(img):
                self.stats.broken += 1
                self.stats.last_error = "broken frame"
                if self.stats.broken % 10 == 0:  # a run of bad frames: restart the camera
                    self._close_cam()
                continue
            self._backoff.reset()
            now_mono = time.monotonic()
            mono = now_mono
            if "SensorTimestamp" in meta:
                mono = meta["SensorTimestamp"] / 1e9 - _boottime_to_monotonic_offset()
                if not (now_mono - 5.0 <= mono <= now_mono):
                    mono = now_mono  # a clock we do not understand: trust our own
            utc = datetime.now(UTC) - timedelta(seconds=now_mono - mono)
            f = Frame(image=img, captured_utc=utc, captured_mono=mono, index=self._index,
                      source=self.name)
            self._index += 1
            self.stats.frames += 1
            return f
        return None

    def close(self) -> None:
        self._close_cam()


def open_source(kind: str, source: str, *, width: int, height: int, fps: float,
                paced: bool = True, stop: threading.Event | None = None) -> FrameSource:
    """The camera the config asks for, as a live camera: a recording given as
    ``camera.source`` is played at its own frame rate unless ``paced`` is False."""
    if kind == "picamera2":
        return Picamera2Source(width=width, height=height, fps=fps, stop=stop)
    return OpenCVSource(source, width=width, height=height, fps=fps, paced=paced, stop=stop)
