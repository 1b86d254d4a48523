"""The small grid detector shared by the default model and the layout test models.

One network, one training recipe: a MobileNet-like stack of depthwise-separable blocks with a
small FPN that brings the stride-16 and stride-32 features back to a stride-8 grid, and one
1x1 head that predicts, per grid cell, objectness, the box centre inside the cell, the box size
as a fraction of the input and the class probabilities (the project's "patrol_grid" layout,
decoded by ``agent.detector.decode_grid``). The layout test models reuse the same trained
network and only re-arrange its output into the YOLO / SSD layouts at export time, so every
layout is backed by a model that really detects.

TensorFlow is imported here and only here (and in the scripts beside it); the ``agent``
package never imports it, because TensorFlow is not for the Pi.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

Box = tuple[int, float, float, float, float]
"""class id, x1, y1, x2, y2 in input pixels."""


# --- network ----------------------------------------------------------------------------------


BN_MOMENTUM = [0.99]
"""BatchNormalization momentum used by the builders (a list so build_grid_net can set it)."""


def _bn(x: tf.Tensor) -> tf.Tensor:
    return tf.keras.layers.BatchNormalization(momentum=BN_MOMENTUM[0])(x)


def _conv_bn(x: tf.Tensor, filters: int, kernel: int = 1, stride: int = 1) -> tf.Tensor:
    x = tf.keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False)(x)
    return tf.keras.layers.ReLU(6.0)(_bn(x))


def _dw_block(x: tf.Tensor, filters: int, stride: int = 1) -> tf.Tensor:
    """Depthwise 3x3 + pointwise 1x1 (MobileNet V1 style: cheap, quantizes well with ReLU6)."""
    y = tf.keras.layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False)(x)
    y = tf.keras.layers.ReLU(6.0)(_bn(y))
    y = _conv_bn(y, filters)
    if stride == 1 and x.shape[-1] == filters:
        y = tf.keras.layers.Add()([x, y])  # residual where shapes allow: trains faster
    return y


def build_grid_net(size: int, num_classes: int, width: float = 1.0,
                   name: str = "patrol_grid", bn_momentum: float = 0.99) -> tf.keras.Model:
    """Input [B, size, size, 3] float in [0, 1]; output [B, size/8, size/8, 5 + C] LOGITS.

    The sigmoid is added at export; training works on logits for numerically stable losses.
    """
    BN_MOMENTUM[0] = bn_momentum
    def w(c: int) -> int:
        return max(8, round(c * width / 8) * 8)

    inp = tf.keras.Input((size, size, 3), name="image")
    x = _conv_bn(inp, w(16), 3, 2)                 # /2
    x = _dw_block(x, w(32), 2)                     # /4
    x = _dw_block(x, w(32))
    c3 = _dw_block(x, w(64), 2)                    # /8
    c3 = _dw_block(c3, w(64))
    c4 = _dw_block(c3, w(96), 2)                   # /16
    c4 = _dw_block(c4, w(96))
    c4 = _dw_block(c4, w(96))
    c5 = _dw_block(c4, w(160), 2)                  # /32
    c5 = _dw_block(c5, w(160))
    c5 = _dw_block(c5, w(160))
    p5 = _conv_bn(c5, w(64))
    p4 = tf.keras.layers.Add()([_conv_bn(c4, w(64)), tf.keras.layers.UpSampling2D(2)(p5)])
    p4 = _dw_block(p4, w(64))
    p3 = tf.keras.layers.Add()([_conv_bn(c3, w(64)), tf.keras.layers.UpSampling2D(2)(p4)])
    p3 = _dw_block(p3, w(64))
    p3 = _dw_block(p3, w(64))
    # Objectness starts near 0.01 (focal-loss prior) so early training is not swamped by
    # the many empty cells.
    bias = np.zeros(5 + num_classes, np.float32)
    bias[0] = -math.log(99.0)
    out = tf.keras.layers.Conv2D(5 + num_classes, 1, name="head",
                                 bias_initializer=tf.keras.initializers.Constant(bias))(p3)
    return tf.keras.Model(inp, out, name=name)


def recalibrate_bn(net: tf.keras.Model, images: np.ndarray, batches: int = 60,
                   batch: int = 32, seed: int = 0) -> None:
    """Re-estimate BatchNorm moving statistics with the final weights.

    The moving averages lag the weights while the learning rate is high; on a short
    training run the inference-mode outputs then differ badly from training mode (objectness
    collapsed to ~0.05 in a 400-step trial). Forward passes in training mode, no gradient,
    refresh them; the weights themselves are unchanged.
    """
    bns = [la for la in net.layers if isinstance(la, tf.keras.layers.BatchNormalization)]
    old = [la.momentum for la in bns]
    rng = np.random.default_rng(seed)
    for k in range(batches):
        for la in bns:  # running mean of all batches so far: 1 - 1/(k+1)
            la.momentum = k / (k + 1)
        idx = rng.choice(len(images), min(batch, len(images)), replace=False)
        net(images[np.sort(idx)].astype(np.float32) / 255.0, training=True)
    for la, m in zip(bns, old, strict=True):
        la.momentum = m


# --- targets and loss -------------------------------------------------------------------------


def encode_targets(boxes: Iterable[Box], size: int, grid: int, num_classes: int) -> np.ndarray:
    """[G, G, 5 + C] training target: each box goes to the cell holding its centre.

    Channels: objectness, cx and cy within the cell, w and h as fractions of the input, the
    one-hot class. When two boxes share a cell the smaller one wins (the larger is usually
    also visible from other evidence; the small one would otherwise be lost altogether).
    """
    t = np.zeros((grid, grid, 5 + num_classes), np.float32)
    taken = np.full((grid, grid), np.inf)
    for c, x1, y1, x2, y2 in boxes:
        bw, bh = (x2 - x1) / size, (y2 - y1) / size
        if bw <= 0 or bh <= 0:
            continue
        cx, cy = (x1 + x2) / 2 / size * grid, (y1 + y2) / 2 / size * grid
        gx, gy = min(grid - 1, max(0, int(cx))), min(grid - 1, max(0, int(cy)))
        area = bw * bh
        if area >= taken[gy, gx]:
            continue
        taken[gy, gx] = area
        t[gy, gx] = 0.0
        t[gy, gx, 0] = 1.0
        t[gy, gx, 1] = np.clip(cx - gx, 0.0, 1.0)
        t[gy, gx, 2] = np.clip(cy - gy, 0.0, 1.0)
        t[gy, gx, 3] = min(bw, 1.0)
        t[gy, gx, 4] = min(bh, 1.0)
        t[gy, gx, 5 + int(c)] = 1.0
    return t


def grid_loss(grid: int, box_weight: float = 2.0) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Focal BCE objectness + BCE centre/size + GIoU box + BCE classes, per positive cell.

    Focal objectness (gamma 2, normalised by the number of objects) because almost every cell
    is empty; GIoU because it is scale-free (a 10 px and a 150 px box count alike), with BCE
    on the raw sigmoids beside it so that the box channels learn from the first step.
    """
    def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        obj_t = y_true[..., 0]
        npos = tf.maximum(tf.reduce_sum(obj_t), 1.0)
        p = tf.sigmoid(logits[..., 0])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(obj_t, logits[..., 0])
        mod = tf.where(obj_t > 0, tf.square(1.0 - p), tf.square(p))
        l_obj = tf.reduce_sum(bce * mod) / npos

        l_raw = tf.reduce_sum(obj_t * tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(y_true[..., 1:5], logits[..., 1:5]),
            axis=-1)) / npos

        s = tf.sigmoid(logits[..., 1:5])
        # Both boxes relative to the same cell origin, in input fractions.
        px, py = s[..., 0] / grid, s[..., 1] / grid
        tx, ty = y_true[..., 1] / grid, y_true[..., 2] / grid
        pw, ph, tw, th = s[..., 2], s[..., 3], y_true[..., 3], y_true[..., 4]
        ix = tf.maximum(0.0, tf.minimum(px + pw / 2, tx + tw / 2)
                        - tf.maximum(px - pw / 2, tx - tw / 2))
        iy = tf.maximum(0.0, tf.minimum(py + ph / 2, ty + th / 2)
                        - tf.maximum(py - ph / 2, ty - th / 2))
        inter = ix * iy
        union = pw * ph + tw * th - inter + 1e-9
        cw = tf.maximum(px + pw / 2, tx + tw / 2) - tf.minimum(px - pw / 2, tx - tw / 2)
        ch = tf.maximum(py + ph / 2, ty + th / 2) - tf.minimum(py - ph / 2, ty - th / 2)
        hull = cw * ch + 1e-9
        giou = inter / union - (hull - union) / hull
        l_giou = tf.reduce_sum(obj_t * (1.0 - giou)) / npos

        l_cls = tf.reduce_sum(obj_t * tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(y_true[..., 5:], logits[..., 5:]),
            axis=-1)) / npos
        return l_obj + l_raw + box_weight * l_giou + l_cls

    return loss


