"""Detections → tracks: the same object across frames becomes one track.

A patrol vehicle passes a banner in about two seconds and sees it in dozens of
frames; the city wants one finding. Road-side objects drift outward and grow
as the vehicle approaches, so each track predicts its box from its recent
motion (constant velocity of centre and size, per second of capture time) and
new detections are matched to the prediction by IoU, or, for small fast boxes
whose IoU with the prediction is low, by centre distance relative to box size.
Matching is greedy by best affinity — with a handful of objects per frame that
is what the Hungarian method would pick too, without a SciPy dependency.

A track ends when it has not been seen for ``max_missed_s`` of capture time;
``update`` returns the tracks that ended so the event stage can make findings. Frames
that perception did not analyse (agent/sampling.py) are passed to ``skip``: their time
is excused, so a track is not ended by frames nobody looked at.
Classes are kept per observation and voted on at the end, so a track that the
model calls "garbage" nine times and "bin" once stays garbage.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from agent.records import Box, Detection, Frame, iou


def _cxcywh(b: Box) -> tuple[float, float, float, float]:
    return (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]


@dataclass(frozen=True, slots=True)
class Observation:
    """One detection of a track and when its frame was captured. The frame's
    pixels are not kept here (fifty frames per track would not fit a Pi's
    memory); the event stage keeps its few best shots itself, by track id."""

    index: int
    captured_utc: datetime
    captured_mono: float
    detection: Detection


@dataclass
class Track:
    id: int
    observations: list[Observation] = field(default_factory=list)
    excused_s: float = 0.0
    """Capture time since its last observation that passed in skipped frames."""

    @property
    def last(self) -> Observation:
        return self.observations[-1]

    @property
    def label(self) -> str:
        """Majority class, ties broken by the summed score."""
        votes: Counter[str] = Counter()
        score: Counter[str] = Counter()
        for o in self.observations:
            votes[o.detection.label] += 1
            score[o.detection.label] += o.detection.score
        return max(votes, key=lambda k: (votes[k], score[k]))

    @property
    def frames(self) -> int:
        return len(self.observations)

    def predict(self, t_mono: float) -> Box:
        """The box expected at capture time ``t_mono``, from the last two observations."""
        last = self.observations[-1]
        if len(self.observations) < 2:
            return last.detection.bbox
        prev = self.observations[-2]
        dt = last.captured_mono - prev.captured_mono
        if dt <= 0:
            return last.detection.bbox
        a, b = _cxcywh(prev.detection.bbox), _cxcywh(last.detection.bbox)
        k = (t_mono - last.captured_mono) / dt
        k = min(k, 3.0)  # do not fling a box across the frame after a gap
        cx, cy, w, h = (b[i] + k * (b[i] - a[i]) for i in range(4))
        w, h = max(w, 1e-3), max(h, 1e-3)
        return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def _obs(frame: Frame, det: Detection) -> Observation:
    return Observation(frame.index, frame.captured_utc, frame.captured_mono, det)


class Tracker:
    def __init__(self, iou_threshold: float = 0.2, centre_factor: float = 1.0,
                 max_missed_s: float = 1.0, class_aware: bool = False) -> None:
        """``centre_factor``: a detection whose centre lies within this many box
        diagonals of the predicted centre may match even with a low IoU.
        ``class_aware``: only match detections of the same class (off: the model
        may waver between similar classes on one object)."""
        self.iou_threshold = iou_threshold
        self.centre_factor = centre_factor
        self.max_missed_s = max_missed_s
        self.class_aware = class_aware
        self.active: list[Track] = []
        self._ids = itertools.count(1)
        self._last_t: float | None = None

    def skip(self, frame: Frame) -> None:
        """A frame that was not analysed: its time does not count towards any track's end."""
        t = frame.captured_mono
        if self._last_t is not None and t > self._last_t:
            for tr in self.active:
                tr.excused_s += t - self._last_t
        self._last_t = t

    def _affinity(self, track: Track, pred: Box, det: Detection) -> float:
        if self.class_aware and det.label != track.last.detection.label:
            return 0.0
        ov = iou(pred, det.bbox)
        if ov >= self.iou_threshold:
            return 1.0 + ov
        pc, dc = _cxcywh(pred), _cxcywh(det.bbox)
        diag = max((pc[2] ** 2 + pc[3] ** 2) ** 0.5, (dc[2] ** 2 + dc[3] ** 2) ** 0.5, 1e-6)
        dist = ((pc[0] - dc[0]) ** 2 + (pc[1] - dc[1]) ** 2) ** 0.5 / diag
        size = min(pc[2] * pc[3], dc[2] * dc[3]) / max(pc[2] * pc[3], dc[2] * dc[3], 1e-9)
        if dist <= self.centre_factor and size > 0.25:
            return 1.0 - dist / (2 * self.centre_factor)  # below any IoU match
        return 0.0

    def update(self, frame: Frame, detections: list[Detection]) -> tuple[list[Track], list[Track]]:
        """Add one frame's detections. Returns (tracks updated now, tracks that ended)."""
        t = frame.captured_mono
        self._last_t = t
        preds = [tr.predict(t) for tr in self.active]
        pairs = []
        for ti, tr in enumerate(self.active):
            for di, det in enumerate(detections):
                a = self._affinity(tr, preds[ti], det)
                if a > 0:
                    pairs.append((a, ti, di))
        pairs.sort(reverse=True)
        used_t: set[int] = set()
        used_d: set[int] = set()
        updated: list[Track] = []
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tr = self.active[ti]
            tr.observations.append(_obs(frame, detections[di]))
            tr.excused_s = 0.0
            updated.append(tr)
        for di, det in enumerate(detections):
            if di not in used_d:
                tr = Track(next(self._ids), [_obs(frame, det)])
                self.active.append(tr)
                updated.append(tr)
        ended = [tr for tr in self.active
                 if t - tr.last.captured_mono - tr.excused_s > self.max_missed_s]
        if ended:
            self.active = [tr for tr in self.active if tr not in ended]
        return updated, ended

    def flush(self) -> list[Track]:
        """End every active track (the drive or the run is over)."""
        ended, self.active = self.active, []
        return ended
