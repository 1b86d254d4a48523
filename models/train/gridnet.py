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
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2
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


_CONVS = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D)


def _conv_depths_keras(net: tf.keras.Model) -> dict[str, tuple[str, int]]:
    """Each conv layer's kind and depth: the most conv layers on a path from the input to it,
    itself included (a key that places a conv in the graph whatever the layer order)."""
    depth: dict[str, int] = {}

    def of(layer: tf.keras.layers.Layer) -> int:
        if layer.name not in depth:
            ins = [t._keras_history.operation for t in layer._inbound_nodes[0].input_tensors]
            own = isinstance(layer, _CONVS)
            depth[layer.name] = max((of(i) for i in ins), default=0) + own
        return depth[layer.name]

    return {la.name: ("dw" if isinstance(la, tf.keras.layers.DepthwiseConv2D) else "conv",
                      of(la))
            for la in net.layers if isinstance(la, _CONVS)}


def _tflite_convs(path: Path) -> list[tuple[tuple[str, int], np.ndarray, np.ndarray]]:
    """The int8 model's conv ops as (kind, depth), float kernel in Keras layout, float bias."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    it = Interpreter(str(path), experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    it.allocate_tensors()
    det = {t["index"]: t for t in it.get_tensor_details()}
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    producer = {o["outputs"][0]: o for o in ops}
    depth: dict[int, int] = {}

    def of(op: dict) -> int:
        if op["index"] not in depth:
            ins = [producer[i] for i in op["inputs"] if i in producer]
            own = op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")
            depth[op["index"]] = max((of(i) for i in ins), default=0) + own
        return depth[op["index"]]

    def real(i: int) -> np.ndarray:
        q = det[i]["quantization_parameters"]
        v = it.get_tensor(i).astype(np.float32)
        if len(q["scales"]) == 0:
            return v
        shape = [1] * v.ndim
        if len(q["scales"]) > 1:
            shape[q["quantized_dimension"]] = -1
        return (v - q["zero_points"].reshape(shape)) * q["scales"].reshape(shape)

    out = []
    for op in ops:
        if op["op_name"] not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w, b = real(op["inputs"][1]), real(op["inputs"][2])
        if op["op_name"] == "CONV_2D":  # [out, kh, kw, in] -> [kh, kw, in, out]
            out.append((("conv", of(op)), w.transpose(1, 2, 3, 0), b))
        else:  # [1, kh, kw, in] -> [kh, kw, in, 1]
            out.append((("dw", of(op)), w[0][..., None], b))
    return out


def weights_from_tflite(net: tf.keras.Model, path: Path, images: np.ndarray) -> None:
    """Load a grid model's int8 .tflite back into ``net`` (built with the same width and
    classes) so that it can be fine-tuned: the shipped model without its training weights.

    The converter folded each BatchNorm into its conv (weights scaled, a bias added) and
    quantized both; here the dequantized kernels go back into the convs and each BatchNorm
    is rebuilt from the statistics of its input on ``images`` (model-input RGB), set so
    that the network computes exactly conv + bias again in inference mode, while in
    training mode its batch statistics start where the folded model was. Convs are matched
    by kind and graph depth, not by order (the converter reorders branches), and shapes are
    checked; a model of another architecture is refused."""
    theirs = _tflite_convs(path)
    ours = _conv_depths_keras(net)
    by_key: dict[tuple[str, int], list] = {}
    for key, w, b in theirs:
        by_key.setdefault(key, []).append((w, b))
    layers = {la.name: la for la in net.layers}
    bn_of = {}
    for la in net.layers:
        if isinstance(la, tf.keras.layers.BatchNormalization):
            src = la._inbound_nodes[0].input_tensors[0]._keras_history.operation
            bn_of[src.name] = la
    if len(theirs) != len(ours):
        raise ValueError(f"{path}: {len(theirs)} convolutions, the network has {len(ours)}: "
                         "not this architecture (width, size or classes differ)")
    bias_of: dict[str, np.ndarray] = {}
    for name, key in ours.items():
        layer = layers[name]
        cands = [(w, b) for w, b in by_key.get(key, [])
                 if w.shape == tuple(layer.kernel.shape)]
        if len(cands) != 1:
            raise ValueError(f"{path}: no single convolution matches {name} {key} "
                             f"{tuple(layer.kernel.shape)}: not this architecture")
        w, b = cands[0]
        if layer.use_bias:
            layer.set_weights([w, b])
        else:
            layer.set_weights([w])
            bias_of[name] = b
    # BatchNorms: first plain conv + bias (so that every layer's input is what the folded
    # model computes), then the statistics of their inputs on real images, then rebuilt
    # around those statistics, inference still exactly conv + bias
    bns = [bn_of[n] for n in bias_of]
    for bn, name in zip(bns, bias_of, strict=True):
        c = len(bias_of[name])
        bn.set_weights([np.ones(c, np.float32), bias_of[name], np.zeros(c, np.float32),
                        np.full(c, 1.0 - bn.epsilon, np.float32)])
    probe = tf.keras.Model(net.input, [bn.input for bn in bns])
    x = images[: min(128, len(images))].astype(np.float32) / 255.0
    acts = probe.predict(x, batch_size=16, verbose=0)
    for bn, a, name in zip(bns, acts, bias_of, strict=True):
        m = a.reshape(-1, a.shape[-1]).mean(axis=0)
        v = a.reshape(-1, a.shape[-1]).var(axis=0)
        gamma = np.sqrt(v + bn.epsilon)
        bn.set_weights([gamma, bias_of[name] + m, m, v])


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


def box_overlap(px: tf.Tensor, py: tf.Tensor, pw: tf.Tensor, ph: tf.Tensor, tx: tf.Tensor,
                ty: tf.Tensor, tw: tf.Tensor, th: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """IoU and GIoU of centre/size boxes (all in the same units)."""
    ix = tf.maximum(0.0, tf.minimum(px + pw / 2, tx + tw / 2)
                    - tf.maximum(px - pw / 2, tx - tw / 2))
    iy = tf.maximum(0.0, tf.minimum(py + ph / 2, ty + th / 2)
                    - tf.maximum(py - ph / 2, ty - th / 2))
    inter = ix * iy
    union = pw * ph + tw * th - inter + 1e-9
    cw = tf.maximum(px + pw / 2, tx + tw / 2) - tf.minimum(px - pw / 2, tx - tw / 2)
    ch = tf.maximum(py + ph / 2, ty + th / 2) - tf.minimum(py - ph / 2, ty - th / 2)
    hull = cw * ch + 1e-9
    iou = inter / union
    return iou, iou - (hull - union) / hull


def _giou(s: tf.Tensor, y_true: tf.Tensor, grid: int) -> tf.Tensor:
    """Per-cell GIoU of the predicted box (sigmoids ``s``: cx, cy in the cell, w, h as input
    fractions) against the target's, both relative to the same cell origin, in fractions
    of the input whose grid has ``grid`` cells a side."""
    return box_overlap(s[..., 0] / grid, s[..., 1] / grid, s[..., 2], s[..., 3],
                       y_true[..., 1] / grid, y_true[..., 2] / grid, y_true[..., 3],
                       y_true[..., 4])[1]


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

        giou = _giou(tf.sigmoid(logits[..., 1:5]), y_true, grid)
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


class GridExport(tf.Module):
    """The exported grid model: frozen network + sigmoid on every channel (the patrol_grid
    layout that ``agent.detector.decode_grid`` reads)."""

    def __init__(self, net: tf.keras.Model, size: int) -> None:
        super().__init__()
        self.net = frozen_call(net, size)
        self.serve = tf.function(
            lambda image: tf.sigmoid(self.net(image)),
            input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])


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


def export_grid_model(net: tf.keras.Model, size: int, calib: np.ndarray, count: int,
                      out: Path, name: str, labels: Sequence[str]) -> Path:
    """Write ``out/name.tflite`` (full int8, calibrated on ``count`` of ``calib``'s model-input
    images, labels appended as Model Maker-style metadata), ``name.labels.txt`` and
    ``name.weights.h5``: the float weights, what the next fine-tuning starts from best."""
    blob = append_labels(convert_int8(GridExport(net, size), representative(calib, count)),
                         labels)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.tflite"
    path.write_bytes(blob)
    write_labels(out / f"{name}.labels.txt", labels)
    net.save_weights(str(out / f"{name}.weights.h5"))
    return path


def append_labels(tflite: bytes, labels: Sequence[str]) -> bytes:
    """Append a zip holding labels.txt, as Model Maker's metadata does; the flatbuffer is
    untouched (TFLite ignores trailing bytes) and zipfile finds the archive from the end."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("labels.txt", "\n".join(labels) + "\n")
    return tflite + buf.getvalue()


