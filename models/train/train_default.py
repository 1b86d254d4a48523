"""Train, quantize, evaluate and document the default civil-complaint model.

    pip install -e '.[train]'
    python models/train/train_default.py --seed 1 --out models/

writes models/civil-complaint.tflite (int8, labels embedded), models/civil-complaint.labels.txt
and models/MODEL_CARD.md. Real labelled photos in YOLO format train the same network:

    python models/train/train_default.py --seed 1 --out models/ --data /path/to/yolo_set
    python models/train/train_default.py --seed 1 --out models/ --data DIR --no-synthetic

Reproducible from the seed: ``tf.keras.utils.set_random_seed`` and fixed scene seed streams
(training ``SeedSequence([seed, 2])``, evaluation ``SeedSequence([eval_seed, 3])``; the
sample drives use ``[seed, 1]``, so none of them share scenes). Bit-exact weights also need
the same TensorFlow version and thread count (float summation order).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import evaluate
import gridnet

NAME = "civil-complaint"
STRIDE = 8
CKPT_DIR = Path("/tmp/patrol_train")


class _GridExport(tf.Module):
    """The exported model: frozen network + sigmoid on every channel (patrol_grid layout)."""

    def __init__(self, net: tf.keras.Model, size: int) -> None:
        super().__init__()
        self.net = gridnet.frozen_call(net, size)
        self.serve = tf.function(
            lambda image: tf.sigmoid(self.net(image)),
            input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="image")])


class _TimeBudget(tf.keras.callbacks.Callback):
    """Stops training after ``minutes`` of wall time (the weights of the last epoch are kept)."""

    def __init__(self, minutes: float) -> None:
        super().__init__()
        self.deadline = time.time() + minutes * 60

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if time.time() > self.deadline:
            print(f"time budget reached after epoch {epoch + 1}", flush=True)
            self.model.stop_training = True


def load_training_set(args: argparse.Namespace) -> tuple[np.ndarray, list[list[data.Box]]]:
    """Synthetic scenes and/or a YOLO data set, letterboxed into the model input."""
    images, boxes = [], []
    if not args.no_synthetic:
        t0 = time.time()
        bgr, bx = data.synthetic_scenes(args.seed, data.TRAIN_STREAM, args.train_scenes,
                                        workers=args.workers)
        print(f"{len(bgr)} synthetic scenes in {time.time() - t0:.0f} s", flush=True)
        im, bx = data.to_model_input(bgr, bx, args.size)
        images.append(im)
        boxes += bx
    if args.data:
        im, bx = data.yolo_dataset(args.data, args.size)
        print(f"{len(im)} photos from {args.data}", flush=True)
        # Real photos are worth more than generated scenes: repeat them to weigh them up.
        reps = max(1, args.real_repeat)
        images += [im] * reps
        boxes += bx * reps
    if not images:
        raise SystemExit("no training data: drop --no-synthetic or give --data DIR")
    return np.concatenate(images), boxes


def train(args: argparse.Namespace, images: np.ndarray,
          boxes: list[list[data.Box]]) -> tf.keras.Model:
    grid = args.size // STRIDE
    net = gridnet.build_grid_net(args.size, len(data.CLASSES), width=args.width, name=NAME,
                                 bn_momentum=0.9)
    if args.weights:
        net.load_weights(args.weights)
        gridnet.recalibrate_bn(net, images, seed=args.seed)
        return net
    total = args.epochs * args.steps
    warm = min(300, total // 10)
    sched = tf.keras.optimizers.schedules.CosineDecay(
        2e-4, max(1, total - warm), alpha=0.02, warmup_target=2e-3, warmup_steps=warm)
    net.compile(optimizer=tf.keras.optimizers.Adam(sched), loss=gridnet.grid_loss(grid))
    ds = gridnet.make_dataset(images, boxes, grid, len(data.CLASSES), args.batch, args.seed)
    ckpt = CKPT_DIR / f"seed{args.seed}"
    ckpt.mkdir(parents=True, exist_ok=True)
    cbs = [tf.keras.callbacks.ModelCheckpoint(str(ckpt / "last.weights.h5"),
                                              save_weights_only=True),
           _TimeBudget(args.max_minutes)]
    net.fit(ds, epochs=args.epochs, steps_per_epoch=args.steps, callbacks=cbs, verbose=2)
    gridnet.recalibrate_bn(net, images, seed=args.seed)
    return net


def export(net: tf.keras.Model, args: argparse.Namespace, images: np.ndarray) -> Path:
    """Full-int8 .tflite with the labels appended as Model Maker-style metadata."""
    blob = gridnet.convert_int8(_GridExport(net, args.size),
                                gridnet.representative(images, args.calibration))
    blob = gridnet.append_labels(blob, data.CLASSES)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{NAME}.tflite"
    path.write_bytes(blob)
    gridnet.write_labels(args.out / f"{NAME}.labels.txt", data.CLASSES)
    return path


def _fmt(ap: float | None) -> str:
    return "n/a" if ap is None else f"{ap:.3f}"


def write_model_card(path: Path, args: argparse.Namespace, res: dict, train_s: float,
                     n_train: int, n_params: int) -> None:
    """MODEL_CARD.md from the run's real figures."""
    size_kb = path.stat().st_size / 1024
    grid = args.size // STRIDE
    ap_rows = "\n".join(f"| {c} | {res['instances'][c]} | {_fmt(res['ap50'][c])} |"
                        for c in data.CLASSES)
    inv = res["invoke_ms"]
    data_line = (f"{n_train} synthetic scenes" if not args.data else
                 f"{n_train} images (synthetic: {not args.no_synthetic}; photos from "
                 f"{args.data})")
    text = f"""# civil-complaint — the default patrol-agent detector

Generated by `models/train/train_default.py` on {dt.date.today().isoformat()}; every figure
below comes from that run (`evaluate.py` recomputes them).

## Purpose
Finds civil-complaint elements in road-side camera frames on a Raspberry Pi 4/5:
**garbage** (illegal dumping), **banner** (illegal banners / placards) and **construction**
(unauthorized construction sites). Two distractor classes, **bin** (legal public trash bin) and
**sign** (legal road sign), are learned so that they are *not* reported as garbage or banner;
the agent reports only the first three.

## Input and preprocessing
- `[1, {args.size}, {args.size}, 3]` **uint8 RGB**, quantization scale 1/255, zero point 0: raw
  pixels go in unchanged.
- The camera frame is **letterboxed** into the square (aspect kept, centred, grey 114 bars),
  as `agent.detector.letterbox` does at run time and as the training images were made.

## Output layout: `patrol_grid`
One int8 tensor `[1, {grid}, {grid}, 10]` (stride {STRIDE}: a {grid}x{grid} grid), every channel
a sigmoid computed inside the model (int8 scale 1/256, zero point -128):

| channel | meaning |
| --- | --- |
| 0 | objectness |
| 1, 2 | box centre x, y within its grid cell (0..1) |
| 3, 4 | box width, height as fractions of the input (0..1) |
| 5..9 | class probabilities: garbage, banner, construction, bin, sign |

Decoding (`agent.detector.decode_grid`): `cx = (gx + out[...,1]) / G`,
`cy = (gy + out[...,2]) / G`, `score = objectness * max class probability`, then class-aware
NMS. Each object was assigned to the one cell holding its centre.

## Classes
`civil-complaint.labels.txt`, one per line, in output order: {", ".join(data.CLASSES)}.
The same list is appended to the `.tflite` as a zip holding `labels.txt` (Model Maker-style
metadata; `agent.detector.embedded_labels` reads it).

## Network and size
MobileNet-like stack of depthwise-separable blocks (ReLU6) down to stride 32, a small FPN
(upsample + add) back to stride {STRIDE}, one 1x1 head; width multiplier {args.width},
{n_params:,} parameters.
Full-integer quantization (int8 weights and activations) calibrated on {args.calibration}
training scenes. **Size on disk: {size_kb:.0f} KB.**

## Data
Synthetic road-side scenes from `agent.simulate.scene.render_training_scene`
({data.SCENE_SIZE}x{data.SCENE_SIZE}), resized into the {args.size}x{args.size} input.
Seed streams never overlap:
training `np.random.SeedSequence([{args.seed}, {data.TRAIN_STREAM}])` (one spawned child per
scene), held-out evaluation `SeedSequence([{args.eval_seed}, {data.EVAL_STREAM}])`, sample drives
`SeedSequence([seed, 1])`. Training set: {data_line}; augmentation: horizontal flip,
brightness/contrast jitter. Training: {args.batch}-image batches, up to {args.epochs} epochs of
{args.steps} steps, Adam with warm-up + cosine decay, {train_s / 60:.0f} min on this machine.

## Accuracy (held-out synthetic scenes)
int8 model run through `agent.detector.Detector` (letterbox, int8 invoke, decode, NMS IoU 0.45,
score threshold 0.05) on **N = {res["n_scenes"]}** held-out scenes; AP@0.5, VOC all-point
interpolation.

| class | instances | AP@0.5 |
| --- | --- | --- |
{ap_rows}

**mAP@0.5 (garbage, banner, construction): {res["map50_reported"]:.3f}**;
mAP@0.5 over all five classes: {res["map50_all"]:.3f}.

## Speed
Median `interpreter.invoke()` of 50 runs with ai-edge-litert (XNNPACK) on the machine that
trained it, a **2-core x86 VM** ({platform.processor() or platform.machine()}):
**{inv[1]:.1f} ms at 1 thread, {inv[4]:.1f} ms at 4 threads** (4 threads on 2 cores gain
nothing). Not a Pi measurement. For scale: published Raspberry Pi 4 figures for int8
SSD-MobileNet-V2 320x320 are about 10 FPS (~100 ms) with TFLite; this network has far fewer
multiply-adds than that, so it should comfortably exceed that frame rate on a Pi 4 — measure
with `benchmarks/` on the device before relying on it.

## Limitations
- **Synthetic data only.** The scenes are generated; AP on them says the pipeline and the
  network work, not how the model does on real streets. It must be retrained (or at least
  fine-tuned) on real labelled photos from the patrol cameras before production use.
- Small, far-away objects (a few pixels at {args.size}x{args.size}) are missed; one object per
  grid cell (the smaller wins when two centres share a cell).
- Distractor classes are only as good as the generator's bins and signs.

## Reproduce
```
pip install -e '.[train]'        # tensorflow-cpu {tf.__version__}; better in a separate venv
python models/train/train_default.py --seed {args.seed} --out models/ \\
    --size {args.size} --width {args.width} --train-scenes {args.train_scenes} \\
    --epochs {args.epochs} --steps {args.steps} --batch {args.batch} \\
    --max-minutes {args.max_minutes:g} --eval-seed {args.eval_seed} --eval-scenes {res["n_scenes"]}
python models/train/evaluate.py models/civil-complaint.tflite --eval-seed {args.eval_seed} \\
    -n {res["n_scenes"]}
```
Scenes are cached under `/tmp/patrol_scenes` (set `PATROL_SCENE_CACHE` to move it). The weights
are bit-exact only with the same TensorFlow version and CPU thread count; `--max-minutes` stops
early on a slower machine, so keep it generous when reproducing.

## Retraining on real labelled photos
Put the photos in YOLO format, classes numbered in the order above (0 garbage, 1 banner,
2 construction, 3 bin, 4 sign):
```
DIR/images/0001.jpg      DIR/labels/0001.txt:   <class> <cx> <cy> <w> <h>   (normalised 0..1)
```
then `python models/train/train_default.py --seed 1 --out models/ --data DIR` (synthetic +
photos, photos repeated `--real-repeat` times) or add `--no-synthetic` for photos only.
Photos are letterboxed into the square input exactly as the agent does at run time. Hold out
some photos and evaluate on them before deploying.

COCO JSON to YOLO: for each annotation, `cx = (x + w/2) / image_width`,
`cy = (y + h/2) / image_height`, `w /= image_width`, `h /= image_height` (COCO `bbox` is
`[x, y, w, h]` in pixels from the top-left), map `category_id` to the index in the list
above, write one line per box into `labels/<image stem>.txt` (or use e.g. Ultralytics'
`convert_coco` / a few lines of Python).
"""
    (args.out / "MODEL_CARD.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("models"))
    ap.add_argument("--size", type=int, default=256, help="square input side (multiple of 32)")
    ap.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    ap.add_argument("--train-scenes", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--steps", type=int, default=100, help="batches per epoch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=35.0, help="training wall-time cap")
    ap.add_argument("--eval-seed", type=int, default=None, help="default: --seed")
    ap.add_argument("--eval-scenes", type=int, default=500)
    ap.add_argument("--calibration", type=int, default=200, help="representative scenes")
    ap.add_argument("--data", type=Path, default=None, help="YOLO-format photos (see card)")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--real-repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="scene rendering processes")
    ap.add_argument("--weights", type=Path, default=None,
                    help="skip training: export and evaluate these Keras weights")
    args = ap.parse_args(argv)
    if args.eval_seed is None:
        args.eval_seed = args.seed
    if args.size % 32:
        raise SystemExit("--size must be a multiple of 32")
    tf.keras.utils.set_random_seed(args.seed)

    images, boxes = load_training_set(args)
    t0 = time.time()
    net = train(args, images, boxes)
    train_s = time.time() - t0
    path = export(net, args, images)
    print(f"wrote {path} ({path.stat().st_size} bytes)", flush=True)

    ev_img, ev_box = data.synthetic_scenes(args.eval_seed, data.EVAL_STREAM, args.eval_scenes,
                                           workers=args.workers)
    res = evaluate.evaluate(path, ev_img, ev_box)
    res["invoke_ms"] = {t: evaluate.invoke_ms(path, t) for t in (1, 4)}
    print(json.dumps(res, indent=2), flush=True)
    write_model_card(path, args, res, train_s, len(images), net.count_params())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
