"""Faces in the privacy step: BlazeFace on the TFLite runtime (agent/faces.py), with the
Haar cascades only as the fallback; real photos, and real faces pasted into road frames."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.privacy import PrivacyError, Redactor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "privacy"))
import measure  # noqa: E402  (models/privacy/measure.py: the faces and how they are pasted)


def _road_frame(index: int = 230) -> np.ndarray:
    cap = cv2.VideoCapture(str(ROOT / "samples" / "drive" / "video.mp4"))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame


def _blurred(before: np.ndarray, after: np.ndarray, box: tuple[float, ...]) -> bool:
    # The face's inner part (eyes, nose, mouth): what makes it someone's.
    bx1, by1, bx2, by2 = box
    mx, my = 0.2 * (bx2 - bx1), 0.2 * (by2 - by1)
    x1, y1, x2, y2 = int(bx1 + mx), int(by1 + my), int(bx2 - mx), int(by2 - my)
    a, b = before[y1:y2, x1:x2].astype(np.float32), after[y1:y2, x1:x2].astype(np.float32)
    # Redacted: the detail (Laplacian energy) of the face is mostly gone.
    return cv2.Laplacian(b, cv2.CV_32F).var() < 0.3 * cv2.Laplacian(a, cv2.CV_32F).var()


@pytest.mark.parametrize("height", [20, 28, 40])
def test_a_small_face_at_the_road_side_is_blurred(height: int) -> None:
    frame = _road_frame()
    truth = measure._paste(frame, "astronaut", height, 0, 300, 150)
    out, report = Redactor().redact(frame)
    assert report.face_detector == "blazeface" and report.faces >= 1
    assert _blurred(frame, out, truth)
    assert report.as_dict()["face_detector"] == "blazeface"


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_the_faces_of_real_photos_are_blurred(name: str) -> None:
    img = measure._photo(name)
    out, report = Redactor().redact(img)
    assert report.faces >= 1 and _blurred(img, out, measure.FACES[name])


def test_without_its_model_the_face_step_falls_back_to_the_cascades_loudly(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "face.tflite"
    broken.write_bytes(b"not a model")
    with caplog.at_level(logging.WARNING):
        r = Redactor(face_model=broken)
    assert r.face_model is None and "Haar cascades instead" in caplog.text
    _, report = r.redact(measure._photo("astronaut"))
    assert report.face_detector == "haar" and report.faces >= 1
    with pytest.raises(PrivacyError, match="no face detector"):
        Redactor(faces="blazeface", face_model=broken)


@pytest.mark.slow
def test_the_recall_table_in_the_privacy_readme_is_what_the_code_measures() -> None:
    """models/privacy/README.md's figures are written by measure.py --write; a change to the
    detector or its settings with a stale table fails here."""
    r = subprocess.run([sys.executable, str(ROOT / "models" / "privacy" / "measure.py"),
                        "--check"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    text = (ROOT / "models" / "privacy" / "README.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 20 |"))
    blaze, haar = (float(v) for v in row.strip("|").split("|")[2:4])
    assert blaze >= 0.8 > haar, "at 20 px BlazeFace must find most faces the cascades miss"

