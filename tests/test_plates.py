"""Korean licence plates and the privacy step: the plates drawn to the standard, and the
recall table in models/privacy/README.md is what the privacy step gives now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models" / "privacy"))
import plates  # noqa: E402


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
