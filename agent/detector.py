"""The int8 TFLite detector: preprocessing, inference and the common output layouts.

Everything about the model is read from the model itself: input size, layout
(NHWC), input dtype and quantization, output tensors. Frames are letterboxed
(aspect kept, grey 114 bars, as YOLO and the project's own model are trained),
and the outputs of these layouts are decoded:

``ssd_postprocess``
    the ``TFLite_Detection_PostProcess`` op: boxes [1,N,4] (ymin, xmin, ymax,
    xmax, normalised), classes [1,N], scores [1,N], count [1]. SSD MobileNet,
    EfficientDet-Lite, TF Object Detection API and Model Maker exports.
``yolov5``
    one tensor [1, N, 5+C]: cx, cy, w, h, objectness, C class scores.
``yolov8``
    one tensor [1, 4+C, N]: cx, cy, w, h, C class scores (YOLOv8 / YOLO11), or the same
    transposed, [1, N, 4+C]. That shape is also a YOLOv5 output with one class fewer:
    the labels' count tells them apart, and without labels it is refused.
``patrol_grid``
    the project's own model: one tensor [1, G, G, 5+C] of sigmoids per grid
    cell: objectness, cx and cy within the cell, w and h as fractions of the
    input, C class probabilities (see models/MODEL_CARD.md).

YOLO boxes may be in input pixels or normalised (exporters differ); that is
told apart from the values. Class-aware NMS for the YOLO and grid layouts is
done here in numpy; the SSD op does its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from agent.labelmap import LabelMap, LabelMapError, parse_label_map, read_label_map
from agent.records import Box, Detection, Zoom, iou
from agent.tflite_metadata import MetadataError, input_normalization

log = logging.getLogger("detector")

Layout = Literal["auto", "ssd_postprocess", "efficientdet_lite", "yolov5", "yolov8",
                 "patrol_grid"]
# Model Maker's EfficientDet-Lite ends in the same post-processing op as SSD.
_ALIASES = {"efficientdet_lite": "ssd_postprocess"}
LAYOUTS: tuple[str, ...] = ("ssd_postprocess", "yolov5", "yolov8", "patrol_grid")
PAD_VALUE = 114
# Below this, a candidate is not worth the NMS work whatever the per-class thresholds say.
MIN_CANDIDATE_SCORE = 0.05
# A second look (see Detector.second_look) shows the object with this much of its
# surroundings: the crop's side is this many times the box's longer side...
ZOOM_CONTEXT = 4.0
# ...magnified at most this much over the whole-frame view: the default model's zoom-in
# training crops went up to 320/96 = 3.3x, and further in, objects turn to blur it never saw.
MAX_ZOOM = 3.2
# How much a box found on the second look must overlap the first one to be the same object.
SECOND_LOOK_IOU = 0.3


def zoom_in(image: np.ndarray, bbox: Box, input_size: tuple[int, int]) -> Zoom:
    """The square of ``image`` that a second look shows a model of ``input_size`` (w, h)
    for the object at ``bbox`` (fractions of ``image``): ``ZOOM_CONTEXT`` times the box's
    longer side, but at least what magnifies it ``MAX_ZOOM`` times over the whole frame's
    view, and at most the frame's shorter side. A view into ``image``, not a copy."""
    in_w, in_h = input_size
    h, w = image.shape[:2]
    x1, y1, x2, y2 = bbox[0] * w, bbox[1] * h, bbox[2] * w, bbox[3] * h
    whole = min(in_w / w, in_h / h)  # the letterbox scale of the full frame
    least = min(in_w, in_h) / (MAX_ZOOM * whole)
    side = round(min(w, h, max(least, ZOOM_CONTEXT * max(x2 - x1, y2 - y1))))
    x0 = int(np.clip((x1 + x2 - side) / 2, 0, w - side))
    y0 = int(np.clip((y1 + y2 - side) / 2, 0, h - side))
    seen = ((x1 - x0) / side, (y1 - y0) / side, (x2 - x0) / side, (y2 - y0) / side)
    return Zoom(image[y0:y0 + side, x0:x0 + side], seen)


