"""Build small, real TFLite detectors in the foreign output layouts and input forms, for tests.

    python models/train/build_layout_models.py --out tests/models

Why: the agent must decode models it did not train (SSD with the TFLite_Detection_PostProcess
op, YOLOv5 and YOLOv8 exports). Shape-only dummies would not catch a swapped coordinate or an
off-by-one class; these models really detect, so a test can draw a known shape and check the
decoded box and class. One tiny grid network is trained (seeded, a few minutes on 2 CPU cores)
on a trivial task - 2 classes, "square" (filled square) and "disc" (filled circle), 1-3 per
image on a noisy background, letterboxed or stretched from other aspect ratios; YOLOv5-style
targets (neighbour cells positive, centres 2 * sigmoid - 0.5 cells from the corner,
IoU-aware objectness) - and its output is re-arranged at export time into:

* ssd_postprocess_int8.tflite: box encodings + class scores + anchors into the
  TFLite_Detection_PostProcess custom op (as the TF Object Detection API's TF2 TFLite export
  does, through a ``tf.function(experimental_implements=...)``); outputs boxes [1,N,4]
  (ymin, xmin, ymax, xmax normalised), classes [1,N], scores [1,N], count [1], float32.
* yolov5_int8.tflite: one int8 tensor [1, N, 5+C]: cx, cy, w, h (normalised), objectness,
  C class scores.
* yolov8_int8.tflite: one int8 tensor [1, 4+C, N]: cx, cy, w, h (normalised), C class scores.

These take uint8 RGB [1, S, S, 3] with scale 1/255, zero point 0 (raw pixels). Variants of
the same network, for the input and output conventions other exports use:

* yolov8t_int8.tflite: the yolov8 output transposed in the graph, int8 [1, N, 4+C], as some
  YOLOv8/YOLO11 exports give it. With C = 2 that is [1, N, 6], the shape of a YOLOv5 output
  with one class: only the labels count tells them apart, so this one has NO labels inside
  (only yolov8t.labels.txt beside it).
* yolov8_float32.tflite: float32 input that expects (pixel - 127.5) / 127.5 (mean 127.5,
  std 127.5, RGB), float32 output [1, 4+C, N]; weights dynamic-range quantised, not the I/O.
* yolov5_bgr_int8.tflite: yolov5_int8 for BGR input (channels swapped at the graph input).
* ssd_int8input_int8.tflite: the SSD postprocess model with an int8 input (scale 1/255,
  zero point -128, i.e. pixel - 128).

To add or redo some exports without retraining or touching the others:
``--weights /tmp/layout_models_seed1.weights.h5 --only yolov8t_int8 ...``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from agent.detector import Preprocess, fit_input, letterbox

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gridnet

LABELS = ["square", "disc"]
SIZE = 128
STRIDE = 8
GRID = SIZE // STRIDE
# SSD anchors: one per grid cell, centred on it, a typical object size; the box coder scales
# are the TF Object Detection API defaults.
ANCHOR_SIZE = 0.25
Y_SCALE, X_SCALE, H_SCALE, W_SCALE = 10.0, 10.0, 5.0, 5.0
STRETCH_P = 0.4
"""Of the training images drawn on a non-square frame, the share stretched, not letterboxed."""
OBJ_ALPHA = 0.75
"""BCE objectness weight of positive cells (background 1 - this), as the default model's.
The first recipe (gridnet.grid_loss: one positive cell, focal objectness) scored the tests'
drawn disc, centred on a cell corner, 0.47: under the agent's 0.5 threshold."""


