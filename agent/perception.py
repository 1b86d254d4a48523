"""Perception: frame → detections → tracks → findings, on one thread.

The detector finds objects in each frame, the tracker follows them across
frames, and the event stage turns each track that ends into a finding (or not:
see events.py) and hands it to ``submit``, the store writer, which never blocks.

A live finding waits for the GPS. gpsd reports a fix up to a second after its
time, so when a track ends its last views may lie past the newest fix, where
their geotags could only be extrapolated. An ended track is therefore held until
a fix at or after its last frame has arrived, at most :data:`FIX_WAIT_S`, and
then finished. A recording's fixes are all known at once: nothing waits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import Config
from agent.detector import Detector
from agent.events import EventBuilder, RecentFindings
from agent.gps import FixHistory, FrameClock
from agent.privacy import Redactor
from agent.records import Event, Frame
from agent.stages import Faults
from agent.tracker import Track, Tracker

log = logging.getLogger("perception")

FIX_WAIT_S = 2.0
"""How long an ended track waits for the fix after its last frame: a 1 Hz receiver's
next fix plus gpsd's delivery of it, with room to spare."""


@dataclass
class PerceptionStats:
    frames: int = 0
    broken_frames: int = 0
    """Frames the detector could not take (wrong shape or type): skipped."""
    detections: int = 0
    frames_without_fix: int = 0
    findings: int = 0
    inference_ms: float = 0.0
    """The last frame's inference time."""


class Perception:
    """Detector, tracker and event stage for one camera."""

    def __init__(self, cfg: Config, detector: Detector, history: FixHistory,
                 submit: Callable[[Event], object], frame_time: FrameClock,
                 recent: RecentFindings | None = None, faults: Faults | None = None,
                 fix_wait_s: float = FIX_WAIT_S) -> None:
        """``fix_wait_s``: 0 when every fix is known before the frames (a log read directly)."""
        self.detector = detector
        self.fix_wait_s = fix_wait_s
        self.history = history
        self.submit = submit
        self.frame_time = frame_time
        self.faults = faults or Faults("perception", item="track")
        self.tracker = Tracker(max_missed_s=1.0)
        self.builder = EventBuilder(cfg.events, cfg.camera, history.position_at,
                                    Redactor() if cfg.events.redact else None,
                                    model=detector.model_path.stem, config_version=cfg.version,
                                    frame_time=frame_time, second_look=detector.second_look,
                                    recent=recent)
        self.stats = PerceptionStats()
        self._waiting: list[tuple[Track, float]] = []  # ended tracks and until when they wait

    def process(self, frame: Frame) -> None:
        """One frame through detector, tracker and event stage."""
        try:
            dets = self.detector.detect(frame.image)
        except ValueError as e:  # a broken frame: counted, skipped, never fatal
            self.stats.broken_frames += 1
            log.warning("skipping frame %d: %s", frame.index, e)
            return
        self.stats.frames += 1
        self.stats.detections += len(dets)
        self.stats.inference_ms = self.detector.timings.invoke_ms
        if self.history.position_at(self.frame_time(frame.captured_utc,
                                                    frame.captured_mono)) is None:
            self.stats.frames_without_fix += 1
        updated, ended = self.tracker.update(frame, dets)
        self.builder.observe(frame, updated)
        deadline = time.monotonic() + self.fix_wait_s
        self._waiting += [(tr, deadline) for tr in ended]
        self.release()

    def release(self, all_now: bool = False) -> None:
        """Finish the ended tracks whose fixes have arrived (or waited long enough)."""
        if not self._waiting:
            return
        newest = self.history.last()
        now = time.monotonic()
        keep = []
        for tr, deadline in self._waiting:
            last = tr.last
            covered = newest is not None and \
                newest.utc >= self.frame_time(last.captured_utc, last.captured_mono)
            if all_now or covered or now >= deadline:
                self._finish(tr)
            else:
                keep.append((tr, deadline))
        self._waiting = keep

    def flush(self) -> None:
        """End every track (the camera stopped), waiting for their fixes as usual."""
        deadline = time.monotonic() + self.fix_wait_s
        self._waiting += [(tr, deadline) for tr in self.tracker.flush()]
        while self._waiting and time.monotonic() < deadline:
            self.release()
            if self._waiting:
                time.sleep(0.05)
        self.release(all_now=True)

    def _finish(self, tr: Track) -> None:
        with self.faults.guard(f"track {tr.id}"):
            for ev in self.builder.finish([tr]):
                self.stats.findings += 1
                pos = (f"{ev.position.lat:.6f},{ev.position.lon:.6f} "
                       f"±{ev.position.accuracy_m:.0f} m ({ev.position.source})"
                       if ev.position else "no GPS fix")
                log.info("finding: %s %.2f at %s, %d frames", ev.label, ev.score, pos,
                         ev.attributes.get("frames", 0))
                self.submit(ev)