def write_labels(path: Path, labels: Sequence[str]) -> None:
    path.write_text("\n".join(labels) + "\n", encoding="utf-8")


# --- default model: dense assignment, ignore regions, zoom-in crops --------------------------
#
# The single-cell recipe above learns the 128x128 shapes task but not the road-side scenes,
# whose objects are tiny (median ~15 px at 256, a quarter under 9 px). The default model uses
# the recipe below instead: more positive cells per object (centre cell plus the nearest
# neighbours, YOLOv5 style, with box targets clipped into the cell), the rest of the 3x3
# neighbourhood and too-small or cut-off objects ignored in the objectness loss rather than
# treated as background, and zoom-in crops so that most objects are seen at useful sizes.

MIN_TARGET_PX = 6.0
"""Objects thinner than this (model input pixels) are ignored, neither positive nor negative."""
NEIGHBOUR_MIN_PX = 12.0
"""Only objects at least this big get neighbour positives (a half-cell box error is fine)."""


def encode_dense_targets(boxes: Iterable[Box], size: int, grid: int, num_classes: int,
                         ignore: Iterable[tuple[float, float, float, float]] = (),
                         wh_norm: float | None = None) -> np.ndarray:
    """[G, G, 5 + C + 2] target: the patrol_grid channels, then a box mask and an ignore mask.

    Per object: the cell holding its centre is positive (objectness, class, exact box);
    objects of at least ``NEIGHBOUR_MIN_PX`` also make the neighbour cells positive whose
    edge lies within half a cell of the centre (the box centre target clipped into that
    cell, at most half a cell off); the rest of the 3x3 neighbourhood is ignored for
    objectness. Objects thinner than ``MIN_TARGET_PX`` and the ``ignore`` boxes (cut by a
    crop) only mark their centre neighbourhood as ignored. When two objects claim one cell
    the smaller one wins. Box sizes are fractions of ``wh_norm`` pixels (default ``size``;
    a training crop gives the exported input's side, since that is what the output means).
    """
    norm = float(wh_norm or size)
    ch_box, ch_ign = 5 + num_classes, 6 + num_classes
    t = np.zeros((grid, grid, 7 + num_classes), np.float32)
    taken = np.full((grid, grid), np.inf)
    cell = size / grid

    def mark_ignore(x1: float, y1: float, x2: float, y2: float) -> None:
        cx, cy = (x1 + x2) / 2 / cell, (y1 + y2) / 2 / cell
        gx0, gy0 = int(np.clip(cx, 0, grid - 1)), int(np.clip(cy, 0, grid - 1))
        t[max(0, gy0 - 1):gy0 + 2, max(0, gx0 - 1):gx0 + 2, ch_ign] = 1.0

    for x1, y1, x2, y2 in ignore:
        mark_ignore(x1, y1, x2, y2)
    for c, x1, y1, x2, y2 in sorted(boxes, key=lambda b: -(b[3] - b[1]) * (b[4] - b[2])):
        bw, bh = x2 - x1, y2 - y1
        if bw <= 0 or bh <= 0:
            continue
        if min(bw, bh) < MIN_TARGET_PX:
            mark_ignore(x1, y1, x2, y2)
            continue
        mark_ignore(x1, y1, x2, y2)
        cx, cy = (x1 + x2) / 2 / cell, (y1 + y2) / 2 / cell
        gx0, gy0 = int(np.clip(cx, 0, grid - 1)), int(np.clip(cy, 0, grid - 1))
        cells = [(gx0, gy0)]
        if min(bw, bh) >= NEIGHBOUR_MIN_PX:
            fx, fy = cx - gx0, cy - gy0
            nx = gx0 - 1 if fx < 0.5 else gx0 + 1
            ny = gy0 - 1 if fy < 0.5 else gy0 + 1
            cells += [(nx, gy0), (gx0, ny)]
        area = bw * bh
        for gx, gy in cells:
            if not (0 <= gx < grid and 0 <= gy < grid) or area > taken[gy, gx]:
                continue
            taken[gy, gx] = area
            t[gy, gx, :ch_box] = 0.0
            t[gy, gx, 0] = 1.0
            t[gy, gx, 1] = np.clip(cx - gx, 0.0, 1.0)
            t[gy, gx, 2] = np.clip(cy - gy, 0.0, 1.0)
            t[gy, gx, 3] = min(bw / norm, 1.0)
            t[gy, gx, 4] = min(bh / norm, 1.0)
            t[gy, gx, 5 + int(c)] = 1.0
            t[gy, gx, ch_box] = 1.0
    t[..., ch_ign] *= 1.0 - t[..., 0]  # a positive cell is never ignored
    return t


