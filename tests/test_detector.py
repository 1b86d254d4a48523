"""The TFLite detector on real int8 models of every supported output layout."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.config import DetectorConfig, EventsConfig
from agent.detector import (
    Detector,
    DetectorError,
    Letterbox,
    decode_grid,
    letterbox,
    nms,
    unletterbox,
)
from agent.records import Zoom, iou

ROOT = Path(__file__).resolve().parent.parent
TEST_MODELS = ROOT / "tests" / "models"
COMPLAINT = ("garbage", "banner", "construction")
DEFAULT_MODEL = ROOT / "models" / "civil-complaint.tflite"


def fractions(boxes: list, w: int, h: int) -> list[tuple[str, tuple[float, ...]]]:
    """A rendered scene's labels (class, pixel box) as (class, box in fractions)."""
    return [(b[0], (b[1] / w, b[2] / h, b[3] / w, b[4] / h)) for b in boxes]


# --- geometry, without a model ------------------------------------------------------

def test_letterbox_round_trip_maps_boxes_back_to_the_frame() -> None:
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[90:180, 320:480] = (0, 0, 255)  # a red block, BGR
    rgb, lb = letterbox(frame, 320, 320)
    assert rgb.shape == (320, 320, 3)
    assert lb.pad_y == 70 and lb.pad_x == 0 and lb.scale == 0.5
    assert tuple(rgb[0, 0]) == (114, 114, 114)  # grey bar
    assert tuple(rgb[70 + 60, 200]) == (255, 0, 0)  # the block, now RGB
    # the block's box in input-normalised coordinates maps back to its frame box
    box_in = np.array([[160 / 320, (70 + 45) / 320, 240 / 320, (70 + 90) / 320]])
    back = unletterbox(box_in, lb)[0]
    assert back == pytest.approx([0.5, 0.25, 0.75, 0.5], abs=1e-6)


def test_boxes_in_the_bars_are_clipped_to_the_frame() -> None:
    lb = Letterbox(0.5, 0, 70, 320, 320, 640, 360)
    out = unletterbox(np.array([[0.1, 0.0, 0.2, 0.1]]), lb)
    assert out[0][1] == 0.0 and out[0][3] == 0.0


def test_nms_is_class_aware() -> None:
    boxes = np.array([[0, 0, 1, 1], [0.05, 0, 1, 1], [0, 0, 1, 1.0], [2, 2, 3, 3]], float) / 3
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    keep = nms(boxes, scores, classes, iou=0.5, max_keep=10)
    assert list(keep) == [0, 2, 3]


def test_decode_grid_places_a_cell_prediction() -> None:
    g, c = 10, 3
    out = np.zeros((g, g, 5 + c), np.float32)
    out[4, 7] = [0.9, 0.5, 0.25, 0.2, 0.1, 0.1, 0.8, 0.1]  # row 4, column 7, class 1
    boxes, scores, classes = decode_grid(out, 0.3)
    assert len(boxes) == 1 and classes[0] == 1 and scores[0] == pytest.approx(0.72)
    cx, cy = (7 + 0.5) / 10, (4 + 0.25) / 10
    assert boxes[0] == pytest.approx([cx - 0.1, cy - 0.05, cx + 0.1, cy + 0.05])


# --- real int8 models ---------------------------------------------------------------

def shapes_scene(w: int = 320, h: int = 180) -> tuple[np.ndarray, dict[str, tuple[float, ...]]]:
    """A noisy frame with one square and one disc at known places (as fractions)."""
    rng = np.random.default_rng(5)
    img = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    s = w // 6
    x0, y0 = w // 8, h // 4
    cv2.rectangle(img, (x0, y0), (x0 + s, y0 + s), (40, 200, 240), -1)
    cx, cy, r = w * 3 // 4, h // 2, s // 2
    cv2.circle(img, (cx, cy), r, (230, 80, 40), -1)
    return img, {
        "square": (x0 / w, y0 / h, (x0 + s) / w, (y0 + s) / h),
        "disc": ((cx - r) / w, (cy - r) / h, (cx + r) / w, (cy + r) / h),
    }


