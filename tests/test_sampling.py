"""Sampling (agent/sampling.py): no analysis while the vehicle stands, a frame every N metres
when asked, every frame without a fix; and the tracker keeps a track whole across the frames
that were not analysed. The model card's sampling section (models/train/drives.py --section
sampling) states the agent's default N and the N its rule chose on the tuning drives."""

from __future__ import annotations

from pathlib import Path

from agent.config import DetectorConfig, SamplingConfig
from agent.evaluate import Scores
from agent.geo import destination
from agent.gps import GeoTag
from agent.sampling import Sampler, Skip
from agent.tracker import Tracker
from tests.test_model_card import card_with, load_drives
from tests.test_tracker import approaching, frame

drives = load_drives()

LAT, LON = 37.5665, 126.978


def at(metres: float, speed: float) -> GeoTag:
    lat, lon = destination(LAT, LON, 0.0, metres)
    return GeoTag(lat, lon, 0.0, speed, 5.0)


def test_analysis_pauses_once_the_vehicle_has_stood_and_resumes_when_it_moves() -> None:
    s = Sampler(SamplingConfig(stationary_after_s=3.0, every_m=0.0))
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


def test_the_model_card_s_sampling_section_states_the_default_and_the_rule_s_choice() -> None:
    """What a user reads in the card is what the agent does: the card's sampling section
    (written by drives.py, this model's) marks the agent's default every_m, and the value it
    says its rule chose is what the rule gives on the section's own tuning table. A changed
    default, a hand-edited figure or a retrained model without a rerun of
    ``drives.py --section sampling --write`` fails here. (The default is not the chosen
    value yet: see SamplingConfig.every_m.)"""
    fix = "run python models/train/drives.py models/civil-complaint.tflite --section sampling " \
          "--write"
    section = drives.read_section(drives.CARD.read_text(encoding="utf-8"), drives.SAMPLING)
    assert section is not None, f"the model card has no sampling section: {fix}"
    stated = drives.parse_sampling(section)
    assert stated.sha256 == drives.sha256_prefix(DetectorConfig().model_path()), fix
    tuning = stated.tables.get("Tuning drives", {})
    evaluation = stated.tables.get("Evaluation drives", {})
    assert set(tuning) == set(evaluation) == set(stated.every_ms) and 0.0 in tuning, section
    rule = drives.choose({m: drives.row_counts(cells) for m, cells in tuning.items()})
    assert stated.chosen == rule, f"the card says {stated.chosen}, its table gives {rule}"
    default = SamplingConfig().every_m
    marked = [m for m, cells in tuning.items() if "default" in cells[0]]
    assert marked == [default], f"sampling.every_m defaults to {default:g}; {fix}"
    assert f"default `sampling.every_m` is {default:g} " in section, fix


def test_the_rule_keeps_recall_within_one_object_and_precision_not_lower() -> None:
    # (objects found, findings, false findings) per every_m
    base = (40, 50, 10)  # precision 0.8
    assert drives.choose({0.0: base, 1.0: (39, 48, 9), 2.0: (38, 45, 8)}) == 1.0  # 2: 2 fewer
    assert drives.choose({0.0: base, 1.0: (40, 50, 11)}) == 0.0  # precision 0.78
    assert drives.choose({0.0: base, 1.0: (40, 45, 9)}) == 1.0  # precision 0.8, the same
    # the largest that passes, even past one that does not
    assert drives.choose({0.0: base, 1.0: (38, 40, 2), 2.0: (39, 40, 2)}) == 2.0
    assert drives.choose({0.0: (0, 0, 0), 3.0: (0, 0, 0)}) == 3.0  # nothing found: precision 1


def scored(found: int, events: int, false: int, objects: int = 40) -> Scores:
    belong = events - false
    return Scores(objects=objects, events=events, matched=found, recall=found / objects,
                  precision=belong / events, events_per_object=belong / found,
                  position_error_m_p50=3.5, position_error_m_p95=9.0, false_positives=false,
                  missed=[])


def test_the_sampling_section_passes_its_check_and_a_hand_edit_does_not(
        tmp_path: Path) -> None:
    model = tmp_path / "made-up.tflite"
    model.write_bytes(b"not a real model, only hashed")
    d = 1.0  # the value the rule picks here
    tuning = {0.0: drives.Sampled(scored(40, 50, 10), 1000, 900),
              d: drives.Sampled(scored(39, 45, 8), 1000, 600),
              9.0: drives.Sampled(scored(20, 22, 4), 1000, 100)}
    evaluation = {m: drives.Sampled(scored(30, 33, 3, 30), 800, 400) for m in tuning}
    section = drives.render_sampling(tuning, evaluation, model)
    card = card_with(section)
    assert drives.sampling_differences(card, tuning, evaluation, model) == []
    stated = drives.parse_sampling(section)
    assert stated.chosen == d and f"Chosen: **{d:g} m**" in section
    assert stated.tables["Tuning drives"][d][1] == "60% (600 of 1000)"
    # a figure edited by hand: within the tolerance a rerun's, beyond it not
    near = card.replace("| 39 | 0.82 |", "| 40 | 0.82 |", 1)
    assert near != card and drives.sampling_differences(near, tuning, evaluation, model) == []
    altered = card.replace("| 39 | 0.82 |", "| 37 | 0.82 |", 1)
    assert drives.sampling_differences(altered, tuning, evaluation, model) == [
        f"tuning drives, every_m {d:g}, objects found: the card says 37, the drives give 39 "
        "(more than 1 apart)"]
    # a rerun whose choice differs: the words say so
    worse = {**tuning, d: drives.Sampled(scored(37, 45, 8), 1000, 600)}
    problems = drives.sampling_differences(card, worse, evaluation, model)
    assert f"the card states chosen every_m {d:g}, this run 0" in problems
    assert drives.sampling_differences("# no section\n", tuning, evaluation, model) == [
        "the card has no sampling section (<!-- sampling:begin --> ... <!-- sampling:end -->)"]