def dense_grid_loss(grid: int, num_classes: int, box_weight: float = 2.0,
                    alpha: float = 0.25, gamma: float = 2.0
                    ) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Focal objectness (ignore cells masked) + classes on positives + box on box cells.

    Everything is normalised by the number of positive cells in the batch. Box loss: L1 on
    the centre offsets and on sqrt(w), sqrt(h), plus GIoU (scale-free).
    """
    ch_box, ch_ign = 5 + num_classes, 6 + num_classes

    def loss(y_true: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        obj_t = y_true[..., 0]
        keep = 1.0 - y_true[..., ch_ign]
        bmask = y_true[..., ch_box]
        npos = tf.maximum(tf.reduce_sum(obj_t), 1.0)
        p = tf.sigmoid(logits[..., 0])
        bce = tf.nn.sigmoid_cross_entropy_with_logits(obj_t, logits[..., 0])
        if gamma:
            mod = tf.where(obj_t > 0, alpha * tf.pow(1.0 - p, gamma),
                           (1.0 - alpha) * tf.pow(p, gamma))
        else:  # plain weighted BCE (pow(p, 0) has a NaN gradient at p = 0)
            mod = tf.where(obj_t > 0, alpha, 1.0 - alpha)
        l_obj = tf.reduce_sum(keep * bce * mod) / npos

        s = tf.sigmoid(logits[..., 1:5])
        nbox = tf.maximum(tf.reduce_sum(bmask), 1.0)
        l1 = (tf.abs(s[..., 0] - y_true[..., 1]) + tf.abs(s[..., 1] - y_true[..., 2])
              + 4.0 * tf.abs(tf.sqrt(s[..., 2] + 1e-6) - tf.sqrt(y_true[..., 3] + 1e-6))
              + 4.0 * tf.abs(tf.sqrt(s[..., 3] + 1e-6) - tf.sqrt(y_true[..., 4] + 1e-6)))
        l_l1 = tf.reduce_sum(bmask * l1) / nbox

        l_giou = tf.reduce_sum(bmask * (1.0 - _giou(s, y_true, grid))) / nbox

        l_cls = tf.reduce_sum(obj_t * tf.reduce_sum(
            tf.nn.sigmoid_cross_entropy_with_logits(y_true[..., 5:ch_box], logits[..., 5:]),
            axis=-1)) / npos
        return 2.0 * l_obj + l_l1 + box_weight * l_giou + l_cls

    return loss


def zoom_sample(img_bgr: np.ndarray, boxes: list[Box], size: int, rng: np.random.Generator,
                zoom_p: float = 0.6, crop_range: tuple[int, int] = (96, 200),
                min_inside: float = 0.4
                ) -> tuple[np.ndarray, list[Box], list[tuple[float, float, float, float]]]:
    """A square BGR scene -> (RGB ``size`` model input, boxes, ignore boxes).

    With probability ``zoom_p`` (and if the scene has objects) a random square crop of side
    ``crop_range`` around a random object, resized up to the input; otherwise the whole
    scene resized to the input (the letterbox of a square scene). Boxes less than
    ``min_inside`` inside the crop become ignore regions.
    """
    side = img_bgr.shape[0]
    boxes = [b for b in boxes if b[0] >= 0]  # clutter boxes are only crop anchors
    ignore: list[tuple[float, float, float, float]] = []
    if boxes and rng.random() < zoom_p:
        _c, ox1, oy1, ox2, oy2 = boxes[int(rng.integers(len(boxes)))]
        s = int(rng.integers(crop_range[0], crop_range[1] + 1))
        s = int(min(side, max(s, 1.15 * max(ox2 - ox1, oy2 - oy1))))
        lo_x, hi_x = max(0, int(ox2) - s), min(side - s, int(ox1))
        lo_y, hi_y = max(0, int(oy2) - s), min(side - s, int(oy1))
        x0 = int(rng.integers(min(lo_x, hi_x), max(lo_x, hi_x) + 1))
        y0 = int(rng.integers(min(lo_y, hi_y), max(lo_y, hi_y) + 1))
        x0, y0 = int(np.clip(x0, 0, side - s)), int(np.clip(y0, 0, side - s))
        crop = img_bgr[y0:y0 + s, x0:x0 + s]
        k = size / s
        out_boxes: list[Box] = []
        for c, x1, y1, x2, y2 in boxes:
            cx1, cy1 = max(x1, x0), max(y1, y0)
            cx2, cy2 = min(x2, x0 + s), min(y2, y0 + s)
            if cx2 <= cx1 or cy2 <= cy1:
                continue
            nb = ((cx1 - x0) * k, (cy1 - y0) * k, (cx2 - x0) * k, (cy2 - y0) * k)
            inside = (cx2 - cx1) * (cy2 - cy1) / max(1e-6, (x2 - x1) * (y2 - y1))
            if inside < min_inside:
                ignore.append(nb)
            else:
                out_boxes.append((c, *nb))
        img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        k = size / side
        interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img_bgr, (size, size), interpolation=interp)
        out_boxes = [(c, x1 * k, y1 * k, x2 * k, y2 * k) for c, x1, y1, x2, y2 in boxes]
    return np.ascontiguousarray(img[..., ::-1]), out_boxes, ignore


def texture(rng: np.random.Generator, side: int) -> np.ndarray:
    """A background that is no road scene: coloured noise at several scales, a collage of
    shapes, or a grid of windows or tiles; blurred a little or not. A detector that has
    only seen rendered roads fires on the textures of real photos."""
    u = rng.random()
    if u < 0.4:  # noise at a few octaves, coloured
        out = np.zeros((side, side, 3), np.float32)
        for octave in range(int(rng.integers(1, 5))):
            cells = int(rng.integers(2, 8)) * 2 ** octave
            layer = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
            out += cv2.resize(layer, (side, side), interpolation=cv2.INTER_CUBIC) / 2 ** octave
        out = rng.uniform(60, 200, 3) + out * rng.uniform(10, 50)
    elif u < 0.7:  # shapes
        out = np.full((side, side, 3), rng.uniform(0, 255, 3), np.float32)
        for _ in range(int(rng.integers(3, 25))):
            colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
            x, y = (int(v) for v in rng.integers(0, side, 2))
            r = int(rng.integers(2, side // 2))
            if rng.random() < 0.5:
                cv2.circle(out, (x, y), r, colour, -1 if rng.random() < 0.7 else 2)
            else:
                cv2.rectangle(out, (x, y), (x + r, y + int(rng.integers(2, side // 2))),
                              colour, -1 if rng.random() < 0.7 else 2)
    else:  # a grid: windows, tiles, shelves
        out = np.full((side, side, 3), rng.uniform(0, 255, 3), np.float32)
        cw, ch = (int(v) for v in rng.integers(6, 40, 2))
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        fill = rng.uniform(0.3, 0.8)
        for y in range(0, side, ch):
            for x in range(0, side, cw):
                cv2.rectangle(out, (x, y), (x + int(cw * fill), y + int(ch * fill)), colour, -1)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 2.0)))
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def degrade(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Break the rendered look the way a real camera does, each with even odds: sensor
    noise, defocus/motion blur, JPEG blocks, a colour cast and saturation change, and a
    low-frequency texture over flat surfaces. The boxes are unchanged.

    Generated scenes are cleaner than any camera frame: flat colours, sharp edges, no
    compression. A model that keys on that look fires on real photos' textures instead
    (models/MODEL_CARD.md, false alarms on real photos)."""
    out = img.astype(np.float32)
    h, w = out.shape[:2]
    if rng.random() < 0.5:  # colour cast and saturation
        out *= rng.uniform(0.85, 1.15, 3).astype(np.float32)
        grey = out.mean(axis=2, keepdims=True)
        out = grey + (out - grey) * np.float32(rng.uniform(0.5, 1.4))
    if rng.random() < 0.5:  # smooth texture: a few percent of brightness, blotchy
        cells = int(rng.integers(3, 9))
        field = rng.normal(0, rng.uniform(0.03, 0.12), (cells, cells)).astype(np.float32)
        out *= 1 + cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    if rng.random() < 0.5:  # blur: defocus or a little motion
        k = int(rng.choice([3, 5]))
        if rng.random() < 0.5:
            out = cv2.GaussianBlur(out, (k, k), 0)
        else:
            kern = np.zeros((k, k), np.float32)
            kern[k // 2] = 1.0 / k
            out = cv2.filter2D(out, -1, kern)
    if rng.random() < 0.5:  # sensor noise
        out += rng.normal(0, rng.uniform(2, 10), out.shape).astype(np.float32)
    out8 = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # JPEG
        ok, buf = cv2.imencode(".jpg", out8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 85))])
        if ok:
            out8 = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return np.ascontiguousarray(out8)