@pytest.mark.parametrize("frame_size", [(320, 180), (320, 240)], ids=["16x9", "4x3"])
@pytest.mark.parametrize("name,layout", [("ssd_postprocess", "ssd_postprocess"),
                                         ("yolov5", "yolov5"), ("yolov8", "yolov8")])
def test_foreign_layouts_decode_to_the_drawn_shapes(name: str, layout: str,
                                                    frame_size: tuple[int, int]) -> None:
    det = Detector(TEST_MODELS / f"{name}_int8.tflite", TEST_MODELS / f"{name}.labels.txt",
                   threads=2, score_threshold=0.3, allow=None)
    assert det.layout == layout  # found from the model's outputs alone
    img, truth = shapes_scene(*frame_size)
    found = det.detect(img)
    for label, box in truth.items():
        best = max((iou(d.bbox, box) for d in found if d.label == label), default=0.0)
        assert best > 0.5, f"{name}: {label} not found where drawn (best IoU {best:.2f})"


def test_default_model_is_a_grid_detector_with_labels() -> None:
    det = Detector(DEFAULT_MODEL, threads=2)
    assert det.layout == "patrol_grid"
    assert det.labels[:3] == ["garbage", "banner", "construction"]
    assert det.in_w == det.in_h
    assert det.allow is None or "bin" not in det.allow


def test_default_model_finds_objects_in_scenes_it_never_saw() -> None:
    """At the agent's default threshold, on scenes from a seed stream no training used: most
    complaint objects at least 16 px tall (what a drive-by sees as it approaches) are found
    with IoU > 0.5 (0.81 measured), and most complaint detections are on a real object
    (0.70). 300 scenes: on 60 the second figure swung by 0.1 between models of equal
    accuracy."""
    from agent.simulate import render_training_scene

    det = Detector(DEFAULT_MODEL, threads=2, score_threshold=DetectorConfig().score_threshold,
                   allow=None)
    hits = total = on_object = reported = 0
    # stream 9: never used by training (2), evaluation (3) or drives (1)
    rng = np.random.default_rng(np.random.SeedSequence([2026, 9]))
    for _ in range(300):
        img, boxes = render_training_scene(rng, det.in_w, det.in_h)
        found = det.detect(img)
        h, w = img.shape[:2]
        rel = fractions(boxes, w, h)
        for label, box in rel:
            if label in COMPLAINT and (box[3] - box[1]) * h >= 16:
                total += 1
                hits += any(d.label == label and iou(d.bbox, box) > 0.5 for d in found)
        for d in found:
            if d.label in COMPLAINT:
                reported += 1
                on_object += any(iou(d.bbox, box) > 0.3 for _, box in rel)
    assert total >= 150
    assert hits / total >= 0.75, f"recall {hits}/{total}"
    assert on_object / reported >= 0.6, f"{on_object} of {reported} detections on an object"


def test_a_second_look_drops_most_false_alarms_and_keeps_real_objects() -> None:
    """Zoomed in on what the whole frame showed (events.confirm_score decides), on 640x360
    scenes from a seed stream no training used: most detections of a labelled object are
    found again, most detections on nothing labelled (a wall, a pole, a bush) are not."""
    from agent.simulate import render_training_scene

    det = Detector(DEFAULT_MODEL, threads=2)
    need = EventsConfig().confirm_score
    real: list[float] = []
    false: list[float] = []
    rng = np.random.default_rng(np.random.SeedSequence([2026, 9]))
    for _ in range(300):
        img, boxes = render_training_scene(rng, 640, 360)
        rel = fractions(boxes, 640, 360)
        for d in det.detect(img):
            if d.label not in COMPLAINT:
                continue
            if any(lb == d.label and iou(d.bbox, box) > 0.5 for lb, box in rel):
                real.append(det.second_look(img, d.bbox, d.label))
            elif all(iou(d.bbox, box) < 0.1 for _, box in rel):
                false.append(det.second_look(img, d.bbox, d.label))
    assert len(real) >= 100 and len(false) >= 30
    kept = sum(s >= need for s in real) / len(real)
    dropped = sum(s < need for s in false) / len(false)
    assert kept >= 0.8, f"only {kept:.0%} of {len(real)} real objects found again"
    assert dropped >= 0.7, f"only {dropped:.0%} of {len(false)} false alarms dropped"


