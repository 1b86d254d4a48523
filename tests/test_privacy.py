"""Privacy: a real face photo comes out with the face unrecognisable, the rest intact."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.privacy import Redactor

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = Path(skimage_data.__file__).parent


def detail(img: np.ndarray) -> float:
    """High-frequency energy: what makes a face recognisable."""
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_a_real_face_is_blurred_and_the_rest_kept() -> None:
    img = cv2.imread(str(PHOTOS / "astronaut.png"))  # Eileen Collins, NASA portrait
    assert img is not None and img.shape == (512, 512, 3)
    out, rep = Redactor().redact(img)
    assert rep.faces >= 1
    face = (slice(90, 150), slice(195, 250))  # eyes, nose and mouth, located by hand
    assert detail(out[face]) < 0.1 * detail(img[face]), "the face is still sharp"
    # the rest of the picture (the flag, the suit) is untouched
    flag = (slice(380, 500), slice(0, 150))
    assert np.array_equal(out[flag], img[flag])
    assert not np.array_equal(out, img)


def test_an_image_without_faces_or_plates_is_unchanged() -> None:
    img = cv2.imread(str(PHOTOS / "coffee.png"))  # a cup of coffee: nobody in it
    out, rep = Redactor(plates="haar").redact(img)
    assert (rep.faces, rep.plates) == (0, 0)
    assert np.array_equal(out, img)


@pytest.mark.parametrize("name", ["coffee", "motorcycle_left", "chelsea"])
def test_the_plate_model_blurs_little_of_a_picture_without_plates(name: str) -> None:
    """The plate model takes a few things in real photos for plates (over-blurring is the
    safe failure; its rate is in models/privacy/README.md), but never a large part of the
    picture: the finding's evidence stays visible."""
    img = cv2.imread(str(PHOTOS / f"{name}.png"))
    out, rep = Redactor().redact(img)
    assert rep.faces == 0 and rep.plate_detector == "korean_plates"
    assert np.any(out != img, axis=2).mean() < 0.05


def test_extra_boxes_from_the_main_model_are_blocked() -> None:
    img = cv2.imread(str(PHOTOS / "coffee.png"))
    out, rep = Redactor(method="block").redact(img, extra_boxes=[(0.5, 0.5, 0.75, 0.75)])
    h, w = img.shape[:2]
    patch = out[int(0.55 * h):int(0.7 * h), int(0.55 * w):int(0.7 * w)]
    assert rep.extra == 1 and patch.std(axis=(0, 1)).max() < 1.0
