"""Licence plates for the privacy step: the project's own Korean plate detector.

No published detector for Korean plates installs here, so the project trains one
(``models/privacy/train_plates.py``): the default model's small grid network at half width,
one class, ``plate``, trained on plates drawn to the standard (520x110 white; 335x170 white,
green and yellow) pasted on the simulator's cars and roads. It runs on the TFLite runtime
the agent already has, on the one picture an event keeps: whole (near plates) and in 192 px
tiles at full resolution (far plates, 10-40 px wide), as BlazeFace is run for faces. Its
recall by plate size, beside the Haar cascade's, is in models/privacy/README.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from agent.detector import Detector, nms
from agent.faces import search_windows

log = logging.getLogger("privacy")

MODEL = Path(__file__).resolve().parent.parent / "models" / "privacy" / "korean_plates.tflite"
# Chosen by ``models/privacy/plates.py --tune`` (frames the README's table does not use):
# the highest threshold that keeps recall near its plateau; loose on purpose, since a false
# plate costs a blurred patch and a missed one someone's privacy.
MIN_SCORE = 0.7
IOU = 0.3
MAX_WIDTH_SHARE = 1 / 3
"""A plate wider than this share of the picture would be a metre or two from the camera,
not a road-side scene: such boxes are the model firing on large shapes in the shrunk
whole picture, and would blur a third of the finding's evidence."""


def model_path() -> Path:
    """The model in this checkout, or where setup.py installs it."""
    if MODEL.is_file():
        return MODEL
    return Path(sys.prefix) / "share" / "patrol-agent" / "models" / "privacy" / MODEL.name


class PlateDetector:
    """Plate boxes (x, y, w, h in pixels) in a BGR image."""

    def __init__(self, model: Path | None = None, threads: int = 2,
                 min_score: float = MIN_SCORE) -> None:
        self.model = model or model_path()
        # DetectorError for a missing, corrupt or foreign model: the caller falls back
        self.det = Detector(self.model, threads=threads, layout="patrol_grid",
                            score_threshold=min_score, iou_threshold=IOU, max_detections=100)
        if self.det.labels != ["plate"]:
            raise ValueError(f"{self.model.name} is not a plate detector: its classes are "
                             f"{self.det.labels[:5]}, not ['plate']")
        self.size = self.det.in_w

    def detect(self, bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
        h, w = bgr.shape[:2]
        boxes, scores = [], []
        for x0, y0, tw, th in search_windows(w, h, self.size):
            for d in self.det.detect(bgr[y0:y0 + th, x0:x0 + tw]):
                x1, y1, x2, y2 = d.bbox
                boxes.append((x0 + x1 * tw, y0 + y1 * th, x0 + x2 * tw, y0 + y2 * th))
                scores.append(d.score)
        if not boxes:
            return []
        b = np.array(boxes, np.float64)
        keep = nms(b / max(w, h), np.array(scores, np.float32), np.zeros(len(b), np.int64),
                   IOU, 200)
        return [(int(x1), int(y1), round(float(x2 - x1)), round(float(y2 - y1)))
                for x1, y1, x2, y2 in b[keep]
                if x2 - x1 >= 2 and y2 - y1 >= 2 and x2 - x1 <= MAX_WIDTH_SHARE * w]
