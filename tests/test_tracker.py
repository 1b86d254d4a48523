"""Tracker: one track per real object across frames, as a vehicle drives past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from agent.records import Detection, Frame
from agent.tracker import Tracker

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
IMG = np.zeros((8, 8, 3), np.uint8)


def frame(i: int, fps: float = 10.0) -> Frame:
    return Frame(IMG, T0 + timedelta(seconds=i / fps), 100.0 + i / fps, i)


def approaching(i: int, side: float = 1.0, label: str = "banner") -> Detection:
    """A road-side object seen from a car driving towards it: drifts outward, grows."""
    k = i / 20
    cx = 0.5 + side * (0.05 + 0.35 * k ** 2)
    w = 0.03 + 0.2 * k ** 2
    cy, h = 0.55 - 0.05 * k, w * 0.7
    return Detection(label, 1, 0.8, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))


def test_an_object_passed_at_speed_is_one_track() -> None:
    tr = Tracker()
    ended = []
    for i in range(21):
        ended += tr.update(frame(i), [approaching(i)])[1]
    for i in range(21, 40):  # it has left the frame
        ended += tr.update(frame(i), [])[1]
    assert len(ended) == 1 and ended[0].frames == 21 and tr.active == []


def test_two_objects_either_side_stay_apart() -> None:
    tr = Tracker()
    for i in range(21):
        tr.update(frame(i), [approaching(i, 1.0, "banner"), approaching(i, -1.0, "garbage")])
    tracks = tr.flush()
    assert sorted(t.label for t in tracks) == ["banner", "garbage"]
    assert all(t.frames == 21 for t in tracks)


def test_short_dropouts_do_not_split_a_track() -> None:
    tr = Tracker(max_missed_s=0.5)
    for i in range(21):
        dets = [] if i in (7, 8, 13) else [approaching(i)]
        assert tr.update(frame(i), dets)[1] == []
    (track,) = tr.flush()
    assert track.frames == 18


def test_a_long_gap_ends_the_track() -> None:
    tr = Tracker(max_missed_s=0.5)
    ended = []
    for i in range(10):
        ended += tr.update(frame(i), [approaching(i)])[1]
    for i in range(10, 20):
        ended += tr.update(frame(i), [])[1]
    assert len(ended) == 1 and ended[0].frames == 10


def test_label_is_the_majority_vote() -> None:
    tr = Tracker()
    for i in range(10):
        d = approaching(i, label="garbage" if i % 4 else "bin")
        tr.update(frame(i), [d])
    (track,) = tr.flush()
    assert track.label == "garbage"


def test_standing_still_keeps_one_track() -> None:
    tr = Tracker()
    box = (0.6, 0.4, 0.7, 0.5)
    for i in range(300):  # thirty seconds at a red light
        tr.update(frame(i), [Detection("garbage", 0, 0.7, box)])
    assert len(tr.active) == 1 and tr.active[0].frames == 300
