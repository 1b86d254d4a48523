"""Build small, real, int8 TFLite detectors in the three foreign output layouts, for tests.

    python models/train/build_layout_models.py --out tests/models

Why: the agent must decode models it did not train (SSD with the TFLite_Detection_PostProcess
op, YOLOv5 and YOLOv8 exports). Shape-only dummies would not catch a swapped coordinate or an
off-by-one class; these models really detect, so a test can draw a known shape and check the
decoded box and class. One tiny grid network is trained (seeded, a few minutes on 2 CPU cores)
on a trivial task - 2 classes, "square" (filled square) and "disc" (filled circle), 1-3 per
image on a noisy background - and its output is re-arranged at export time into:

* ssd_postprocess_int8.tflite: box encodings + class scores + anchors into the
  TFLite_Detection_PostProcess custom op (as the TF Object Detection API's TF2 TFLite export
  does, through a ``tf.function(experimental_implements=...)``); outputs boxes [1,N,4]
  (ymin, xmin, ymax, xmax normalised), classes [1,N], scores [1,N], count [1], float32.
* yolov5_int8.tflite: one int8 tensor [1, N, 5+C]: cx, cy, w, h (normalised), objectness,
  C class scores.
* yolov8_int8.tflite: one int8 tensor [1, 4+C, N]: cx, cy, w, h (normalised), C class scores.

All take uint8 RGB [1, S, S, 3] with scale 1/255, zero point 0 (raw pixels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from agent.detector import letterbox

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


def render_shapes(rng: np.random.Generator, size: int = SIZE) -> tuple[np.ndarray,
                                                                        list[gridnet.Box]]:
    """An RGB model input with 1-3 non-overlapping squares/discs on noise, and their boxes.

    Half of the images are drawn on a frame of another aspect ratio and letterboxed into the
    square (grey bars), as the Detector does with camera frames, so bars are not mistaken for
    objects; noise level and background vary so that a test's hand-drawn frame is in range.
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
    rgb, lb = letterbox(img, size, size)  # BGR -> RGB as at run time
    return rgb, [(c, x1 * lb.scale + lb.pad_x, y1 * lb.scale + lb.pad_y,
                  x2 * lb.scale + lb.pad_x, y2 * lb.scale + lb.pad_y)
                 for c, x1, y1, x2, y2 in boxes]


def _cell_xy() -> tuple[np.ndarray, np.ndarray]:
    gy, gx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    return gx[None, :, :, None], gy[None, :, :, None]


class _Export(tf.Module):
    """Re-arranges the trained grid network's sigmoids into one foreign layout."""

    def __init__(self, net: tf.keras.Model, layout: str) -> None:
        super().__init__()
        self.net = gridnet.frozen_call(net, SIZE)
        self.layout = layout
        gx, gy = _cell_xy()
        self.gx, self.gy = tf.constant(gx), tf.constant(gy)
        cy = (gy[0, :, :, 0].reshape(-1) + 0.5) / GRID
        cx = (gx[0, :, :, 0].reshape(-1) + 0.5) / GRID
        anchors = np.stack([cy, cx, np.full_like(cx, ANCHOR_SIZE), np.full_like(cx, ANCHOR_SIZE)],
                           axis=1).astype(np.float32)
        self.anchors = tf.constant(anchors)

    def _decoded(self, image: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Split the logits, then one sigmoid per part: slicing a quantized sigmoid output
        # trips the converter's same-scale constraint on strided_slice.
        obj, x, y, w, h, cls = (tf.sigmoid(p) for p in tf.split(
            self.net(image), [1, 1, 1, 1, 1, len(LABELS)], axis=-1))
        return (x + self.gx) / GRID, (y + self.gy) / GRID, w, h, obj, cls

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
    def serve(self, image: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, ...]:
        cx, cy, w, h, obj, cls = self._decoded(image)
        n = GRID * GRID
        if self.layout == "yolov5":
            out = tf.concat([cx, cy, w, h, obj, cls], axis=-1)
            return tf.reshape(out, [1, n, 5 + len(LABELS)])
        if self.layout == "yolov8":
            out = tf.reshape(tf.concat([cx, cy, w, h, obj * cls], axis=-1),
                             [1, n, 4 + len(LABELS)])
            return tf.transpose(out, [0, 2, 1])
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
    ds = gridnet.make_dataset(images, boxes, GRID, len(LABELS), batch=32, seed=seed)
    sched = tf.keras.optimizers.schedules.CosineDecay(3e-3, epochs * steps, alpha=0.02)
    net.compile(optimizer=tf.keras.optimizers.Adam(sched), loss=gridnet.grid_loss(GRID))
    net.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=2)
    net.save_weights(f"/tmp/layout_models_seed{seed}.weights.h5")
    return net, images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("tests/models"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--weights", type=Path, default=None, help="skip training, export these")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    net, images = train(args.seed, args.epochs, args.steps, args.weights)
    print(f"trained in {time.time() - t0:.0f} s", flush=True)
    rep = gridnet.representative(images, 200)
    for layout, fname in (("yolov5", "yolov5_int8"), ("yolov8", "yolov8_int8"),
                          ("ssd", "ssd_postprocess_int8")):
        mod = _Export(net, layout)
        data = gridnet.convert_int8(mod, rep, int8_output=layout != "ssd",
                                    custom_ops=layout == "ssd")
        # Labels also inside the file, so the Detector finds them whatever the file name.
        data = gridnet.append_labels(data, LABELS)
        (args.out / f"{fname}.tflite").write_bytes(data)
        stem = "ssd_postprocess" if layout == "ssd" else layout
        gridnet.write_labels(args.out / f"{stem}.labels.txt", LABELS)
        print(f"wrote {fname}.tflite ({len(data)} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
