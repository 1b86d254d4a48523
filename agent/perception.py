"""Perception: frame → detections → tracks, on one thread, at the camera's pace.

The detector finds objects in each frame, the tracker follows them across frames,
and the best few views of each live track are kept. A track that ends is handed on
(``on_ended``, the findings stage) with its views; everything slower that decides
whether it is a finding (its place, the second look, redaction, encoding: a few
hundred milliseconds for a finding) happens on the findings thread, so that
detection does not miss the frames of the next object meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.config import Config
from agent.detector import Detector
from agent.events import BestShots, EndedTrack
from agent.gps import FixHistory, FrameClock
from agent.records import Frame
from agent.sampling import Sampler, Skip
from agent.timings import StageTimes, Stopwatch
from agent.tracker import Tracker

log = logging.getLogger("perception")


@dataclass
class PerceptionStats:
    frames: int = 0
    broken_frames: int = 0
    """Frames the detector could not take (wrong shape or type): skipped."""
    detections: int = 0
    frames_without_fix: int = 0
    tracks: int = 0
    """Tracks ended and handed on."""
    inference_ms: float = 0.0
    """The last frame's inference time."""
    skipped: int = 0
    """Frames not analysed: the vehicle stood, or had not gone far enough (sampling)."""


class Perception:
    """Detector, tracker and best views for one camera."""

    def __init__(self, cfg: Config, detector: Detector, history: FixHistory,
                 on_ended: Callable[[EndedTrack], object], frame_time: FrameClock,
                 times: StageTimes | None = None) -> None:
        self.detector = detector
        self.times = times
        self.history = history
        self.on_ended = on_ended
        self.frame_time = frame_time
        self.tracker = Tracker(max_missed_s=1.0)
        self.sampler = Sampler(cfg.sampling)
        # Through self.detector, so that a model swapped in live zooms for its own input.
        self.shots = BestShots.for_config(cfg.events,
                                          lambda image, bbox: self.detector.zoom(image, bbox))
        self.stats = PerceptionStats()
        self.last_frame: Frame | None = None
        """The newest frame analysed (the ``snapshot`` command's picture)."""
        self.invoke_ms: deque[float] = deque(maxlen=600)
        """The last inference times, for telemetry's median and 95th percentile."""

    def process(self, frame: Frame) -> None:
        """One frame through detector and tracker, unless sampling skips it."""
        if self.times is not None:
            self.times.add("queue", (time.monotonic() - frame.read_mono) * 1e3)
        when = self.frame_time(frame.captured_utc, frame.captured_mono)
        where = self.history.position_at(when)
        if self.sampler.decide(when.timestamp(), where) is not Skip.NO:
            self.stats.skipped += 1
            self.last_frame = frame
            self.tracker.skip(frame)
            return
        try:
            dets = self.detector.detect(frame.image)
        except ValueError as e:  # a broken frame: counted, skipped, never fatal
            self.stats.broken_frames += 1
            log.warning("skipping frame %d: %s", frame.index, e)
            return
        self.last_frame = frame
        self.stats.frames += 1
        self.stats.detections += len(dets)
        t = self.detector.timings
        self.stats.inference_ms = t.invoke_ms
        self.invoke_ms.append(self.stats.inference_ms)
        if self.times is not None:
            self.times.add("preprocess", t.preprocess_ms)
            self.times.add("invoke", t.invoke_ms)
            self.times.add("postprocess", t.postprocess_ms)
        if where is None:
            self.stats.frames_without_fix += 1
        with Stopwatch(self.times, "track"):
            updated, ended = self.tracker.update(frame, dets)
            self.shots.observe(frame, updated)
        self._hand_on(ended, frame.read_mono)

    def flush(self) -> None:
        """End every track (the camera stopped)."""
        self._hand_on(self.tracker.flush(), time.monotonic())

    def _hand_on(self, ended: list, decided_mono: float) -> None:
        """``decided_mono``: when the frame that ended them was read (their latency's
        start)."""
        for e in self.shots.end(ended):
            self.stats.tracks += 1
            if self.times is not None:
                self.times.start(f"track {e.track.id}", decided_mono)
            self.on_ended(e)