def _augmented_dataset(count: int,
                       sample: Callable[[int, np.random.Generator],
                                        tuple[np.ndarray, list[Box],
                                              list[tuple[float, float, float, float]]]],
                       side: int, grid: int, num_classes: int, batch: int,
                       rng: np.random.Generator, wh_norm: float | None = None,
                       realism: float = 0.0) -> tf.data.Dataset:
    """Endless shuffled batches of (``sample(i)`` flipped and jittered, in [0, 1], dense
    target): the shared tail of the zoom-in and crop recipes. A ``realism`` share of the
    samples is also :func:`degrade`-d (with 0 the random stream is what it always was)."""
    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            for i in rng.permutation(count):
                img, bx, ign = sample(int(i), rng)
                if realism > 0 and rng.random() < realism:
                    img = degrade(img, rng)
                # ignore regions ride along as class -1 so that the flip moves them too
                img, allb = augment(img, bx + [(-1, *b) for b in ign], rng)
                bx = [b for b in allb if b[0] >= 0]
                ign = [b[1:] for b in allb if b[0] < 0]
                yield img, encode_dense_targets(bx, side, grid, num_classes, ign, wh_norm)

    sig = (tf.TensorSpec((side, side, 3), tf.uint8),
           tf.TensorSpec((grid, grid, 7 + num_classes), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
    return ds.batch(batch, drop_remainder=True).prefetch(4)


def make_zoom_dataset(scenes_bgr: np.ndarray, boxes: Sequence[list[Box]], size: int, grid: int,
                      num_classes: int, batch: int, seed: int,
                      zoom_p: float = 0.6) -> tf.data.Dataset:
    """Endless shuffled batches of (zoom-augmented RGB image in [0, 1], dense target)."""
    return _augmented_dataset(
        len(scenes_bgr),
        lambda i, rng: zoom_sample(scenes_bgr[i], list(boxes[i]), size, rng, zoom_p),
        size, grid, num_classes, batch, np.random.default_rng(np.random.SeedSequence([seed, 7])))


# --- default model, recipe 3: native-scale crops ----------------------------------------------
#
# The zoom-in recipe above still learned too slowly on 2 cores (held-out mAP ~0.01 after
# 25 min): zoomed objects are bigger than the same objects at run time, and a whole 256 px
# image per sample costs four 128 px crops. This recipe trains the fully convolutional network
# on small crops of the model-input image at (nearly) the run-time scale, most of them
# holding an object, and exports it at the full input size.


def crop_sample(img: np.ndarray, boxes: list[Box], crop: int, rng: np.random.Generator,
                obj_p: float = 0.8, scale_range: tuple[float, float] = (0.8, 1.25),
                min_inside: float = 0.5, clutter_p: float = 0.0
                ) -> tuple[np.ndarray, list[Box], list[tuple[float, float, float, float]]]:
    """A ``crop`` square of an RGB model-input image, scale-jittered a little.

    With probability ``obj_p`` the crop holds a random object; with ``clutter_p`` it holds a
    random clutter box (class id < 0, one per kind of clutter: a tree, a bush, a pedestrian;
    never a target), a hard negative; otherwise it lies anywhere. Boxes less than
    ``min_inside`` inside become ignore regions.
    """
    size = img.shape[0]
    objects = [b for b in boxes if b[0] >= 0]
    clutter = [b for b in boxes if b[0] < -1]
    # class -1: regions a data set's class map says to ignore (neither object nor background)
    ignored = [b for b in boxes if b[0] == -1]
    k = float(rng.uniform(*scale_range))
    s = int(min(size, round(crop / k)))
    k = crop / s
    u = rng.random()
    anchor = None
    if objects and u < obj_p:
        anchor = objects[int(rng.integers(len(objects)))]
    elif clutter and obj_p <= u < obj_p + clutter_p:
        # a kind first, then one of its boxes: rows of trees and lamps would otherwise
        # crowd out the rarer bushes and pedestrians
        kinds = sorted({b[0] for b in clutter})
        kind = kinds[int(rng.integers(len(kinds)))]
        some = [b for b in clutter if b[0] == kind]
        anchor = some[int(rng.integers(len(some)))]
    if anchor is not None:
        _c, ox1, oy1, ox2, oy2 = anchor
        lo_x, hi_x = int(ox2) - s, int(ox1)
        lo_y, hi_y = int(oy2) - s, int(oy1)
        x0 = int(rng.integers(min(lo_x, hi_x), max(lo_x, hi_x) + 1))
        y0 = int(rng.integers(min(lo_y, hi_y), max(lo_y, hi_y) + 1))
    else:
        x0, y0 = (int(v) for v in rng.integers(0, size - s + 1, 2))
    x0, y0 = int(np.clip(x0, 0, size - s)), int(np.clip(y0, 0, size - s))
    out = cv2.resize(img[y0:y0 + s, x0:x0 + s], (crop, crop), interpolation=cv2.INTER_LINEAR)
    kept: list[Box] = []
    ignore: list[tuple[float, float, float, float]] = []
    for c, x1, y1, x2, y2 in objects:
        cx1, cy1, cx2, cy2 = max(x1, x0), max(y1, y0), min(x2, x0 + s), min(y2, y0 + s)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        nb = ((cx1 - x0) * k, (cy1 - y0) * k, (cx2 - x0) * k, (cy2 - y0) * k)
        inside = (cx2 - cx1) * (cy2 - cy1) / max(1e-6, (x2 - x1) * (y2 - y1))
        (kept.append((c, *nb)) if inside >= min_inside else ignore.append(nb))
    for _c, x1, y1, x2, y2 in ignored:
        cx1, cy1, cx2, cy2 = max(x1, x0), max(y1, y0), min(x2, x0 + s), min(y2, y0 + s)
        if cx2 > cx1 and cy2 > cy1:
            ignore.append(((cx1 - x0) * k, (cy1 - y0) * k, (cx2 - x0) * k, (cy2 - y0) * k))
    return np.ascontiguousarray(out), kept, ignore


def make_crop_dataset(images_rgb: np.ndarray, boxes: Sequence[list[Box]], crop: int,
                      stride: int, num_classes: int, batch: int, seed: int,
                      obj_p: float = 0.8, clutter_p: float = 0.0,
                      realism: float = 0.0, textures: float = 0.0) -> tf.data.Dataset:
    """Endless shuffled batches of (crop in [0, 1], dense target) from model-input images.

    Box sizes in the targets are fractions of the full image side (the exported input). A
    ``textures`` share of the samples is a :func:`texture` with nothing in it instead: a
    negative that looks like no rendered road (with 0 the random stream is unchanged)."""
    def sample(i: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, list[Box], list[tuple[float, float, float, float]]]:
        if textures > 0 and rng.random() < textures:
            return texture(rng, crop), [], []
        return crop_sample(images_rgb[i], list(boxes[i]), crop, rng, obj_p,
                           clutter_p=clutter_p)

    return _augmented_dataset(
        len(images_rgb), sample,
        crop, crop // stride, num_classes, batch,
        np.random.default_rng(np.random.SeedSequence([seed, 8])), wh_norm=images_rgb.shape[1],
        realism=realism)


class StepSchedule(tf.keras.callbacks.Callback):
    """Linear warm-up, then cosine decay to 2% of ``peak`` over ``total`` steps; stops there.

    By steps, not by wall time: the same seed gives the same schedule on any machine, so a
    run can be reproduced (and a slower machine just takes longer)."""

    def __init__(self, peak: float, total: int, warm: int = 150) -> None:
        super().__init__()
        self.peak, self.total, self.warm = peak, max(1, total), max(1, min(warm, total // 4))
        self.step = 0
        self.t0 = time.time()

    def rate(self, step: int) -> float:
        frac = min(1.0, step / self.total)
        lr = self.peak * min(1.0, (step + 1) / self.warm)
        return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate.assign(self.rate(self.step))
        self.step += 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.step >= self.total:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        print(f"  step {self.step}/{self.total}, {(time.time() - self.t0) / 60:.1f} min, "
              f"lr {self.rate(self.step):.2e}" + (f", loss {loss:.3f}" if loss else ""),
              flush=True)