class DetectorError(Exception):
    """The model or its labels cannot be used; the message says why."""


Runtime = Literal["auto", "ai-edge-litert", "tflite-runtime"]


def load_interpreter(path: Path, threads: int, runtime: Runtime = "auto") -> Any:
    """A TFLite Interpreter from ai-edge-litert, or tflite-runtime where that is the one
    installed (``auto``) or asked for.

    ai-edge-litert is the default: its int8 kernels (XNNPACK) ran the default model 20
    times faster than tflite-runtime 2.14's at one thread here. tflite-runtime is for
    images where ai-edge-litert cannot run: older ones, and arm64 under qemu-user
    emulation, where ai-edge-litert's build crashes the process as it loads
    (provisioning/prove-on-arm64.sh).
    """
    Interpreter: Any = None
    if runtime in ("auto", "ai-edge-litert"):
        with contextlib.suppress(ImportError):
            from ai_edge_litert.interpreter import Interpreter
    if Interpreter is None and runtime in ("auto", "tflite-runtime"):
        with contextlib.suppress(ImportError):
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    if Interpreter is None:
        wanted = {"auto": "ai-edge-litert (or tflite-runtime on older images)",
                  "ai-edge-litert": "ai-edge-litert",
                  "tflite-runtime": "tflite-runtime (pip install 'patrol-agent[tflite]')"}
        raise DetectorError(f"no TFLite runtime: install {wanted[runtime]} "
                            f"(detector.runtime = {runtime!r})")
    if not path.is_file():
        raise DetectorError(f"model {path}: no such file")
    try:
        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DetectorError(f"model {path} is not a usable TFLite model (truncated or corrupt?): "
                            f"{first}") from None
    return interp


def read_labels(path: Path, offset: int | None = None) -> list[str]:
    """Class names by output index, from any label map form (agent/labelmap.py)."""
    return _label_map(path, offset).as_list()


def _label_map(path: Path, offset: int | None = None) -> LabelMap:
    try:
        return read_label_map(path, offset)
    except LabelMapError as e:
        raise DetectorError(str(e)) from None


def embedded_labels(path: Path, offset: int | None = None) -> LabelMap | None:
    """Labels packed into the .tflite as metadata (a zip appended to the flatbuffer,
    as Model Maker and the TFLite metadata writer do)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".txt") and "label" in n.lower()]
            if not names:
                return None
            text = z.read(names[0]).decode("utf-8")
    except (zipfile.BadZipFile, OSError, KeyError, UnicodeDecodeError):
        return None
    try:
        return parse_label_map(text, f"labels inside {path.name}", offset)
    except LabelMapError:
        return None


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the model input, to map boxes back."""

    scale: float  # the horizontal scale; the same both ways unless stretched
    pad_x: float
    pad_y: float
    in_w: int
    in_h: int
    src_w: int
    src_h: int
    scale_y: float | None = None

    @property
    def sy(self) -> float:
        return self.scale if self.scale_y is None else self.scale_y

    def to_input(self, x1: float, y1: float, x2: float, y2: float
                 ) -> tuple[float, float, float, float]:
        """A box in frame pixels -> in model input pixels (where training labels live)."""
        return (x1 * self.scale + self.pad_x, y1 * self.sy + self.pad_y,
                x2 * self.scale + self.pad_x, y2 * self.sy + self.pad_y)


@dataclass(frozen=True)
class Preprocess:
    """A model's input contract (config ``[detector.input]``; see DetectorInputConfig)."""

    resize: Literal["letterbox", "stretch"] = "letterbox"
    interpolation: Literal["auto", "nearest", "linear", "area", "cubic"] = "auto"
    channels: Literal["rgb", "bgr"] = "rgb"
    mean: tuple[float, ...] | None = None  # one value, or one per channel
    std: tuple[float, ...] | None = None


_INTERPOLATION = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR,
                  "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


