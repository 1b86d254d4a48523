"""Wires the stages, their threads and queues: the only module that knows them all.

```
camera ─frames─▶ detector ─detections─▶ tracker ─tracks─▶ events ─▶ store ─▶ uplink ─▶ broker
                                                              ▲
                                       gps (fixes, interpolated to the frame's time)
```

Live (``run``): the camera thread puts each frame into a one-frame slot and
the perception thread always takes the freshest one, so capture never waits
for detection; frames overwritten in the slot are dropped and counted. After
detection nothing is dropped: findings are committed to the store, and the
uplink thread delivers them.

Replay (``replay``): a recorded drive, every frame processed in order, with the
NMEA log either served by a real gpsd through gpsfake at recorded speed
(``speed=1``) or read directly (``speed="max"``), through the same fix history
and interpolation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType

from agent import __version__
from agent.config import Config
from agent.detector import Detector
from agent.events import EventBuilder
from agent.gps import ClockCheck, FixHistory, GpsdReader
from agent.privacy import Redactor
from agent.records import Event, Frame
from agent.sources import FrameSource, OpenCVSource, open_source
from agent.store import Store
from agent.tracker import Tracker
from agent.uplink import Uplink

log = logging.getLogger("pipeline")


def build_detector(cfg: Config) -> Detector:
    d = cfg.detector
    return Detector(d.model_path(), d.labels, threads=d.threads, layout=d.layout,
                    score_threshold=d.score_threshold, class_thresholds=d.class_thresholds,
                    allow=d.allow, iou_threshold=d.iou_threshold,
                    max_detections=d.max_detections)


@dataclass
class PerceptionStats:
    frames: int = 0
    broken_frames: int = 0
    detections: int = 0
    frames_without_fix: int = 0
    events: int = 0
    inference_ms: float = 0.0


class Perception:
    """Frame → detections → tracks → events, one frame at a time, on one thread."""

    def __init__(self, cfg: Config, detector: Detector, history: FixHistory,
                 submit: Callable[[Event], None],
                 trusted_utc: Callable[[datetime], datetime] | None = None) -> None:
        self.detector = detector
        self.history = history
        self.submit = submit
        self.trusted_utc = trusted_utc or (lambda t: t)
        self.tracker = Tracker(max_missed_s=1.0)
        self.builder = EventBuilder(cfg.events, cfg.camera, history.position_at,
                                    Redactor() if cfg.events.redact else None,
                                    model=detector.model_path.stem, config_version=cfg.version,
                                    trusted_utc=self.trusted_utc,
                                    second_look=detector.second_look)
        self.stats = PerceptionStats()

    def process(self, frame: Frame) -> None:
        try:
            dets = self.detector.detect(frame.image)
        except ValueError as e:  # a broken frame: counted, skipped, never fatal
            self.stats.broken_frames += 1
            log.warning("skipping frame %d: %s", frame.index, e)
            return
        self.stats.frames += 1
        self.stats.detections += len(dets)
        self.stats.inference_ms = self.detector.timings.invoke_ms
        if self.history.position_at(self.trusted_utc(frame.captured_utc)) is None:
            self.stats.frames_without_fix += 1
        updated, ended = self.tracker.update(frame, dets)
        self.builder.observe(frame, updated)
        self._emit(ended)

    def flush(self) -> None:
        self._emit(self.tracker.flush())

    def _emit(self, tracks: list) -> None:
        for ev in self.builder.finish(tracks):
            self.submit(ev)
            self.stats.events += 1
            pos = (f"{ev.position.lat:.6f},{ev.position.lon:.6f} ±{ev.position.accuracy_m:.0f} m "
                   f"({ev.position.source})" if ev.position else "no GPS fix")
            log.info("finding: %s %.2f at %s, %d frames", ev.label, ev.score, pos,
                     ev.attributes.get("frames", 0))


class LatestFrame:
    """A one-frame slot: the camera overwrites, the detector takes the freshest."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify()

    def take(self, timeout: float = 1.0) -> Frame | None:
        with self._cond:
            if self._frame is None and not self.closed:
                self._cond.wait(timeout)
            f, self._frame = self._frame, None
            return f

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Pipeline:
    """The daemon: every configured stage on its own thread."""

    def __init__(self, cfg: Config, store_path: Path | None = None) -> None:
        self.cfg = cfg
        self.store_path = Path(store_path or cfg.store.path)
        self.stop_event = threading.Event()
        # Open (and migrate) the store before anything else: a unit with an
        # unusable store must say so at start, not at its first finding.
        self._store = Store(self.store_path, synchronous="FULL")
        self._store_lock = threading.Lock()
        self.history = FixHistory()
        self.clock = ClockCheck()
        self.gps: GpsdReader | None = None
        if cfg.gps.enabled:
            self.gps = GpsdReader(cfg.gps.host, cfg.gps.port, self.history, self.clock,
                                  stop=self.stop_event)
        self.detector: Detector | None = None
        self.source: FrameSource | None = None
        self.perception: Perception | None = None
        self.slot = LatestFrame()
        if cfg.camera.enabled:
            self.detector = build_detector(cfg)
            self.perception = Perception(cfg, self.detector, self.history, self.submit,
                                         self.clock.trusted_utc)
        self.uplink: Uplink | None = None
        if cfg.mqtt is not None:
            self.uplink = Uplink(cfg, self.store_path,
                                 status={"model": cfg.detector.model.stem})
        self._threads: list[threading.Thread] = []

    def submit(self, event: Event) -> None:
        """Commit a finding durably, then wake the uplink (called by the event stage)."""
        with self._store_lock:
            self._store.add(event)
        if self.uplink is not None:
            self.uplink.notify()

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("%s stopped by an unexpected error", name)
        return run

    def start(self, until_drained: bool = False) -> None:
        counts = self._store.counts()
        log.info("patrol-agent %s starting: device %s, config version %d (%s), store %s "
                 "(%d pending, %d delivered)", __version__, self.cfg.device.id,
                 self.cfg.version, self.cfg.content_hash()[:12], self.store_path,
                 counts["pending"], counts["delivered"])
        if self.uplink is None:
            log.warning("no [mqtt] section: findings are kept in the store, not sent")
        else:
            uplink = self.uplink

            def deliver() -> None:
                try:
                    uplink.run(self.stop_event, until_drained=until_drained)
                finally:
                    if until_drained:
                        self.stop_event.set()

            self._thread("uplink", deliver)
        if self.gps is not None:
            self._thread("gps", self.gps.run)
        if self.perception is not None:
            cam = self.cfg.camera
            self.source = open_source(cam.kind, cam.source, width=cam.width, height=cam.height,
                                      fps=cam.fps, stop=self.stop_event)
            self._thread("camera", self._capture)
            self._thread("perception", self._perceive)

    def _capture(self) -> None:
        assert self.source is not None
        while not self.stop_event.is_set():
            frame = self.source.read()
            if frame is None:
                log.info("camera %s ended", self.source.name)
                break
            self.slot.put(frame)
        self.slot.close()

    def _perceive(self) -> None:
        assert self.perception is not None
        while not (self.stop_event.is_set() or (self.slot.closed and self.slot._frame is None)):
            frame = self.slot.take()
            if frame is not None:
                self.perception.process(frame)
        self.perception.flush()

    def wait(self) -> bool:
        """Block until a stop is requested (signal, or the uplink drained).
        False if a stage thread died on its own: the caller exits non-zero so
        that systemd restarts the agent."""
        while not self.stop_event.wait(1.0):
            if self._threads and not all(t.is_alive() for t in self._threads):
                dead = [t.name for t in self._threads if not t.is_alive()]
                if dead == ["camera"] and self.source is not None and not self.source.live:
                    continue  # a recording ended; the rest finishes its work
                log.error("stage thread(s) %s stopped; exiting so the service restarts",
                          ", ".join(dead))
                return False
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self.slot.close()
        for t in self._threads:
            t.join(timeout=10)
        if self.source is not None:
            self.source.close()
        with self._store_lock:
            self._store.close()
        log.info("stopped")

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


