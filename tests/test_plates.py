"""Korean licence plates and the privacy step: the plates drawn to the standard, the
project's plate model (agent/plates.py) blurring them in road frames where the Haar cascade
it replaced does not, its fallback, and the recall table in models/privacy/README.md being
what the privacy step gives now."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.privacy import PrivacyError, Redactor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models" / "privacy"))
import plates  # noqa: E402
from measure import drive_frames  # noqa: E402  (models/privacy/measure.py)


@pytest.mark.parametrize("kind", list(plates.KINDS))
def test_plates_are_drawn_to_the_standard(kind: str) -> None:
    (wmm, hmm), bg, fg, _two = plates.KINDS[kind]
    img = plates.draw_plate(kind, np.random.default_rng(1))
    h, w = img.shape[:2]
    assert abs(w / h - wmm / hmm) < 0.02  # 520x110 or 335x170
    # background and characters in the plate's colours, the characters a fair share
    ink = np.all(np.abs(img.astype(int) - fg) < 40, axis=2).mean()
    paper = np.all(np.abs(img.astype(int) - bg) < 40, axis=2).mean()
    assert 0.08 < ink < 0.4 and paper > 0.5, (ink, paper)


def test_the_plate_recall_table_is_current() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "models" / "privacy" / "plates.py"),
                        "--check"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def _detail(img: np.ndarray, box: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = (round(v) for v in box)
    return float(cv2.Laplacian(img[y1:y2, x1:x2].astype(np.float32), cv2.CV_32F).var())


@pytest.mark.parametrize("kind", list(plates.KINDS))
def test_korean_plates_in_a_road_frame_are_blurred(kind: str) -> None:
    """Plates 40-100 px wide (about 12 m down to 5 m away), pasted with a seed the table
    does not use into a drive frame it does not use: the model blurs nearly all of them,
    the Haar cascade few."""
    rng = np.random.default_rng(2024)
    frame = drive_frames((330,))[0]
    redactors = {"model": Redactor(faces="haar", plates="model"),
                 "haar": Redactor(faces="haar", plates="haar")}
    blurred = {"model": 0, "haar": 0}
    total = 0
    for width in (40, 56, 72, 100):
        shot, truths = plates._pasted(frame, kind, width, rng)
        for search, red in redactors.items():
            out, report = red.redact(shot)
            assert report.plate_detector == ("korean_plates" if search == "model" else "haar")
            # the writing is gone: most of the plate's detail
            blurred[search] += sum(_detail(out, t) < 0.3 * _detail(shot, t) for t in truths)
        total += len(truths)
    assert blurred["model"] >= 0.85 * total, (blurred, total)
    assert blurred["model"] > blurred["haar"], blurred


def test_a_broken_plate_model_falls_back_to_the_cascade_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "plates.tflite"
    broken.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING):
        r = Redactor(faces="haar", plate_model=broken)
    assert r.plate_model is None and "Russian-plate Haar cascade instead" in caplog.text
    assert r.redact(drive_frames((30,))[0])[1].plate_detector == "haar"
    with pytest.raises(PrivacyError, match="no plate detector"):
        Redactor(faces="haar", plates="model", plate_model=broken)
    # a working model of another kind is not taken for a plate detector
    with pytest.raises(PrivacyError, match="not a plate detector"):
        Redactor(faces="haar", plates="model",
                 plate_model=ROOT / "models" / "civil-complaint.tflite")