def fit_input(image: np.ndarray, in_w: int, in_h: int, pre: Preprocess = Preprocess()
              ) -> tuple[np.ndarray, Letterbox]:
    """The BGR frame as the model's uint8 input image (its size, its channel order)."""
    h, w = image.shape[:2]
    if pre.resize == "stretch":
        sx, sy = in_w / w, in_h / h
        nw, nh, px, py = in_w, in_h, 0, 0
    else:
        sx = sy = min(in_w / w, in_h / h)
        nw, nh = max(1, round(w * sx)), max(1, round(h * sy))
        px, py = (in_w - nw) // 2, (in_h - nh) // 2
    interp = (_INTERPOLATION[pre.interpolation] if pre.interpolation != "auto"
              else cv2.INTER_AREA if min(sx, sy) < 1 else cv2.INTER_LINEAR)
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    if pre.channels == "rgb":
        resized = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    if pre.resize == "stretch":
        return resized, Letterbox(sx, 0, 0, in_w, in_h, w, h, sy)
    out = np.full((in_h, in_w, 3), PAD_VALUE, np.uint8)
    out[py:py + nh, px:px + nw] = resized
    return out, Letterbox(sx, px, py, in_w, in_h, w, h)


def letterbox(image: np.ndarray, in_w: int, in_h: int) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centred, grey bars; returns the RGB input image."""
    return fit_input(image, in_w, in_h)


def unletterbox(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Boxes x1,y1,x2,y2 normalised to the model input -> normalised to the frame, clipped."""
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    b = boxes.astype(np.float64).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] * lb.in_w - lb.pad_x) / (lb.scale * lb.src_w)
    b[:, [1, 3]] = (b[:, [1, 3]] * lb.in_h - lb.pad_y) / (lb.sy * lb.src_h)
    return np.clip(b, 0.0, 1.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float,
        max_keep: int) -> np.ndarray:
    """Greedy class-aware non-maximum suppression; returns the kept indices, best first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # Offsetting each class far apart makes one pass class-aware.
    off = boxes + (classes.astype(np.float64) * 4.0)[:, None]
    x1, y1, x2, y2 = off.T
    area = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-12)
        order = rest[ov <= iou]
    return np.array(keep, np.int64)


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    cx, cy, w, h = b.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _normalise_pixels(xyxy: np.ndarray, in_w: int, in_h: int) -> np.ndarray:
    """Exporters give YOLO boxes in input pixels or already normalised: tell from the values."""
    if xyxy.size and float(np.max(np.abs(xyxy))) > 2.0:
        return xyxy / np.array([in_w, in_h, in_w, in_h], np.float64)
    return xyxy


# boxes x1,y1,x2,y2 normalised to the model input; scores; class ids
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def decode_yolov5(out: np.ndarray, in_w: int, in_h: int, min_score: float) -> Candidates:
    """[N, 5+C]: cx, cy, w, h, objectness, class scores."""
    obj = out[:, 4]
    cls = out[:, 5:]
    c = np.argmax(cls, axis=1)
    s = obj * cls[np.arange(len(cls)), c]
    m = s >= min_score
    boxes = _normalise_pixels(_xywh_to_xyxy(out[m, :4].astype(np.float64)), in_w, in_h)
    return boxes, s[m], c[m]


def decode_yolov8(out: np.ndarray, in_w: int, in_h: int, min_score: float) -> Candidates:
    """[4+C, N]: cx, cy, w, h, class scores (no objectness)."""
    t = out.T
    cls = t[:, 4:]
    c = np.argmax(cls, axis=1)
    s = cls[np.arange(len(cls)), c]
    m = s >= min_score
    boxes = _normalise_pixels(_xywh_to_xyxy(t[m, :4].astype(np.float64)), in_w, in_h)
    return boxes, s[m], c[m]


def decode_grid(out: np.ndarray, min_score: float) -> Candidates:
    """[G, G, 5+C] sigmoids: objectness, cx/cy in the cell, w/h of the input, class probs."""
    gh, gw = out.shape[:2]
    flat = out.reshape(gh * gw, -1)
    obj = flat[:, 0]
    cls = flat[:, 5:]
    c = np.argmax(cls, axis=1)
    s = obj * cls[np.arange(len(cls)), c]
    m = np.flatnonzero(s >= min_score)
    gy, gx = np.divmod(m, gw)
    cx = (gx + flat[m, 1]) / gw
    cy = (gy + flat[m, 2]) / gh
    xywh = np.stack([cx, cy, flat[m, 3], flat[m, 4]], axis=1).astype(np.float64)
    return _xywh_to_xyxy(xywh), s[m], c[m]


@dataclass
class DetectorTimings:
    """Milliseconds of the last frame, for health reporting and the benchmark."""

    preprocess_ms: float = 0.0
    invoke_ms: float = 0.0
    postprocess_ms: float = 0.0


@dataclass
class _Outputs:
    layout: str
    index: dict[str, int] = field(default_factory=dict)


class Detector:
    """Runs one int8 TFLite detector on BGR frames and returns Detections."""

    def __init__(self, model: str | Path, labels: str | Path | None = None, threads: int = 4,
                 runtime: Runtime = "auto",
                 layout: Layout = "auto", score_threshold: float = 0.5,
                 class_thresholds: dict[str, float] | None = None,
                 allow: Sequence[str] | None = None, iou_threshold: float = 0.45,
                 max_detections: int = 50, preprocess: Preprocess | None = None,
                 resize: Literal["auto", "letterbox", "stretch"] = "auto",
                 label_offset: int | None = None) -> None:
        self.model_path = Path(model)
        self._label_offset = label_offset
        self.interp = load_interpreter(self.model_path, threads, runtime)
        inp = self.interp.get_input_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4 or inp[0]["shape"][3] != 3:
            shapes = [list(d["shape"]) for d in inp]
            raise DetectorError(f"model {self.model_path} takes {shapes}, not one NHWC "
                                f"3-channel image: not an image detector")
        self._in = inp[0]
        self.in_h, self.in_w = int(inp[0]["shape"][1]), int(inp[0]["shape"][2])
        self._outs = self.interp.get_output_details()
        self._transposed = False  # yolov8 given as [1, N, 4+C]
        self.label_map = self._load_labels(labels)
        self.labels = self.label_map.as_list()
        self.layout = self._find_layout(_ALIASES.get(layout, layout))  # type: ignore[arg-type]
        self._check_labels()
        pre = preprocess or Preprocess()
        if resize == "auto":
            resize = "stretch" if self.layout == "ssd_postprocess" else "letterbox"
        mean, std = pre.mean, pre.std
        if mean is None and std is None and self._in["dtype"] == np.float32:
            # a float input's normalisation is the model's to say (its metadata); the
            # config sets it only for models that do not (quantised inputs carry theirs)
            try:
                norm = input_normalization(self.model_path)
            except MetadataError as e:
                raise DetectorError(f"model {self.model_path.name}: its metadata cannot be "
                                    f"read: {e}; set detector.input mean and std") from None
            if norm is not None:
                mean, std = norm.mean, norm.std
                log.info("model %s: input normalisation from its metadata: mean %s, std %s",
                         self.model_path.name, list(mean), list(std))
        self.pre = Preprocess(resize, pre.interpolation, pre.channels, mean, std)
        self._check_input()
        self.set_filters(score_threshold, class_thresholds, allow, iou_threshold, max_detections)
        self.timings = DetectorTimings()
        self._ssd_order: tuple[int, int] | None = None
        log.info("model %s: %s layout%s, input %dx%d %s %s, %s, %d classes (labels: %s), "
                 "%d threads", self.model_path.name, self.layout,
                 " (transposed)" if self._transposed else "", self.in_w, self.in_h,
                 np.dtype(self._in["dtype"]).name, self.pre.channels.upper(), self.pre.resize,
                 len(self.labels), self.label_map.describe(), threads)

    def set_filters(self, score_threshold: float, class_thresholds: dict[str, float] | None,
                    allow: Sequence[str] | None, iou_threshold: float, max_detections: int
                    ) -> None:
        """What is kept of the model's output; may change between frames (remote config).
        DetectorError when a class named is not among the model's labels."""
        unknown = [c for c in [*(class_thresholds or {}), *(allow or [])]
                   if c not in self.labels]
        if unknown:
            raise DetectorError(f"classes {unknown} are not among the model's labels "
                                f"{self.labels}")
        self.class_thresholds = dict(class_thresholds or {})
        self.allow = set(allow) if allow else None
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    # --- set-up -------------------------------------------------------------

    def _load_labels(self, labels: str | Path | None) -> LabelMap:
        if labels is not None:
            return _label_map(Path(labels), self._label_offset)
        side = self.model_path.with_suffix(".labels.txt")
        if side.is_file():
            return _label_map(side, self._label_offset)
        packed = embedded_labels(self.model_path, self._label_offset)
        if packed:
            return packed
        raise DetectorError(f"model {self.model_path} carries no labels and none were given "
                            f"(detector.labels, or {side.name} beside the model)")

    def _find_layout(self, wanted: Layout) -> str:
        shapes = [tuple(int(x) for x in o["shape"]) for o in self._outs]
        found = _layout_from_shapes(shapes)
        if found == "yolov5" and wanted in ("auto", "yolov8"):
            # [1, N, K]: YOLOv5 with K-5 classes, or YOLOv8/11 transposed with K-4.
            k, n = shapes[0][2], len(self.labels)
            if wanted == "yolov8" or (wanted == "auto" and n == k - 4):
                self._transposed = True
                return "yolov8"
            if wanted == "auto" and n != k - 5:
                raise DetectorError(
                    f"model {self.model_path}: output {list(shapes[0])} is YOLOv5 with {k - 5} "
                    f"classes or YOLOv8/11 transposed with {k - 4}, and the labels name {n}: "
                    "give the model's labels, or set detector.layout")
        if wanted == "auto":
            if found is None:
                raise DetectorError(
                    f"model {self.model_path}: outputs {shapes} match no known detector layout "
                    f"({', '.join(LAYOUTS)}); is it a detector? set detector.layout if it is")
            return found
        if found != wanted:
            raise DetectorError(f"model {self.model_path}: detector.layout = {wanted!r} but its "
                                f"outputs {shapes} do not have that layout")
        return wanted

    def _check_labels(self) -> None:
        n = self.num_classes
        if n is None:
            return
        named = len(self.labels)
        gaps = self.label_map.form != "lines"  # ids may leave the last classes unnamed
        if named > n or (named < n and not gaps):
            raise DetectorError(
                f"labels ({named}, read as {self.label_map.describe()}) do not match the model "
                f"{self.model_path.name}, whose {self.layout} output has {n} classes")
        if named < n:
            self.labels += [f"class_{i}" for i in range(named, n)]

    def _check_input(self) -> None:
        dt, (scale, _zero) = self._in["dtype"], self._in.get("quantization", (0.0, 0))
        if dt not in (np.uint8, np.int8, np.float32):
            raise DetectorError(f"model {self.model_path.name} takes {np.dtype(dt).name} "
                                "input; uint8, int8 or float32 images are supported")
        if (self.pre.mean is not None or self.pre.std is not None) and dt != np.float32 \
                and not scale:
            raise DetectorError(f"model {self.model_path.name}: detector.input mean/std are set "
                                f"but its {np.dtype(dt).name} input has no quantisation to "
                                "map them with")

    @property
    def num_classes(self) -> int | None:
        s = [int(x) for x in self._outs[0]["shape"]]
        if self.layout == "yolov5":
            return s[2] - 5
        if self.layout == "yolov8":
            return (s[2] if self._transposed else s[1]) - 4
        if self.layout == "patrol_grid":
            return s[3] - 5
        return None  # the SSD op's class count is not in its output shapes

    # --- inference ----------------------------------------------------------

    def _set_input(self, img: np.ndarray) -> None:
        dt = self._in["dtype"]
        p = self.pre
        x: np.ndarray
        if p.mean is None and p.std is None:
            if dt == np.uint8:
                x = img
            elif dt == np.int8:
                x = (img.astype(np.int16) - 128).astype(np.int8)
            else:  # float models: [0, 1], as YOLO and most exports expect
                x = img.astype(np.float32) / 255.0
        else:
            mean = np.asarray(p.mean if p.mean is not None else 0.0, np.float32)
            std = np.asarray(p.std if p.std is not None else 1.0, np.float32)
            real = (img.astype(np.float32) - mean) / std
            if dt == np.float32:
                x = real
            else:
                scale, zero = self._in["quantization"]
                info = np.iinfo(dt)
                x = np.clip(np.round(real / scale + zero), info.min, info.max).astype(dt)
        self.interp.set_tensor(self._in["index"], x[None])

    def _output(self, i: int) -> np.ndarray:
        d = self._outs[i]
        raw = self.interp.get_tensor(d["index"])
        scale, zero = d.get("quantization", (0.0, 0))
        if raw.dtype in (np.int8, np.uint8, np.int16) and scale:
            return (raw.astype(np.float32) - zero) * scale
        return raw.astype(np.float32)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Detections in one BGR frame, best first; boxes as fractions of the frame."""
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise ValueError(f"not a BGR frame: shape {getattr(image, 'shape', None)}")
        t0 = time.perf_counter()
        img, lb = fit_input(image, self.in_w, self.in_h, self.pre)
        self._set_input(img)
        t1 = time.perf_counter()
        self.interp.invoke()
        t2 = time.perf_counter()
        dets = self._decode(lb)
        t3 = time.perf_counter()
        self.timings = DetectorTimings((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)
        return dets

    def _decode(self, lb: Letterbox) -> list[Detection]:
        floor = min([self.score_threshold, *self.class_thresholds.values(), 1.0])
        floor = max(MIN_CANDIDATE_SCORE, floor)
        if self.layout == "ssd_postprocess":
            boxes, scores, classes = self._decode_ssd(floor)
        else:
            if self.layout == "yolov5":
                boxes, scores, classes = decode_yolov5(self._output(0)[0], self.in_w,
                                                       self.in_h, floor)
            elif self.layout == "yolov8":
                out = self._output(0)[0]
                boxes, scores, classes = decode_yolov8(out.T if self._transposed else out,
                                                       self.in_w, self.in_h, floor)
            else:
                boxes, scores, classes = decode_grid(self._output(0)[0], floor)
            keep = nms(boxes, scores, classes, self.iou_threshold, self.max_detections)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        frame_boxes = unletterbox(boxes, lb)
        out = []
        for b, s, c in zip(frame_boxes, scores, classes, strict=True):
            ci = int(c)
            label = self.labels[ci] if 0 <= ci < len(self.labels) else f"class_{ci}"
            if self.allow is not None and label not in self.allow:
                continue
            if s < self.class_thresholds.get(label, self.score_threshold):
                continue
            if b[2] - b[0] <= 0 or b[3] - b[1] <= 0:
                continue  # entirely in the letterbox bars
            out.append(Detection(label, ci, float(s),
                                 (float(b[0]), float(b[1]), float(b[2]), float(b[3]))))
        out.sort(key=lambda d: -d.score)
        return out

    def second_look(self, image: np.ndarray, bbox: Box, label: str) -> float:
        """Zoom in on ``bbox`` (fractions of ``image``) and detect again: the best score of
        a ``label`` box there that overlaps it, 0 if none (:meth:`zoom`, then :meth:`look`).

        A whole frame shrunk to the model's input leaves a far object a few pixels; a
        square crop around it (``ZOOM_CONTEXT`` times its size, magnified at most
        ``MAX_ZOOM``) gives the model several times the pixels, so it can tell a banner
        from a patch of wall that looked like one from afar."""
        return self.look(self.zoom(image, bbox), label)

    def zoom(self, image: np.ndarray, bbox: Box) -> Zoom:
        """What :meth:`look` is to be shown of ``bbox`` in ``image``, for this model's input
        (a view into ``image``, not a copy)."""
        return zoom_in(image, bbox, (self.in_w, self.in_h))

    def look(self, zoom: Zoom, label: str) -> float:
        """The best score of a ``label`` box in ``zoom`` that overlaps the object's, 0 if none."""
        best = 0.0
        for d in self.detect(zoom.image):
            if d.label == label and d.score > best and iou(d.bbox, zoom.seen) >= SECOND_LOOK_IOU:
                best = d.score
        return best

    def _decode_ssd(self, floor: float) -> Candidates:
        shapes = [tuple(o["shape"]) for o in self._outs]
        bi = next(i for i, s in enumerate(shapes) if len(s) == 3 and s[2] == 4)
        ci_ = next(i for i, s in enumerate(shapes) if len(s) == 1 or int(np.prod(s)) == 1)
        pair = [i for i, s in enumerate(shapes) if len(s) == 2]
        n = int(self._output(ci_).reshape(-1)[0])
        n = max(0, min(n, int(shapes[pair[0]][1])))
        # Rows past the count are uninitialised memory: cut before looking or casting.
        a, b = self._output(pair[0])[0][:n], self._output(pair[1])[0][:n]
        if self._ssd_order is None and n > 0:
            self._ssd_order = _tell_classes_from_scores(self._outs, pair, a, b)
        cls_i, sc_i = self._ssd_order or (pair[0], pair[1])
        classes = (a if cls_i == pair[0] else b).astype(np.int64)
        scores = b if sc_i == pair[1] else a
        yxyx = self._output(bi)[0][:n].astype(np.float64)
        boxes = yxyx[:, [1, 0, 3, 2]]
        m = scores >= floor
        return boxes[m], scores[m], classes[m]