# --- replay of a recorded drive ----------------------------------------------------

@dataclass
class ReplaySummary:
    frames: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    detections: int = 0
    frames_without_fix: int = 0
    broken_frames: int = 0
    events: int = 0
    suppressed: int = 0
    dropped_tracks: int = 0
    fixes: int = 0
    gps_fix_losses: int = 0
    gpsd_reconnects: int = 0
    delivered: int | None = None
    gps_mode: str = "direct"
    notes: list[str] = field(default_factory=list)


class _Gpsfake:
    """gpsfake serving an NMEA log through a real gpsd on a free loopback port."""

    def __init__(self, log_path: Path, cycle_s: float) -> None:
        import socket

        exe = shutil.which("gpsfake")
        if exe is None:
            raise RuntimeError("--speed 1 needs gpsfake (Debian package gpsd-clients); "
                               "use --speed max to read the NMEA log directly")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([exe, "-q", "-1", "-P", str(self.port), "-c", f"{cycle_s:.4f}",
                                      str(log_path)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        import os

        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # gpsfake sometimes sits in its own shutdown (waiting on its gpsd) well past a
            # SIGTERM; the replay is over and its results stored, so end the group outright.
            log.warning("gpsfake did not stop on SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def replay(cfg: Config, video: Path, nmea: Path, speed: str = "max",
           start_utc: datetime | None = None, store_path: Path | None = None,
           gpsd: tuple[str, int] | None = None) -> ReplaySummary:
    """Run camera → detector → tracker → events → store (→ uplink) on a recorded drive.

    ``gpsd``: read fixes from this gpsd (already serving the drive's log, e.g. a
    technician's own gpsfake) instead of starting gpsfake; implies real-time speed.
    The NMEA file is still read for the video's start time and the fix count.
    """
    from agent.nmea import read_nmea_stats

    t_wall = time.monotonic()
    summary = ReplaySummary()
    fixes, nstats = read_nmea_stats(nmea)
    summary.fixes = sum(f.usable for f in fixes)
    if nstats.bad:
        summary.notes.append(f"{nstats.bad} unreadable NMEA lines skipped")
    if start_utc is None:
        if not fixes:
            raise ValueError(f"{nmea}: no timed NMEA sentences; give the video's start time")
        start_utc = fixes[0].utc  # the recorder starts the video and the log together
    history = FixHistory(max_age_s=math.inf)
    pipe_store = Store(store_path or cfg.store.path, synchronous="FULL")
    uplink: Uplink | None = None
    stop = threading.Event()
    up_thread: threading.Thread | None = None
    if cfg.mqtt is not None:
        uplink = Uplink(cfg, store_path or cfg.store.path,
                        status={"model": cfg.detector.model.stem})
        up_thread = threading.Thread(target=uplink.run, args=(stop,), name="uplink", daemon=True)
        up_thread.start()

    def submit(ev: Event) -> None:
        pipe_store.add(ev)
        if uplink is not None:
            uplink.notify()

    detector = build_detector(cfg)
    perception = Perception(cfg, detector, history, submit)
    src = OpenCVSource(str(video), start_utc=start_utc, fps=cfg.camera.fps)
    gpsfake: _Gpsfake | None = None
    reader: GpsdReader | None = None
    try:
        if gpsd is not None:
            speed = "1"
            summary.gps_mode = f"gpsd at {gpsd[0]}:{gpsd[1]}"
        elif speed != "max":
            summary.gps_mode = "gpsd (gpsfake)"
            span = (fixes[-1].utc - fixes[0].utc).total_seconds() if len(fixes) > 1 else 1.0
            lines = max(1, nstats.sentences)
            gpsfake = _Gpsfake(nmea, cycle_s=max(0.01, span / lines))
            gpsd = ("127.0.0.1", gpsfake.port)
        if gpsd is None:
            history.extend(fixes)
        else:
            reader = GpsdReader(*gpsd, history, reconnect_min_s=0.2, reconnect_max_s=1.0)
            reader.start()
        t0 = time.monotonic()
        first_mono: float | None = None
        while (frame := src.read()) is not None:
            if speed != "max":
                if first_mono is None:
                    first_mono = frame.captured_mono
                wait = (frame.captured_mono - first_mono) - (time.monotonic() - t0)
                if wait > 0:
                    time.sleep(wait)
            perception.process(frame)
        if reader is not None:
            time.sleep(1.5)  # let the fixes after the last frame arrive
        perception.flush()
        summary.frames = perception.stats.frames
        summary.seconds = summary.frames / (src.fps or cfg.camera.fps)
        summary.detections = perception.stats.detections
        summary.frames_without_fix = perception.stats.frames_without_fix
        summary.broken_frames = perception.stats.broken_frames + src.stats.broken
        summary.events = perception.stats.events
        summary.suppressed = perception.builder.suppressed
        summary.dropped_tracks = perception.builder.dropped
        if reader is not None:
            summary.fixes = reader.stats.fixes
            summary.gps_fix_losses = reader.stats.fix_losses
            summary.gpsd_reconnects = reader.stats.reconnects
        if uplink is not None:
            deadline = time.monotonic() + 120
            while pipe_store.counts()["pending"] and time.monotonic() < deadline:
                time.sleep(0.1)
            summary.delivered = pipe_store.counts()["delivered"]
    finally:
        stop.set()
        if up_thread is not None:
            up_thread.join(timeout=10)
        if reader is not None:
            reader.close()
        if gpsfake is not None:
            gpsfake.stop()
        src.close()
        pipe_store.close()
    summary.wall_s = time.monotonic() - t_wall
    return summary
