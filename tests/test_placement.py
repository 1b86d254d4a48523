"""models/train/placement.py: how far from the labelled foot a model's boxes place objects,
the measurement behind the model card's *Where the boxes place objects* section."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.config import CameraConfig, DetectorConfig
from tests.test_model_card import load_train_script

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "drive"


placement = load_train_script("placement")


def test_a_box_ending_above_the_foot_places_the_object_too_far_and_one_below_too_near(
        ) -> None:
    cam, aspect = CameraConfig(), 360 / 640
    label = (0.60, 0.40, 0.66, 0.62)
    assert placement.distance_ratio(label, label, aspect, cam) == 1.0
    assert placement.distance_ratio((0.60, 0.40, 0.66, 0.58), label, aspect, cam) > 1.1
    assert placement.distance_ratio((0.60, 0.40, 0.66, 0.68), label, aspect, cam) < 0.9
    # a box bottom above the horizon never meets the ground: no ratio, not a huge one
    assert placement.distance_ratio((0.60, 0.10, 0.66, 0.30), label, aspect, cam) is None


def test_on_the_sample_drive_the_default_model_places_a_near_construction_site_right(
        ) -> None:
    model = DetectorConfig().model_path()
    r = placement.ratios(model, [SAMPLE])
    # the sample drive shows a construction site and banners with their feet in the frame
    assert {cls for cls, _ in r} == {"construction", "banner"}, r.keys()
    near = r[("construction", 0)]
    assert len(near) >= 5 and 0.9 <= float(np.median(near)) <= 1.1, near
    section = placement.section(model, [1], 60.0, r)
    assert "| construction | under 15 m |" in section and "| banner | 15-30 m |" in section


def test_the_card_s_placement_section_is_this_model_s() -> None:
    """A retrained model without a rerun of placement.py --write fails here."""
    model = DetectorConfig().model_path()
    card = (ROOT / "models" / "MODEL_CARD.md").read_text(encoding="utf-8")
    sections = placement.sections
    text = sections.current(card, placement.NAME)
    assert text is not None, "the model card has no placement section"
    assert f"model sha256 `{placement.drives.sha256_prefix(model)}`" in text, \
        f"run {placement.command(model, placement.SEEDS, 60.0)}"
    assert 0 <= card.find(placement.HEADING) < card.index(text), "the section's heading"