def render_shapes(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray,
                                                                        list[gridnet.Box]]:
    """An RGB model input with 1-3 non-overlapping squares/discs on noise, and their boxes.

    Half of the images are drawn on a frame of another aspect ratio and fitted into the
    square as the Detector does with camera frames: most letterboxed (grey bars), so bars are
    not mistaken for objects, some stretched (``STRETCH_P``), as SSD models are fed, so a
    square drawn on a wide frame is still a square when it reaches the model as a tall
    rectangle (and a disc as an ellipse). Noise level and background vary so that a test's
    hand-drawn frame is in range.
    """
    if rng.random() < 0.5:
        fw, fh = size, size
    else:
        long, short = int(rng.integers(size, 3 * size)), 0
        short = int(long * rng.uniform(0.5, 0.85))
        fw, fh = (long, short) if rng.random() < 0.7 else (short, long)
    k = max(fw, fh) / size  # shapes are sized in model-input pixels
    base = rng.integers(30, 220, 3)
    img = np.clip(base + rng.normal(0, rng.uniform(3, 35), (fh, fw, 3)), 0, 255)
    if rng.random() < 0.3:  # a gentle gradient
        img = np.clip(img + np.linspace(-40, 40, fw)[None, :, None] * rng.uniform(-1, 1), 0, 255)
    img = img.astype(np.uint8)
    boxes: list[gridnet.Box] = []
    for _ in range(int(rng.integers(1, 4))):
        for _try in range(20):
            s = int(rng.integers(12, 64) * k)
            if s >= min(fw, fh) - 2:
                continue
            x1, y1 = int(rng.integers(0, fw - s)), int(rng.integers(0, fh - s))
            if all(x1 >= b[3] + 2 or x1 + s <= b[1] - 2 or y1 >= b[4] + 2 or y1 + s <= b[2] - 2
                   for b in boxes):
                break
        else:
            continue
        color = rng.integers(0, 256, 3)
        while np.abs(color - base).sum() < 150:  # keep the shape visible on its background
            color = rng.integers(0, 256, 3)
        c = int(rng.integers(0, 2))
        col = tuple(int(v) for v in color)
        if c == 0:
            cv2.rectangle(img, (x1, y1), (x1 + s - 1, y1 + s - 1), col, -1)
        else:
            cv2.circle(img, (x1 + s // 2, y1 + s // 2), s // 2, col, -1, cv2.LINE_AA)
        boxes.append((c, float(x1), float(y1), float(x1 + s), float(y1 + s)))
    if fw != fh and rng.random() < STRETCH_P:
        rgb, lb = fit_input(img, size, size, Preprocess(resize="stretch"))  # BGR -> RGB
        return rgb, [(c, *lb.to_input(*b)) for c, *b in boxes]
    rgb, lb = letterbox(img, size, size)  # BGR -> RGB as at run time
    return rgb, [(c, *lb.to_input(*b)) for c, *b in boxes]


def _cell_xy() -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    return gx[None, :, :, None], gy[None, :, :, None]


class _Export(tf.Module):
    """Re-arranges the trained grid network's sigmoids into one foreign layout."""

    def __init__(self, net: tf.keras.Model, layout: str, input_kind: str = "uint8",
                 bgr: bool = False) -> None:
        super().__init__()
        self.net = gridnet.frozen_call(net, SIZE)
        self.layout = layout
        self.input_kind = input_kind
        self.bgr = bgr
        gx, gy = _cell_xy()
        self.gx, self.gy = tf.constant(gx), tf.constant(gy)
        cy = (gy[0, :, :, 0].reshape(-1) + 0.5) / GRID
        cx = (gx[0, :, :, 0].reshape(-1) + 0.5) / GRID
        anchors = np.stack([cy, cx, np.full_like(cx, ANCHOR_SIZE), np.full_like(cx, ANCHOR_SIZE)],
                           axis=1).astype(np.float32)
        self.anchors = tf.constant(anchors)

    def _net_input(self, image: tf.Tensor) -> tf.Tensor:
        """The model's input as the trained network wants it: RGB in [0, 1]. (Quantized
        inputs arrive here as [0, 1] already: the converter's input scale does that.)"""
        if self.input_kind == "float32":  # (pixel - 127.5) / 127.5 -> pixel / 255
            image = image * 0.5 + 0.5
        if self.bgr:
            image = tf.reverse(image, axis=[-1])
        return image

    def _decoded(self, image: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Split the logits, then one sigmoid per part: slicing a quantized sigmoid output
        # trips the converter's same-scale constraint on strided_slice.
        obj, x, y, w, h, cls = (tf.sigmoid(p) for p in tf.split(
            self.net(self._net_input(image)), [1, 1, 1, 1, 1, len(LABELS)], axis=-1))
        # YOLOv5's centre: up to half a cell beyond the cell (see encode_targets)
        return ((2.0 * x - 0.5 + self.gx) / GRID, (2.0 * y - 0.5 + self.gy) / GRID,
                w, h, obj, cls)

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
    def serve(self, image: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, ...]:
        cx, cy, w, h, obj, cls = self._decoded(image)
        n = GRID * GRID
        if self.layout == "yolov5":
            out = tf.concat([cx, cy, w, h, obj, cls], axis=-1)
            return tf.reshape(out, [1, n, 5 + len(LABELS)])
        if self.layout in ("yolov8", "yolov8t"):
            out = tf.reshape(tf.concat([cx, cy, w, h, obj * cls], axis=-1),
                             [1, n, 4 + len(LABELS)])
            out = tf.transpose(out, [0, 2, 1])  # [1, 4+C, N]
            if self.layout == "yolov8t":  # an export that transposes it back: [1, N, 4+C]
                out = tf.transpose(out, [0, 2, 1])
            return out
        # SSD: centre-size encoding against the anchors (FasterRCNN box coder).
        ty = (cy - (self.gy + 0.5) / GRID) / ANCHOR_SIZE * Y_SCALE
        tx = (cx - (self.gx + 0.5) / GRID) / ANCHOR_SIZE * X_SCALE
        th = tf.math.log(tf.maximum(h, 1e-3) / ANCHOR_SIZE) * H_SCALE
        tw = tf.math.log(tf.maximum(w, 1e-3) / ANCHOR_SIZE) * W_SCALE
        enc = tf.reshape(tf.concat([ty, tx, th, tw], axis=-1), [1, n, 4])
        scores = tf.concat([tf.zeros_like(obj), obj * cls], axis=-1)  # column 0: background
        scores = tf.reshape(scores, [1, n, 1 + len(LABELS)])
        return _postprocess(enc, scores, self.anchors)[::-1]


def _signature(max_det: int = 10) -> str:
    """The attribute string the MLIR converter turns into the TFLite_Detection_PostProcess op
    (same attributes as the Object Detection API's export_tflite_graph_lib_tf2)."""
    attrs = [
        'name: "TFLite_Detection_PostProcess"',
        f'attr {{ key: "max_detections" value {{ i: {max_det} }} }}',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "use_regular_nms" value { b: false } }',
        'attr { key: "nms_score_threshold" value { f: 0.050000 } }',
        'attr { key: "nms_iou_threshold" value { f: 0.450000 } }',
        f'attr {{ key: "y_scale" value {{ f: {Y_SCALE:f} }} }}',
        f'attr {{ key: "x_scale" value {{ f: {X_SCALE:f} }} }}',
        f'attr {{ key: "h_scale" value {{ f: {H_SCALE:f} }} }}',
        f'attr {{ key: "w_scale" value {{ f: {W_SCALE:f} }} }}',
        f'attr {{ key: "num_classes" value {{ i: {len(LABELS)} }} }}',
        'attr { key: "detections_per_class" value { i: 10 } }',
    ]
    return " ".join(attrs)


@tf.function(experimental_implements=_signature())
def _postprocess(box_encodings: tf.Tensor, class_predictions: tf.Tensor,
                 anchors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Placeholder body: the converter replaces the whole function by the custom op."""
    del box_encodings, class_predictions, anchors
    boxes = tf.constant(0.0, dtype=tf.float32, name="boxes")
    scores = tf.constant(0.0, dtype=tf.float32, name="scores")
    classes = tf.constant(0.0, dtype=tf.float32, name="classes")
    num = tf.constant(0.0, dtype=tf.float32, name="num_detections")
    return boxes, classes, scores, num


def encode_targets(boxes: list[gridnet.Box]) -> np.ndarray:
    """gridnet.encode_dense_targets, with YOLOv5's centre offsets.

    Dense targets: the cell holding a centre and the neighbours within half a cell of it are
    positive (with one positive cell only, an object centred on a cell corner, as the tests'
    drawn disc is, leaves the network guessing which cell says so: it scored 0.47). But a
    neighbour's centre target, clipped into its cell there, moves its box by up to half a
    cell, and such boxes won ties at a saturated score. So the centre is decoded as
    2 * sigmoid - 0.5 cells from the cell's corner, as in YOLOv5: the target sigmoid is
    (offset + 0.5) / 2, exact for the centre cell and its neighbours alike. The same cells as
    gridnet's (same order, same smaller-object-wins rule) get those offsets.
    """
    t = gridnet.encode_dense_targets(boxes, SIZE, GRID, len(LABELS))
    cell = SIZE / GRID
    taken = np.full((GRID, GRID), np.inf)
    for _c, x1, y1, x2, y2 in sorted(boxes, key=lambda b: -(b[3] - b[1]) * (b[4] - b[2])):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0 or min(bw, bh) < gridnet.MIN_TARGET_PX:
            continue
        cx, cy = (x1 + x2) / 2 / cell, (y1 + y2) / 2 / cell
        gx0, gy0 = int(np.clip(cx, 0, GRID - 1)), int(np.clip(cy, 0, GRID - 1))
        cells = [(gx0, gy0)]
        if min(bw, bh) >= gridnet.NEIGHBOUR_MIN_PX:
            cells += [(gx0 - 1 if cx - gx0 < 0.5 else gx0 + 1, gy0),
                      (gx0, gy0 - 1 if cy - gy0 < 0.5 else gy0 + 1)]
        for gx, gy in cells:
            if not (0 <= gx < GRID and 0 <= gy < GRID) or bw * bh > taken[gy, gx]:
                continue
            taken[gy, gx] = bw * bh
            t[gy, gx, 1] = np.clip((cx - gx + 0.5) / 2, 0.0, 1.0)
            t[gy, gx, 2] = np.clip((cy - gy + 0.5) / 2, 0.0, 1.0)
    return t


def _overlap(p: tf.Tensor, t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """IoU and GIoU of boxes (cx, cy in cells from the same corner, w, h in input fractions)."""
    return gridnet.box_overlap(p[..., 0] / GRID, p[..., 1] / GRID, p[..., 2], p[..., 3],
                               t[..., 0] / GRID, t[..., 1] / GRID, t[..., 2], t[..., 3])


def loss_fn(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """gridnet.dense_grid_loss (BCE objectness, ``OBJ_ALPHA``) for this model's YOLOv5 centres,
    with an IoU-aware objectness target, 0.5 + 0.5 * IoU of the cell's own box, as YOLOv5
    does. With a target of 1, the two or three cells that see an object all saturated the
    int8 score (0.99), and NMS kept the first of them, not the best box: a 14 px square came
    back at IoU 0.52 when the cell beside it had 0.8. Now the score ranks the boxes."""
    c = len(LABELS)
    obj_t, bmask, keep = y_true[..., 0], y_true[..., 5 + c], 1.0 - y_true[..., 6 + c]
    npos = tf.maximum(tf.reduce_sum(obj_t), 1.0)
    nbox = tf.maximum(tf.reduce_sum(bmask), 1.0)
    s = tf.sigmoid(logits[..., 1:5])
    decoded = tf.concat([2.0 * s[..., :2] - 0.5, s[..., 2:]], axis=-1)
    target = tf.concat([2.0 * y_true[..., 1:3] - 0.5, y_true[..., 3:5]], axis=-1)
    iou, giou = _overlap(decoded, target)
    obj_target = obj_t * (0.5 + 0.5 * tf.stop_gradient(tf.clip_by_value(iou, 0.0, 1.0)))
    bce = tf.nn.sigmoid_cross_entropy_with_logits(obj_target, logits[..., 0])
    l_obj = tf.reduce_sum(keep * bce * tf.where(obj_t > 0, OBJ_ALPHA, 1.0 - OBJ_ALPHA)) / npos
    l1 = (tf.abs(s[..., 0] - y_true[..., 1]) + tf.abs(s[..., 1] - y_true[..., 2])
          + 4.0 * tf.abs(tf.sqrt(s[..., 2] + 1e-6) - tf.sqrt(y_true[..., 3] + 1e-6))
          + 4.0 * tf.abs(tf.sqrt(s[..., 3] + 1e-6) - tf.sqrt(y_true[..., 4] + 1e-6)))
    l_box = tf.reduce_sum(bmask * (l1 + 2.0 * (1.0 - giou))) / nbox
    l_cls = tf.reduce_sum(obj_t * tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
        y_true[..., 5:5 + c], logits[..., 5:]), axis=-1)) / npos
    return 2.0 * l_obj + l_box + l_cls


def make_dataset(images: np.ndarray, boxes: list[list[gridnet.Box]], batch: int,
                 seed: int) -> tf.data.Dataset:
    """Endless shuffled batches of (flipped/jittered image in [0, 1], target)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            for i in rng.permutation(len(images)):
                img, bx = gridnet.augment(images[i], list(boxes[i]), rng)
                yield img, encode_targets(bx)

    sig = (tf.TensorSpec((SIZE, SIZE, 3), tf.uint8),
           tf.TensorSpec((GRID, GRID, 7 + len(LABELS)), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return ds.batch(batch, drop_remainder=True).prefetch(2)


def train(seed: int, epochs: int, steps: int,
          weights: Path | None = None) -> tuple[tf.keras.Model, np.ndarray]:
    """Train the shared grid network on shapes (or load ``weights``); returns it and
    calibration images. The weights are kept in /tmp so an export can be redone alone."""
    tf.keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    scenes = [render_shapes(rng) for _ in range(6000)]
    images = np.stack([s[0] for s in scenes])
    boxes = [s[1] for s in scenes]
    net = gridnet.build_grid_net(SIZE, len(LABELS), width=0.5, name="shapes")
    if weights is not None:
        net.load_weights(weights)
        return net, images
    ds = make_dataset(images, boxes, batch=32, seed=seed)
    sched = tf.keras.optimizers.schedules.CosineDecay(3e-3, epochs * steps, alpha=0.02)
    net.compile(optimizer=tf.keras.optimizers.Adam(sched), loss=loss_fn)
    net.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=2)
    net.save_weights(f"/tmp/layout_models_seed{seed}.weights.h5")
    return net, images


def append_labels(tflite: bytes, labels: list[str]) -> bytes:
    """gridnet.append_labels with a fixed zip timestamp, so that a rebuild from the same
    weights gives the same bytes (the zip's own entry would carry the time of the build)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("labels.txt", date_time=(1980, 1, 1, 0, 0, 0)),
                   "\n".join(labels) + "\n")
    return tflite + buf.getvalue()


@dataclass(frozen=True)
class Output:
    """One exported model: ``<name>.tflite`` and ``<labels>.labels.txt``."""

    name: str
    labels: str
    layout: str  # ssd | yolov5 | yolov8 | yolov8t (the _Export layouts)
    input: str = "uint8"  # uint8 | int8 (both quantized, scale 1/255) | float32 (mean/std 127.5)
    bgr: bool = False
    embed_labels: bool = True  # also append the labels zip inside the .tflite


OUTPUTS = (
    Output("yolov5_int8", "yolov5", "yolov5"),
    Output("yolov8_int8", "yolov8", "yolov8"),
    Output("ssd_postprocess_int8", "ssd_postprocess", "ssd"),
    # Variants of the same network (tests/models/README.md says what each is for).
    Output("yolov8t_int8", "yolov8t", "yolov8t", embed_labels=False),
    Output("yolov8_float32", "yolov8_float32", "yolov8", input="float32"),
    Output("yolov5_bgr_int8", "yolov5_bgr", "yolov5", bgr=True),
    Output("ssd_int8input_int8", "ssd_int8input", "ssd", input="int8"),
)


def convert(out: Output, mod: _Export, rep: Callable[[], Iterator[list[np.ndarray]]]) -> bytes:
    """The TFLite flatbuffer for ``out``. uint8 input goes through gridnet.convert_int8, as
    the first three models always did; the others need converter settings it does not take."""
    if out.input == "uint8":
        return gridnet.convert_int8(mod, rep, int8_output=out.layout != "ssd",
                                    custom_ops=out.layout == "ssd")
    conv = tf.lite.TFLiteConverter.from_concrete_functions(
        [mod.serve.get_concrete_function()], mod)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if out.input == "float32":  # no representative data: int8 weights, float32 in and out
        return conv.convert()
    # int8 input (the same calibration gives scale 1/255, zero point -128: pixel - 128)
    conv.representative_dataset = rep
    if out.layout == "ssd":
        conv.allow_custom_ops = True
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_output_type = tf.int8
    conv.inference_input_type = tf.int8
    return conv.convert()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/models"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--weights", type=Path, default=None, help="skip training, export these")
    ap.add_argument("--only", nargs="+", choices=[o.name for o in OUTPUTS], default=None,
                    help="write only these models (default: all)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    net, images = train(args.seed, args.epochs, args.steps, args.weights)
    print(f"trained in {time.time() - t0:.0f} s", flush=True)
    rep = gridnet.representative(images, 200)
    # BGR models calibrate on BGR images (the first one still spans 0..1 on every channel)
    rep_bgr = gridnet.representative(np.ascontiguousarray(images[:200, ..., ::-1]), 200)
    for out in OUTPUTS:
        if args.only and out.name not in args.only:
            continue
        mod = _Export(net, out.layout, out.input, out.bgr)
        data = convert(out, mod, rep_bgr if out.bgr else rep)
        if out.embed_labels:
            # Labels also inside the file, so the Detector finds them whatever the file name.
            data = append_labels(data, LABELS)
        (args.out / f"{out.name}.tflite").write_bytes(data)
        gridnet.write_labels(args.out / f"{out.labels}.labels.txt", LABELS)
        print(f"wrote {out.name}.tflite ({len(data)} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
