"""A published detector's contract, as a new user meets it: label maps in every form the
exporters write, preprocessing per model, and output layouts told apart or refused. Checked
with the project's real int8 test models (tests/models/README.md) and ``patrol-agent detect``
as a process."""

from __future__ import annotations

import json
import subprocess
import sys
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


# --- every layout against an independent reference decode, box by box ------------------------


def _reference(model: Path, frame: np.ndarray, layout: str, labels: list[str], *,
               stretch: bool, bgr: bool = False, transposed: bool = False,
               norm: tuple[float, float] | None = None, min_score: float = 0.3,
               iou_max: float = 0.45) -> list[tuple[str, tuple[float, ...]]]:
    """The model run and decoded here, written out plainly and apart from agent.detector:
    preprocessing by hand, the output read row by row, a plain NMS, boxes back to the frame."""
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(model), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    S_h, S_w = int(inp["shape"][1]), int(inp["shape"][2])
    h, w = frame.shape[:2]
    if stretch:
        sx, sy, px, py = S_w / w, S_h / h, 0, 0
        canvas = cv2.resize(frame, (S_w, S_h), interpolation=cv2.INTER_AREA)
    else:
        sx = sy = min(S_w / w, S_h / h)
        nw, nh = round(w * sx), round(h * sy)
        px, py = (S_w - nw) // 2, (S_h - nh) // 2
        canvas = np.full((S_h, S_w, 3), 114, np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    if not bgr:
        canvas = canvas[:, :, ::-1]
    x = canvas.astype(np.float32)
    if inp["dtype"] == np.float32:
        x = (x - norm[0]) / norm[1] if norm else x / 255.0
    elif inp["dtype"] == np.int8:
        x = x - 128
    it.set_tensor(inp["index"], x.astype(inp["dtype"])[None])
    it.invoke()

    def out(i: int) -> np.ndarray:
        d = it.get_output_details()[i]
        v = it.get_tensor(d["index"]).astype(np.float64)
        scale, zero = d["quantization"]
        return (v - zero) * scale if scale else v
    rows = []  # label, score, x1, y1, x2, y2 in the input's fractions
    if layout == "ssd_postprocess":
        ranks = [len(o["shape"]) for o in it.get_output_details()]
        boxes = out(ranks.index(3))[0]
        two = [i for i, r in enumerate(ranks) if r == 2]
        a, b = out(two[0])[0], out(two[1])[0]
        n = int(out(ranks.index(1))[0])
        classes, scores = (a, b) if np.all(a[:n] == np.round(a[:n])) else (b, a)
        for k in range(n):
            y1, x1, y2, x2 = boxes[k]
            rows.append((labels[int(classes[k])], scores[k], x1, y1, x2, y2))
    elif layout == "patrol_grid":
        g = out(0)[0]
        gh, gw = g.shape[:2]
        for gy in range(gh):
            for gx in range(gw):
                v = g[gy, gx]
                c = int(np.argmax(v[5:]))
                cx, cy, bw, bh = (gx + v[1]) / gw, (gy + v[2]) / gh, v[3], v[4]
                rows.append((labels[c], v[0] * v[5 + c], cx - bw / 2, cy - bh / 2,
                             cx + bw / 2, cy + bh / 2))
    else:
        t = out(0)[0]
        if layout == "yolov8" and not transposed:
            t = t.T
        for r in t:
            cx, cy, bw, bh = r[:4]
            if layout == "yolov5":
                c = int(np.argmax(r[5:]))
                s = r[4] * r[5 + c]
            else:
                c = int(np.argmax(r[4:]))
                s = r[4 + c]
            if max(cx, cy, bw, bh) > 2:  # in input pixels
                cx, bw, cy, bh = cx / S_w, bw / S_w, cy / S_h, bh / S_h
            rows.append((labels[c], s, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
    rows = sorted((r for r in rows if r[1] >= min_score), key=lambda r: -r[1])
    kept: list[tuple] = []
    for r in rows:
        if layout == "ssd_postprocess" or all(
                k[0] != r[0] or iou(k[2:], r[2:]) <= iou_max for k in kept):
            kept.append(r)
    result = []
    for label, _s, x1, y1, x2, y2 in kept:
        fx = [(v * S_w - px) / (sx * w) for v in (x1, x2)]
        fy = [(v * S_h - py) / (sy * h) for v in (y1, y2)]
        box = tuple(float(np.clip(v, 0, 1)) for v in (fx[0], fy[0], fx[1], fy[1]))
        if box[2] > box[0] and box[3] > box[1]:
            result.append((label, box))
    return result


@pytest.mark.parametrize("name,layout,stretch", [
    ("ssd_postprocess_int8", "ssd_postprocess", True),
    ("ssd_postprocess_int8", "ssd_postprocess", False),
    ("yolov5_int8", "yolov5", False),
    ("yolov8_int8", "yolov8", False),
    ("yolov5_int8", "yolov5", True),
])
def test_the_detectors_decode_is_the_reference_decode_box_by_box(name: str, layout: str,
                                                                 stretch: bool) -> None:
    model = TEST_MODELS / f"{name}.tflite"
    det = Detector(model, threads=1, score_threshold=0.3, max_detections=100,
                   resize="stretch" if stretch else "letterbox")
    for size in ((320, 180), (320, 240), (200, 300)):
        frame, _ = shapes_scene(*size)
        ours = sorted((d.label, d.bbox) for d in det.detect(frame))
        ref = sorted(_reference(model, frame, layout, det.labels, stretch=stretch))
        assert [label for label, _ in ours] == [label for label, _ in ref], (size, ours, ref)
        for (_, a), (_, b) in zip(ours, ref, strict=True):
            assert a == pytest.approx(b, abs=2e-3), (size, a, b)


def test_the_default_models_grid_decode_is_the_reference_decode_on_the_sample_drive() -> None:
    model = Path(__file__).resolve().parent.parent / "models" / "civil-complaint.tflite"
    det = Detector(model, threads=1, score_threshold=0.3, max_detections=100, allow=None)
    cap = cv2.VideoCapture(str(Path(__file__).resolve().parent.parent / "samples" / "drive"
                               / "video.mp4"))
    checked = 0
    for index in range(0, 600, 40):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        assert ok
        ours = sorted((d.label, d.bbox) for d in det.detect(frame))
        ref = sorted(_reference(model, frame, "patrol_grid", det.labels, stretch=False))
        assert [label for label, _ in ours] == [label for label, _ in ref], (index, ours, ref)
        for (_, a), (_, b) in zip(ours, ref, strict=True):
            assert a == pytest.approx(b, abs=2e-3), (index, a, b)
        checked += len(ours)
    cap.release()
    assert checked >= 5, "the drive's frames hold detections to compare"


def test_the_model_cards_real_photo_figures_are_the_models() -> None:
    """The card's false alarms on real photos are written by code; a retrained model with
    a stale card fails here (issue 14: every figure in the card comes from code)."""
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, str(root / "models" / "train" / "real_photos.py"),
                        str(root / "models" / "civil-complaint.tflite"), "--check"],
                       capture_output=True, text=True, timeout=300, cwd=root)
    assert r.returncode == 0, r.stderr[-1500:]


# --- models that differ only in their contract (tests/models/README.md: one trained network) ---


def _dets(det: Detector, frame: np.ndarray) -> list[tuple[str, float, tuple[float, ...]]]:
    return [(d.label, round(d.score, 4), tuple(round(v, 4) for v in d.bbox))
            for d in det.detect(frame)]


def test_a_transposed_yolov8_output_is_told_apart_by_its_labels() -> None:
    plain = Detector(TEST_MODELS / "yolov8_int8.tflite", threads=1, score_threshold=0.3)
    t = Detector(TEST_MODELS / "yolov8t_int8.tflite", TEST_MODELS / "yolov8t.labels.txt",
                 threads=1, score_threshold=0.3)
    assert t.layout == "yolov8" and t.num_classes == 2
    for size in ((320, 180), (240, 320)):
        frame, _ = shapes_scene(*size)
        assert _dets(t, frame) == _dets(plain, frame) != []
    with pytest.raises(DetectorError, match="carries no labels"):
        Detector(TEST_MODELS / "yolov8t_int8.tflite")


def test_a_bgr_model_sees_bgr() -> None:
    rgb = Detector(YOLO5, threads=1, score_threshold=0.3)
    bgr = Detector(TEST_MODELS / "yolov5_bgr_int8.tflite", threads=1, score_threshold=0.3,
                   preprocess=Preprocess(channels="bgr"))
    wrong = Detector(TEST_MODELS / "yolov5_bgr_int8.tflite", threads=1, score_threshold=0.3)
    frame, _ = shapes_scene()
    assert _dets(bgr, frame) == _dets(rgb, frame) != _dets(wrong, frame)


def test_a_float_model_gets_its_mean_and_std() -> None:
    det = Detector(TEST_MODELS / "yolov8_float32.tflite", threads=1, score_threshold=0.3,
                   preprocess=Preprocess(mean=(127.5,) * 3, std=(127.5,) * 3))
    frame, truth = shapes_scene()
    found = det.detect(frame)
    x = det.interp.get_tensor(det._in["index"])[0]
    img, _ = fit_input(frame, 128, 128, det.pre)
    assert x.dtype == np.float32 and np.allclose(x, (img.astype(np.float32) - 127.5) / 127.5)
    for label, box in truth.items():
        assert max(iou(d.bbox, box) for d in found if d.label == label) > 0.5


def test_an_int8_input_takes_pixels_minus_128() -> None:
    u8 = Detector(SSD, threads=1, score_threshold=0.3)
    i8 = Detector(TEST_MODELS / "ssd_int8input_int8.tflite", threads=1, score_threshold=0.3)
    frame, _ = shapes_scene()
    assert _dets(i8, frame) == _dets(u8, frame) != []


@pytest.mark.parametrize("name,layout,labels,kw", [
    ("yolov8t_int8", "yolov8", "yolov8t.labels.txt", {"transposed": True}),
    ("yolov5_bgr_int8", "yolov5", None, {"bgr": True}),
    ("yolov8_float32", "yolov8", None, {"norm": (127.5, 127.5)}),
    ("ssd_int8input_int8", "ssd_postprocess", None, {}),
])
def test_the_other_contracts_decode_as_the_reference_does(name: str, layout: str,
                                                         labels: str | None,
                                                         kw: dict) -> None:
    model = TEST_MODELS / f"{name}.tflite"
    pre = Preprocess(channels="bgr" if kw.get("bgr") else "rgb",
                     mean=(127.5,) * 3 if kw.get("norm") else None,
                     std=(127.5,) * 3 if kw.get("norm") else None)
    det = Detector(model, TEST_MODELS / labels if labels else None, threads=1,
                   score_threshold=0.3, max_detections=100, preprocess=pre)
    stretch = det.pre.resize == "stretch"
    for size in ((320, 180), (200, 300)):
        frame, _ = shapes_scene(*size)
        ours = sorted((d.label, d.bbox) for d in det.detect(frame))
        ref = sorted(_reference(model, frame, layout, det.labels, stretch=stretch, **kw))
        assert [label for label, _ in ours] == [label for label, _ in ref], (size, ours, ref)
        for (_, a), (_, b) in zip(ours, ref, strict=True):
            assert a == pytest.approx(b, abs=2e-3), (size, a, b)
