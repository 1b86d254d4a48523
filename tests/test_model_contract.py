"""A published detector's contract, as a new user meets it: label maps in every form the
exporters write, preprocessing per model, and output layouts told apart or refused. Checked
with the project's real int8 test models (tests/models/README.md) and ``patrol-agent detect``
as a process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.detector import Detector, DetectorError, Preprocess, fit_input, unletterbox
from agent.labelmap import LabelMapError, parse_label_map
from agent.records import iou
from tests.conftest import agent_cmd
from tests.test_detector import TEST_MODELS, shapes_scene

SSD = TEST_MODELS / "ssd_postprocess_int8.tflite"
YOLO5 = TEST_MODELS / "yolov5_int8.tflite"

# --- label maps, as exporters write them ----------------------------------------------------


@pytest.mark.parametrize("text,names", [
    ("person\nbicycle\ncar\n", ["person", "bicycle", "car"]),
    ("???\nperson\nbicycle\n", ["person", "bicycle"]),           # TF labelmap.txt
    ("background\nperson\nbicycle\n", ["person", "bicycle"]),
    ("1 person\n2 bicycle\n3 car\n", ["person", "bicycle", "car"]),  # TF ids from 1
    ("1: person\n2: bicycle\n", ["person", "bicycle"]),
    ("1\tperson\n2\tbicycle\n", ["person", "bicycle"]),
    ("0 person\n1 bicycle\n", ["person", "bicycle"]),               # Ultralytics ids from 0
    ("1 person\n2 bicycle\n4 car\n", ["person", "bicycle", "class_2", "car"]),  # COCO gaps
    ("2 bicycle\n1 person\n", ["person", "bicycle"]),                 # any order
    ("0 background\n1 person\n2 bicycle\n", ["person", "bicycle"]),
    ('item {\n  name: "/m/01g317"\n  id: 1\n  display_name: "person"\n}\n'
     'item {\n  name: "/m/0199g"\n  id: 2\n  display_name: "bicycle"\n}\n',
     ["person", "bicycle"]),
    ("item { id: 1 name: 'square' }\nitem { id: 3 name: 'disc' }\n",
     ["square", "class_1", "disc"]),
], ids=["lines", "tf-???", "background", "ids-space", "ids-colon", "ids-tab", "ids-from-0",
        "ids-gaps", "ids-unordered", "ids-background", "pbtxt", "pbtxt-gap"])
def test_every_label_map_form_keeps_its_ids(text: str, names: list[str]) -> None:
    assert parse_label_map(text).as_list() == names


def test_label_offset_overrides_the_guess() -> None:
    assert parse_label_map("1 person\n2 bicycle\n", offset=0).as_list() == [
        "class_0", "person", "bicycle"]


@pytest.mark.parametrize("text,why", [
    ("", "empty"), ("???\n", "only a background"), ("1 a\n1 b\n", "more than once"),
    ("1 a\n2 b\nthree\n", "has no id"), ("item { name: 'x' }", "no numeric id"),
])
def test_a_label_map_that_cannot_be_read_says_why(text: str, why: str) -> None:
    with pytest.raises(LabelMapError, match=why):
        parse_label_map(text)


# --- label maps on real models ----------------------------------------------------------------


def _found(det: Detector) -> dict[str, float]:
    img, truth = shapes_scene(320, 180)
    dets = det.detect(img)
    return {label: max((iou(d.bbox, box) for d in dets if d.label == label), default=0.0)
            for label, box in truth.items()}


@pytest.mark.parametrize("labels", [
    "???\nsquare\ndisc\n",
    "1 square\n2 disc\n",
    'item {\n  id: 1\n  name: "shape/square"\n  display_name: "square"\n}\n'
    'item {\n  id: 2\n  display_name: "disc"\n}\n',
], ids=["tf-labelmap-txt", "ids", "pbtxt"])
def test_a_tf_style_label_map_names_the_ssd_models_classes_right(tmp_path: Path,
                                                                 labels: str) -> None:
    path = tmp_path / ("labels.pbtxt" if "item" in labels else "labels.txt")
    path.write_text(labels)
    det = Detector(SSD, path, threads=2, score_threshold=0.3, resize="letterbox")
    assert det.labels == ["square", "disc"]
    assert all(v > 0.5 for v in _found(det).values()), _found(det)


def test_labels_that_disagree_with_the_model_fail_naming_the_mismatch(tmp_path: Path) -> None:
    three = tmp_path / "three.txt"
    three.write_text("square\ndisc\ntriangle\n")
    with pytest.raises(DetectorError, match=r"labels \(3, read as one name per line\) do not "
                       r"match the model yolov5_int8.tflite, whose yolov5 output has 2 classes"):
        Detector(YOLO5, three, layout="yolov5")
    four = tmp_path / "four.txt"
    four.write_text("0 background\n1 square\n2 disc\n3 star\n4 heart\n")
    with pytest.raises(DetectorError, match=r"output \[1, 256, 7\] is YOLOv5 with 2 classes or "
                       r"YOLOv8/11 transposed with 3, and the labels name 4"):
        Detector(YOLO5, four)
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("0 background\n1 square\n2 disc\n3 star\n")
    with pytest.raises(DetectorError, match="3, read as lines with ids, a background entry"):
        Detector(YOLO5, shifted, layout="yolov5")
    # Ids that leave the last class unnamed are a gap, not a mismatch.
    gap = tmp_path / "gap.txt"
    gap.write_text("0 square\n")
    assert Detector(YOLO5, gap, layout="yolov5").labels == ["square", "class_1"]


# --- preprocessing --------------------------------------------------------------------------


def test_stretch_maps_boxes_back_to_the_frame() -> None:
    frame = np.zeros((180, 320, 3), np.uint8)
    img, lb = fit_input(frame, 128, 128, Preprocess(resize="stretch"))
    assert img.shape == (128, 128, 3) and (lb.pad_x, lb.pad_y) == (0, 0)
    box = np.array([[0.25, 0.5, 0.75, 1.0]])  # in the model input
    assert unletterbox(box, lb) == pytest.approx(box)  # stretched: the same fractions


def test_channel_order_and_interpolation_reach_the_model_input() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:, :, 0] = 200  # blue in OpenCV's BGR
    rgb, _ = fit_input(frame, 32, 32, Preprocess())
    bgr, _ = fit_input(frame, 32, 32, Preprocess(channels="bgr", interpolation="nearest"))
    assert rgb[0, 0].tolist() == [0, 0, 200] and bgr[0, 0].tolist() == [200, 0, 0]


def test_ssd_models_are_stretched_and_yolo_letterboxed_unless_the_config_says(
        tmp_path: Path) -> None:
    assert Detector(SSD, threads=1).pre.resize == "stretch"
    assert Detector(YOLO5, threads=1).pre.resize == "letterbox"
    assert Detector(SSD, threads=1, resize="letterbox").pre.resize == "letterbox"


def test_mean_and_std_map_through_the_inputs_quantisation() -> None:
    """The test models take raw pixels (uint8, scale 1/255, zero 0): mean 0, std 255 is
    the identity, and detection is the same as with no normalisation set."""
    plain = Detector(YOLO5, threads=1, score_threshold=0.3)
    norm = Detector(YOLO5, threads=1, score_threshold=0.3,
                    preprocess=Preprocess(mean=(0, 0, 0), std=(255, 255, 255)))
    img, _ = shapes_scene()
    a, b = plain.detect(img), norm.detect(img)
    assert [(d.label, round(d.score, 3)) for d in a] == [(d.label, round(d.score, 3)) for d in b]
    # A wrong normalisation is not silently the same.
    wrong = Detector(YOLO5, threads=1, score_threshold=0.3,
                     preprocess=Preprocess(mean=(127.5,) * 3, std=(127.5,) * 3))
    assert [(d.label, round(d.score, 3)) for d in wrong.detect(img)] != [
        (d.label, round(d.score, 3)) for d in a]


def test_a_named_efficientdet_lite_layout_is_the_ssd_op() -> None:
    assert Detector(SSD, threads=1, layout="efficientdet_lite").layout == "ssd_postprocess"


# --- patrol-agent detect, as a new user runs it ---------------------------------------------


def test_detect_json_gives_each_detections_label_score_and_pixel_box(tmp_path: Path) -> None:
    img, truth = shapes_scene(320, 180)
    photo = tmp_path / "shapes.png"
    cv2.imwrite(str(photo), img)
    r = subprocess.run(agent_cmd("detect", str(photo), "--model", str(YOLO5), "--labels",
                                 str(TEST_MODELS / "yolov5.labels.txt"), "--json",
                                 "--draw", str(tmp_path / "drawn")),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 1 and lines[0]["image"] == str(photo)
    assert (lines[0]["width"], lines[0]["height"]) == (320, 180)
    by_label = {d["label"]: d for d in lines[0]["detections"]}
    for label, (x1, y1, x2, y2) in truth.items():
        box = by_label[label]["box"]
        assert all(isinstance(v, int) for v in box)
        drawn = (x1 * 320, y1 * 180, x2 * 320, y2 * 180)
        assert iou(tuple(v / s for v, s in zip(box, (320, 180, 320, 180), strict=True)),
                   tuple(v / s for v, s in zip(drawn, (320, 180, 320, 180), strict=True))
                   ) > 0.5
        assert 0.3 < by_label[label]["score"] <= 1
    assert list((tmp_path / "drawn").glob("*.jpg")), "--draw writes the frame with its boxes"


def test_detect_refuses_a_model_that_does_not_fit_with_one_line(tmp_path: Path) -> None:
    labels = tmp_path / "l.txt"
    labels.write_text("a\nb\nc\nd\n")
    r = subprocess.run(agent_cmd("detect", str(tmp_path), "--model", str(YOLO5), "--labels",
                                 str(labels), "--json"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "the labels name 4" in r.stderr
    assert "Traceback" not in r.stderr