def _tell_classes_from_scores(outs: list[dict[str, Any]], pair: list[int], a: np.ndarray,
                              b: np.ndarray) -> tuple[int, int] | None:
    """Which [1,N] output is classes and which scores. Names first (TF1 exports name
    them :1 and :2), then values (class ids are whole numbers and may exceed 1);
    None while undecidable (e.g. all zeros), which then falls back to op order."""
    names = [str(outs[i].get("name", "")) for i in pair]
    for i, nm in zip(pair, names, strict=True):
        if "PostProcess:1" in nm:
            return i, pair[1] if i == pair[0] else pair[0]
        if "PostProcess:2" in nm:
            return pair[1] if i == pair[0] else pair[0], i
    a_int = bool(np.all(np.equal(np.mod(a, 1), 0)))
    b_int = bool(np.all(np.equal(np.mod(b, 1), 0)))
    if a_int and not b_int:
        return pair[0], pair[1]
    if b_int and not a_int:
        return pair[1], pair[0]
    if a.max(initial=0) > 1 >= b.max(initial=0):
        return pair[0], pair[1]
    if b.max(initial=0) > 1 >= a.max(initial=0):
        return pair[1], pair[0]
    return None


def _layout_from_shapes(shapes: list[tuple[int, ...]]) -> str | None:
    if len(shapes) == 4:
        ranks = sorted(len(s) for s in shapes)
        has_boxes = any(len(s) == 3 and s[2] == 4 for s in shapes)
        if has_boxes and ranks in ([1, 2, 2, 3], [2, 2, 2, 3]):
            return "ssd_postprocess"
        return None
    if len(shapes) != 1:
        return None
    s = shapes[0]
    if len(s) == 3 and s[0] == 1:
        a, b = s[1], s[2]
        if b < a and b >= 6:
            return "yolov5"
        if a < b and a >= 5:
            return "yolov8"
    if len(s) == 4 and s[0] == 1 and s[1] == s[2] and s[3] >= 6:
        return "patrol_grid"
    return None