# --- data -------------------------------------------------------------------------------------


def augment(img: np.ndarray, boxes: list[Box], rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                  list[Box]]:
    """Horizontal flip and brightness/contrast jitter: cheap, label-safe on road-side scenes."""
    size = img.shape[1]
    if rng.random() < 0.5:
        img = img[:, ::-1]
        boxes = [(c, size - x2, y1, size - x1, y2) for c, x1, y1, x2, y2 in boxes]
    if rng.random() < 0.8:
        a = rng.uniform(0.75, 1.25)
        b = rng.uniform(-25, 25)
        img = np.clip(img.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), boxes


def make_dataset(images: np.ndarray, boxes: Sequence[list[Box]], grid: int, num_classes: int,
                 batch: int, seed: int, augment_data: bool = True) -> tf.data.Dataset:
    """An endless, shuffled, batched (image in [0, 1], target) dataset from cached scenes.

    Targets are encoded in numpy in a generator (the augmentation changes the boxes), which
    is plenty fast for a 2-core machine where the network is the bottleneck.
    """
    size = images.shape[1]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            for i in rng.permutation(len(images)):
                img, bx = images[i], list(boxes[i])
                if augment_data:
                    img, bx = augment(img, bx, rng)
                yield img, encode_targets(bx, size, grid, num_classes)

    sig = (tf.TensorSpec((size, size, 3), tf.uint8),
           tf.TensorSpec((grid, grid, 5 + num_classes), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return ds.batch(batch, drop_remainder=True).prefetch(2)


# --- export -----------------------------------------------------------------------------------


def representative(images: np.ndarray, count: int) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration samples in [0, 1]. The first one is forced to span exactly 0..1 so the
    uint8 input gets scale 1/255 and zero point 0: raw pixels go straight in."""
    def gen() -> Iterator[list[np.ndarray]]:
        for i in range(min(count, len(images))):
            x = images[i].astype(np.float32)[None] / 255.0
            if i == 0:
                x[0, 0, 0, :] = 0.0
                x[0, 0, 1, :] = 1.0
            yield [x]
    return gen


def frozen_call(net: tf.keras.Model, size: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """The network as a function with its weights folded into constants.

    Export wrappers (tf.Module) call this instead of the Keras model: with live Keras 3
    variables the converter's calibrator stops at READ_VARIABLE ops, and freezing the whole
    wrapper instead would inline (and so lose) the TFLite_Detection_PostProcess function.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )
    fn = tf.function(lambda x: net(x, training=False))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec([1, size, size, 3], tf.float32)))

    def call(x: tf.Tensor) -> tf.Tensor:
        out = frozen(x)
        return out[0] if isinstance(out, (list, tuple)) else out
    return call


def convert_int8(source: tf.keras.Model | tf.Module,
                 rep: Callable[[], Iterator[list[np.ndarray]]], *,
                 int8_output: bool = True, custom_ops: bool = False) -> bytes:
    """Full-integer quantization: uint8 input, int8 output (where the converter allows).

    ``source`` is a Keras model, or a tf.Module whose ``serve`` tf.function has an input
    signature (the export wrappers).
    """
    if isinstance(source, tf.keras.Model):
        conv = tf.lite.TFLiteConverter.from_keras_model(source)
    else:
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [source.serve.get_concrete_function()], source)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    if custom_ops:
        conv.allow_custom_ops = True
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    if int8_output:
        conv.inference_output_type = tf.int8
    return conv.convert()


def append_labels(tflite: bytes, labels: Sequence[str]) -> bytes:
    """Append a zip holding labels.txt, as Model Maker's metadata does; the flatbuffer is
    untouched (TFLite ignores trailing bytes) and zipfile finds the archive from the end."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("labels.txt", "\n".join(labels) + "\n")
    return tflite + buf.getvalue()


def write_labels(path: Path, labels: Sequence[str]) -> None:
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")
