"""Sampling (agent/sampling.py): no analysis while the vehicle stands, a frame every N metres
when asked, every frame without a fix; and the tracker keeps a track whole across the frames
that were not analysed."""

from __future__ import annotations

from agent.config import SamplingConfig
from agent.geo import destination
from agent.gps import GeoTag
from agent.sampling import Sampler, Skip
from agent.tracker import Tracker
from tests.test_tracker import approaching, frame

LAT, LON = 37.5665, 126.978


def at(metres: float, speed: float) -> GeoTag:
    lat, lon = destination(LAT, LON, 0.0, metres)
    return GeoTag(lat, lon, 0.0, speed, 5.0)


def test_analysis_pauses_once_the_vehicle_has_stood_and_resumes_when_it_moves() -> None:
    s = Sampler(SamplingConfig(stationary_after_s=3.0))
    moving = [s.decide(i / 10, at(i, 10.0)) for i in range(10)]
    assert set(moving) == {Skip.NO}
    # a red light from t = 1 s: the first three seconds are still analysed
    stood = [s.decide(1 + i / 10, at(10, 0.2)) for i in range(100)]
    assert stood[:30] == [Skip.NO] * 30 and set(stood[30:]) == {Skip.STATIONARY}
    assert s.stats.stationary == 70
    assert s.decide(11.1, at(11, 2.0)) is Skip.NO  # moving again: at once


def test_without_a_fix_every_frame_is_analysed() -> None:
    s = Sampler(SamplingConfig(stationary_after_s=0.0, every_m=5.0))
    assert all(s.decide(i / 10, None) is Skip.NO for i in range(50))


def test_a_frame_every_n_metres() -> None:
    s = Sampler(SamplingConfig(every_m=2.0))
    # 1.4 m per frame (50 km/h at 10 fps): every other frame, never two metres apart unseen
    got = [s.decide(i / 10, at(1.4 * i, 14.0)) for i in range(20)]
    analysed = [i for i, g in enumerate(got) if g is Skip.NO]
    assert analysed == list(range(0, 20, 2)) and s.stats.distance == 10


def test_a_model_on_trial_is_judged_on_every_frame_even_when_parked() -> None:
    s = Sampler(SamplingConfig(stationary_after_s=0.0))
    assert s.decide(0.0, at(0, 0.0)) is Skip.STATIONARY
    s.analyse_all = True
    assert s.decide(0.1, at(0, 0.0)) is Skip.NO


def test_a_track_is_kept_whole_across_a_stop_that_was_not_analysed() -> None:
    """An object in view when the vehicle stops at a red light for 20 s, missed by the
    detector in the first frame after and seen again in the next ones: one track, not two
    (without ``skip`` the wait counts as missing it for 20 s, and ends it)."""
    ended: dict[str, list] = {"skip": [], "plain": []}
    for mode in ended:
        tr = Tracker()
        for i in range(10):
            ended[mode] += tr.update(frame(i), [approaching(i)])[1]
        for i in range(10, 210):  # 20 s at the light, no frame analysed
            if mode == "skip":
                tr.skip(frame(i))
        ended[mode] += tr.update(frame(210), [])[1]
        for i in range(211, 221):
            ended[mode] += tr.update(frame(i), [approaching(i - 200)])[1]
        for i in range(221, 240):
            ended[mode] += tr.update(frame(i), [])[1]
    assert len(ended["skip"]) == 1 and ended["skip"][0].frames == 20
    assert len(ended["plain"]) == 2