def test_a_second_look_at_a_kept_zoom_scores_as_at_the_whole_frame() -> None:
    """A track's views after its best keep only a copy of their second look's square
    (agent/events.py); looking at that copy later must score as the whole frame did, for
    near objects (square of 4x the box) and far ones (square set by the zoom limit)."""
    from agent.simulate import render_training_scene

    det = Detector(DEFAULT_MODEL, threads=2)
    rng = np.random.default_rng(np.random.SeedSequence([2026, 12]))
    looked = 0
    sides = set()
    for _ in range(40):
        img, _ = render_training_scene(rng, 1280, 720)
        for d in det.detect(img)[:3]:
            z = det.zoom(img, d.bbox)
            kept = Zoom(z.image.copy(), z.seen)
            del z
            assert det.look(kept, d.label) == det.second_look(img, d.bbox, d.label)
            sides.add(kept.image.shape[0])
            looked += 1
    assert looked >= 30 and len(sides) >= 5


@pytest.mark.parametrize("bbox", [(0.0, 0.0, 0.01, 0.02), (0.9, 0.8, 1.0, 1.0),
                                  (0.0, 0.0, 1.0, 1.0), (0.5, 0.5, 0.5, 0.5)],
                         ids=["corner", "edge", "whole-frame", "empty"])
@pytest.mark.parametrize("size", [(360, 640), (48, 64)], ids=["640x360", "64x48"])
def test_a_second_look_stays_inside_the_frame(bbox: tuple[float, float, float, float],
                                              size: tuple[int, int]) -> None:
    det = Detector(DEFAULT_MODEL, threads=2)
    img = np.random.default_rng(3).integers(0, 255, (*size, 3), dtype=np.uint8)
    assert 0.0 <= det.second_look(img, bbox, "banner") <= 1.0


def test_labels_that_do_not_match_fail_at_start(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("garbage\nbanner\n")
    with pytest.raises(DetectorError,
                       match=r"labels \(2, read as one name per line\) do not match"):
        Detector(DEFAULT_MODEL, labels)


def test_unknown_class_in_config_fails_at_start() -> None:
    with pytest.raises(DetectorError, match="not among the model's labels"):
        Detector(DEFAULT_MODEL, allow=["garbage", "grafitti"])


def test_missing_truncated_and_non_detector_models_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="no such file"):
        Detector(tmp_path / "none.tflite")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(DEFAULT_MODEL.read_bytes()[:5000])
    with pytest.raises(DetectorError, match="not a usable TFLite model"):
        Detector(cut)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(DetectorError, match="not a usable TFLite model"):
        Detector(junk)


def test_a_classifier_is_refused_as_not_a_detector(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)))
    with pytest.raises(DetectorError, match=r"match no known detector layout.*is it a detector"):
        Detector(TEST_MODELS / "classifier_int8.tflite", labels)


def test_named_layout_must_match_the_model() -> None:
    with pytest.raises(DetectorError, match="do not have that layout"):
        Detector(DEFAULT_MODEL, layout="yolov8")


def test_broken_frame_is_refused_not_crashed_on() -> None:
    det = Detector(DEFAULT_MODEL, threads=1)
    with pytest.raises(ValueError, match="not a BGR frame"):
        det.detect(np.zeros((0, 0, 3), np.uint8))
    assert isinstance(det.detect(np.zeros((360, 640, 3), np.uint8)), list)


def test_the_runtime_asked_for_must_be_there(tmp_path: Path) -> None:
    """detector.runtime names the TFLite runtime; one that is not installed is one clear
    error (this machine has ai-edge-litert, not tflite-runtime)."""
    import importlib.util

    from agent.detector import DetectorError

    det = Detector(DEFAULT_MODEL, runtime="ai-edge-litert")
    assert det.layout == "patrol_grid"
    if importlib.util.find_spec("tflite_runtime") is None:
        with pytest.raises(DetectorError, match="no TFLite runtime: install tflite-runtime"):
            Detector(DEFAULT_MODEL, runtime="tflite-runtime")
