"""Privacy: faces and licence plates are blurred before an image is stored or sent.

Faces are found by MediaPipe's BlazeFace full-range detector on the TFLite runtime
(agent/faces.py), also in full-resolution tiles for the small faces at the road side.
Korean licence plates are found by the project's own plate detector (agent/plates.py,
trained on plates drawn to the standard), searched the same way. OpenCV's Haar cascades,
which ship inside the opencv 4.x wheels (``cv2.data.haarcascades``; the 5.0 wheels dropped
them, hence the project's ``opencv<5`` pin), are the fallback for either model when it
cannot be loaded (a frontal and a profile face cascade, a Russian plate cascade). All run
only on the one image an event keeps, not on every frame. Boxes of
the main model's own redact classes (if a model has e.g. ``person`` or ``plate``) can be
added by the caller.

Over-blurring is the safe failure: a cascade's false positive costs a blurred
patch of wall, a miss costs someone's privacy; so detection is tuned loose
and every region is padded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import cv2
import numpy as np

from agent.detector import DetectorError
from agent.faces import FaceDetector
from agent.plates import PlateDetector

log = logging.getLogger("privacy")

Box = tuple[float, float, float, float]
T = TypeVar("T")

CASCADES = {
    "face": ("haarcascade_frontalface_default.xml", "haarcascade_profileface.xml"),
    "plate": ("haarcascade_russian_plate_number.xml",),
}


class PrivacyError(Exception):
    """Redaction cannot run (no cascades): images must not be stored unredacted."""


@dataclass(frozen=True, slots=True)
class Redaction:
    """What the privacy step did to one image (recorded with the event)."""

    faces: int
    plates: int
    extra: int
    method: str
    face_detector: str = "haar"
    plate_detector: str = "haar"

    def as_dict(self) -> dict[str, object]:
        return {"ran": True, "faces": self.faces, "plates": self.plates, "extra": self.extra,
                "method": self.method, "face_detector": self.face_detector,
                "plate_detector": self.plate_detector}


def _cascade_dir() -> Path:
    data = getattr(cv2, "data", None)
    path = Path(getattr(data, "haarcascades", "")) if data else Path()
    return path


def _model_or_fallback(kind: str, load: Callable[[], T], required: bool, fallback: str,
                       weakness: str) -> T | None:
    """The ``kind`` model, or None (and a warning naming the fallback) when it cannot be
    loaded; PrivacyError instead when the config asked for the model itself."""
    try:
        return load()
    except (DetectorError, ValueError) as e:
        if required:
            raise PrivacyError(f"no {kind} detector: {e}") from None
        log.warning("privacy: the %s model cannot be used (%s); %ss are found by %s "
                    "instead, which miss%s %s", kind, e, kind, fallback,
                    "" if fallback.endswith("s") else "es", weakness)
        return None


def _gray(image: np.ndarray) -> np.ndarray:
    """What the cascades search: grey, histogram-equalised."""
    return cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))


class Redactor:
    def __init__(self, method: Literal["blur", "block"] = "blur", pad: float = 0.25,
                 min_size_px: int = 12,
                 faces: Literal["auto", "blazeface", "haar"] = "auto",
                 face_model: Path | None = None,
                 plates: Literal["auto", "model", "haar"] = "auto",
                 plate_model: Path | None = None) -> None:
        self.method = method
        self.face_model: FaceDetector | None = None
        if faces != "haar":
            self.face_model = _model_or_fallback(
                "face", lambda: FaceDetector(face_model), required=faces == "blazeface",
                fallback="OpenCV's Haar cascades", weakness="small and turned faces")
        self.plate_model: PlateDetector | None = None
        if plates != "haar":
            self.plate_model = _model_or_fallback(
                "plate", lambda: PlateDetector(plate_model), required=plates == "model",
                fallback="OpenCV's Russian-plate Haar cascade",
                weakness="most Korean plates")
        self.pad = pad
        self.min_size_px = min_size_px
        base = _cascade_dir()
        self._cascades: dict[str, list[cv2.CascadeClassifier]] = {}
        for kind, files in CASCADES.items():
            loaded = []
            for f in files:
                c = cv2.CascadeClassifier(str(base / f))
                if not c.empty():
                    loaded.append(c)
            if not loaded:
                raise PrivacyError(
                    f"no {kind} detector: OpenCV's Haar cascades are missing from {base} "
                    f"(opencv 5 wheels do not ship them; install opencv-python-headless<5)")
            self._cascades[kind] = loaded

    def _detect(self, gray: np.ndarray, kind: str) -> list[tuple[int, int, int, int]]:
        found: list[tuple[int, int, int, int]] = []
        m = self.min_size_px
        for c in self._cascades[kind]:
            boxes = c.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                       minSize=(m, m) if kind == "face" else (2 * m, m))
            found += [tuple(int(v) for v in b) for b in boxes]  # type: ignore[misc]
            if kind == "face":  # profiles looking the other way: search the mirror image
                w = gray.shape[1]
                for x, y, bw, bh in c.detectMultiScale(cv2.flip(gray, 1), 1.1, 4,
                                                      minSize=(m, m)):
                    found.append((int(w - x - bw), int(y), int(bw), int(bh)))
        return found

    def find_faces(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Face boxes (x, y, w, h in pixels) in a BGR image, unpadded."""
        if self.face_model is not None:
            return self.face_model.detect(image)
        return self._detect(_gray(image), "face")

    def find_plates(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Licence-plate boxes (x, y, w, h in pixels) in a BGR image, unpadded."""
        if self.plate_model is not None:
            return self.plate_model.detect(image)
        return self._detect(_gray(image), "plate")

    def redact(self, image: np.ndarray, extra_boxes: list[Box] = ()) -> tuple[np.ndarray,
                                                                              Redaction]:
        """A redacted copy of a BGR image. ``extra_boxes`` are fractions of the image."""
        out = image.copy()
        h, w = out.shape[:2]
        faces = self.find_faces(out)
        plates = self.find_plates(out)
        regions = [*faces, *plates]
        for x1, y1, x2, y2 in extra_boxes:
            regions.append((int(x1 * w), int(y1 * h), int((x2 - x1) * w), int((y2 - y1) * h)))
        for x, y, bw, bh in regions:
            px, py = int(bw * self.pad), int(bh * self.pad)
            xa, ya = max(0, x - px), max(0, y - py)
            xb, yb = min(w, x + bw + px), min(h, y + bh + py)
            if xb - xa < 2 or yb - ya < 2:
                continue
            roi = out[ya:yb, xa:xb]
            if self.method == "block":
                roi[:] = roi.mean(axis=(0, 1)).astype(np.uint8)
            else:
                # Pixelate then blur: irreversible at any zoom, still looks like a photo.
                small = cv2.resize(roi, (max(1, (xb - xa) // 12), max(1, (yb - ya) // 12)),
                                   interpolation=cv2.INTER_AREA)
                roi[:] = cv2.GaussianBlur(cv2.resize(small, (xb - xa, yb - ya),
                                                     interpolation=cv2.INTER_LINEAR), (0, 0), 3)
        return out, Redaction(len(faces), len(plates), len(extra_boxes), self.method,
                              "blazeface" if self.face_model is not None else "haar",
                              self.plate_model.model.stem if self.plate_model is not None
                              else "haar")
