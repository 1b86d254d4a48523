"""Retrain the detector on a labelled photo data set: COCO, YOLO, Pascal VOC or AI-Hub JSON.

    pip install -e '.[train]'
    python models/train/train_dataset.py DATA --classes classes.toml --out OUT \\
        [--format auto|coco|yolo|voc|aihub] [--steps 20000] [--seed 1] \\
        [--init-weights models/civil-complaint.weights.h5] [--synthetic 0]

One command from a data set to a model the agent runs (``detector.model = OUT/NAME.tflite``):

1. **read** the set (``datasets.read``) and map its labels onto ours with the class mapping
   file (``datasets.ClassMap``; ``models/train/classes.example.toml`` shows the form). A label
   the file does not mention stops the run, listed by name.
2. **split** train / validation / held-out by recording, never by image
   (``datasets.split``: a recording's frames are near-copies and must not sit on both sides),
   from the seed alone; ``OUT/split.json`` lists every image's part.
3. **train** the project's grid network from scratch, or fine-tune it from Keras weights
   (``--init-weights``; every training run writes ``OUT/NAME.weights.h5`` for the next one),
   on native-scale crops of the letterboxed photos with flips, jitter and camera-like
   degradation (``--realism``), optionally mixed with generated scenes (``--synthetic N``),
   for a fixed number of steps with a warm-up + cosine schedule: the same seed, data and
   TensorFlow version give the same weights on any machine, however slow.
4. **calibrate** the full-int8 conversion on the training photos themselves.
5. **judge** the int8 model through ``agent.detector.Detector``, as the agent runs it, on the
   held-out photos (and the validation photos, for choosing settings: held-out figures are
   for the card only): AP@0.5 per class and by object size, and false alarms per image.
6. **write** ``OUT/NAME.tflite`` (labels embedded), ``OUT/NAME.labels.txt``,
   ``OUT/MODEL_CARD.md`` (every figure from this run), ``OUT/evaluation.json`` and
   ``OUT/split.json``.

Labels mapped to ``ignore`` are neither object nor background in training and in the AP
(a detection on them counts neither way); labels mapped to ``background`` become places
where training centres crops to show what is not a finding (hard negatives).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

# TensorFlow's start-up chatter would bury the run's own messages and errors
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data
import datasets
import evaluate
import gridnet

from agent.detector import Detector, letterbox

STRIDE = 8
SIZE_BINS = (("small", 0.0, 16.0), ("medium", 16.0, 48.0), ("large", 48.0, math.inf))
"""Object height in model-input pixels (the letterboxed 320 square): under 16 px an object is
a few grid cells, what a far sighting looks like."""
ALARM = evaluate.ALARM_THRESHOLD
NEGATIVE = -2
"""Class id of a box mapped to "background": a crop anchor (hard negative), never a target."""


# --- data -------------------------------------------------------------------------------------


class Photo:
    """One photo letterboxed into the model input, with its boxes in input pixels."""

    __slots__ = ("boxes", "group", "path", "rgb")

    def __init__(self, path: Path, group: str, rgb: np.ndarray,
                 boxes: list[data.Box]) -> None:
        self.path, self.group, self.rgb, self.boxes = path, group, rgb, boxes


def load_photos(samples: Sequence[datasets.Sample], cmap: datasets.ClassMap,
                size: int) -> list[Photo]:
    """Read and letterbox each photo exactly as the agent does at run time; boxes follow
    (mapped classes; ignored labels as -1; background labels as hard-negative anchors)."""
    out = []
    for s in samples:
        bgr = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
        if bgr is None:
            raise datasets.DatasetError(f"{s.image}: not a readable image")
        rgb, lb = letterbox(bgr, size, size)
        sx, sy = s.width / bgr.shape[1], s.height / bgr.shape[0]  # annotation vs file pixels
        mapped = list(cmap.apply(s))
        mapped += [(NEGATIVE, b.x1, b.y1, b.x2, b.y2) for b in s.boxes if b.label in cmap.dropped]
        boxes = [(c, *lb.to_input(x1 / sx, y1 / sy, x2 / sx, y2 / sy))
                 for c, x1, y1, x2, y2 in mapped]
        out.append(Photo(s.image, s.group, rgb, boxes))
    return out


# --- evaluation -------------------------------------------------------------------------------


def judge(model: Path, photos: Sequence[Photo], labels: Sequence[str]) -> dict[str, object]:
    """AP@0.5 per class, overall and by object size, and false alarms per image, of the int8
    model run through the agent's Detector on the photos (their letterboxed input: the boxes
    are compared in input pixels, where object size means what the network saw)."""
    det = Detector(model, threads=2, score_threshold=0.05, max_detections=100)
    if list(det.labels) != list(labels):
        raise SystemExit(f"{model}: labels {det.labels} are not {list(labels)}")
    side = det.in_h
    preds, truths = [], []
    alarms = 0
    for ph in photos:
        found = det.detect(ph.rgb[..., ::-1])  # the Detector takes BGR frames
        p = [(d.class_id, d.score, np.array(d.bbox) * side) for d in found]
        objs = [(c, np.array(b)) for c, *b in ph.boxes if c >= 0]
        ign = [np.array(b) for c, *b in ph.boxes if c == -1]
        truths.append(objs)
        kept = []
        for c, s, b in p:
            # a detection on an ignored region counts neither way
            if ign and evaluate._iou(b, np.array(ign)).max() >= 0.5:
                continue
            kept.append((c, s, b))
            if labels[c] in evaluate.REPORTED and s >= ALARM:
                on_any = [bb for _, bb in objs] + ign
                if not on_any or evaluate._iou(b, np.array(on_any)).max() < 0.3:
                    alarms += 1
        preds.append(kept)
    nc = len(labels)

    def table(lo: float, hi: float) -> dict[str, float | None]:
        aps = evaluate.average_precision(preds, truths, nc, min_h=lo, max_h=hi)
        return dict(zip(labels, aps, strict=True))

    def count(lo: float, hi: float) -> dict[str, int]:
        return {lab: sum(1 for t in truths for k, b in t if k == i and lo <= b[3] - b[1] < hi)
                for i, lab in enumerate(labels)}

    def mean(aps: dict[str, float | None], names: Sequence[str]) -> float | None:
        v = [aps[n] for n in names if aps.get(n) is not None]
        return float(np.mean(v)) if v else None

    res: dict[str, object] = {"images": len(photos), "ap50": table(0, math.inf),
                              "instances": count(0, math.inf)}
    res["map50_reported"] = mean(res["ap50"], evaluate.REPORTED)  # type: ignore[arg-type]
    res["map50_all"] = mean(res["ap50"], labels)  # type: ignore[arg-type]
    res["by_size"] = {name: {"px": [lo, hi if math.isfinite(hi) else None],
                             "ap50": table(lo, hi), "instances": count(lo, hi)}
                      for name, lo, hi in SIZE_BINS}
    for v in res["by_size"].values():  # type: ignore[union-attr]
        v["map50_reported"] = mean(v["ap50"], evaluate.REPORTED)
    res["false_alarms_per_image"] = alarms / max(1, len(photos))
    res["false_alarms"] = alarms
    res["alarm_threshold"] = ALARM
    return res


# --- training ---------------------------------------------------------------------------------


def train(args: argparse.Namespace, images: np.ndarray, boxes: list[list[data.Box]]
          ) -> tf.keras.Model:
    """The grid network trained for ``args.steps`` steps on native-scale crops."""
    nc = len(data.CLASSES)
    full = gridnet.build_grid_net(args.size, nc, width=args.width, name=args.name,
                                  bn_momentum=0.9)
    net = gridnet.build_grid_net(args.crop, nc, width=args.width, name=args.name,
                                 bn_momentum=0.9)
    if args.init_weights and args.init_weights.suffix == ".tflite":
        # the shipped model: its int8 weights, dequantized, its BatchNorms rebuilt on ours
        gridnet.weights_from_tflite(full, args.init_weights, images)
        net.set_weights(full.get_weights())
    elif args.init_weights:
        net.load_weights(args.init_weights)  # same layers at any input size
    ds = gridnet.make_crop_dataset(images, boxes, args.crop, STRIDE, nc, args.batch, args.seed,
                                   obj_p=args.crop_objects, clutter_p=args.crop_clutter,
                                   realism=args.realism)
    loss = gridnet.dense_grid_loss(args.crop // STRIDE, nc, alpha=0.75, gamma=0.0)
    net.compile(optimizer=tf.keras.optimizers.Adam(args.lr), loss=loss)
    per_epoch = min(200, args.steps)
    sched = gridnet.StepSchedule(args.lr, args.steps)
    t0 = time.time()
    net.fit(ds, epochs=math.ceil(args.steps / per_epoch), steps_per_epoch=per_epoch,
            callbacks=[sched], verbose=0)
    args.step_seconds = (time.time() - t0) / max(1, sched.step)  # for the card's timing
    full.set_weights(net.get_weights())
    # a small set needs fewer passes to settle the BatchNorm statistics
    gridnet.recalibrate_bn(full, images, batches=min(60, max(10, len(images) // 8)),
                           seed=args.seed)
    return full


# --- model card -------------------------------------------------------------------------------


def _f(v: object) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def model_card(args: argparse.Namespace, path: Path, parts: dict[str, list[Photo]],
               res: dict, train_s: float, n_params: int) -> str:
    """MODEL_CARD.md: every figure from this run."""
    held, val, before = res["held_out"], res["val"], res.get("held_out_before")
    before_line = ("" if not before else
                   f"\nThe model it was fine-tuned from (`{args.init_weights.name}`), on the same "
                   f"held-out images: mAP {_f(before['map50_reported'])}, "
                   f"{before['false_alarms_per_image']:.2f} false alarms per image.\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    n_img = {k: len(v) for k, v in parts.items()}
    n_grp = {k: len({p.group for p in v}) for k, v in parts.items()}
    sizes = [name for name, _, _ in SIZE_BINS]
    head = "| class | instances | AP@0.5 | " + " | ".join(
        f"{n} ({lo:g}{f'-{hi:g}' if math.isfinite(hi) else '+'} px)" for n, lo, hi in SIZE_BINS)
    rows = []
    for c in data.CLASSES:
        cells = [f"{_f(held['by_size'][s]['ap50'][c])} ({held['by_size'][s]['instances'][c]})"
                 for s in sizes]
        rows.append(f"| {c} | {held['instances'][c]} | {_f(held['ap50'][c])} | "
                    + " | ".join(cells) + " |")
    rep = " | ".join(_f(held["by_size"][s]["map50_reported"]) for s in sizes)
    cmd = " ".join(a if " " not in a else f"'{a}'" for a in sys.argv)
    return f"""# {args.name}: the detector retrained on {args.data.name}

Written by `models/train/train_dataset.py` on {dt.date.today().isoformat()}; every figure below
comes from that run (also in `evaluation.json`). Model file sha256 `{sha}…`.

## Data
- Set: `{args.data}` ({args.format}), labels mapped by `{args.classes}`.
- Split by recording (seed {args.seed}, `split.json`): train {n_img['train']} images in
  {n_grp['train']} recordings, validation {n_img['val']} in {n_grp['val']}, held-out
  {n_img['held_out']} in {n_grp['held_out']}. No recording is in two parts.
- Training also used {args.synthetic} generated scenes.
- int8 calibration: {min(args.calibration, n_img['train'])} of the training photos.

## Training
{"Fine-tuned from `" + str(args.init_weights) + "`" if args.init_weights else "From scratch"};
{args.steps} steps of {args.batch} crops ({args.crop}x{args.crop}, native scale), Adam, warm-up +
cosine decay from {args.lr:g}, {args.realism:.0%} of the crops degraded like a camera's frames
(noise, blur, JPEG, colour, texture). {train_s / 60:.1f} min in all on this
{os.cpu_count()}-core {platform.machine()} machine (TensorFlow {tf.__version__}),
{args.step_seconds:.3f} s per step of {args.batch}. {n_params:,} parameters, input
{args.size}x{args.size} uint8 RGB, letterboxed, `patrol_grid` output.

## Held-out accuracy
int8 model through `agent.detector.Detector` as the agent runs it, on the {held['images']}
held-out images; AP@0.5 (VOC all-point), object sizes by height in the {args.size}x{args.size}
input, instances in brackets.

{head} |
| --- | --- | --- | {" | ".join("---" for _ in sizes)} |
{chr(10).join(rows)}
| **mAP (garbage, banner, construction)** | | **{_f(held['map50_reported'])}** | {rep} |

False alarms (a garbage, banner or construction detection scoring {ALARM:g} or more that
overlaps no labelled box): **{held['false_alarms_per_image']:.2f} per image**
({held['false_alarms']} on {held['images']} images).
{before_line}
Validation (for choosing settings; not a figure to quote): mAP {_f(val['map50_reported'])},
{val['false_alarms_per_image']:.2f} false alarms per image.

## Reproduce
```
{cmd}
```
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, help="the data set: a COCO .json, or a folder")
    ap.add_argument("--format", default="auto", choices=("auto", *datasets.FORMATS))
    ap.add_argument("--classes", type=Path, required=True, help="class mapping file (TOML)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--name", default="civil-complaint")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--val", type=float, default=0.1, help="share of images for validation")
    ap.add_argument("--held-out", type=float, default=0.1, help="share of images held out")
    ap.add_argument("--steps", type=int, default=20000, help="training steps (batches)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--size", type=int, default=320, help="square input side (multiple of 32)")
    ap.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    ap.add_argument("--crop", type=int, default=128, help="training crop side")
    ap.add_argument("--crop-objects", type=float, default=0.65)
    ap.add_argument("--crop-clutter", type=float, default=0.25,
                    help="share of crops centred on background-mapped boxes")
    ap.add_argument("--realism", type=float, default=0.5,
                    help="share of crops degraded like a camera frame")
    ap.add_argument("--synthetic", type=int, default=0, help="generated scenes to mix in")
    ap.add_argument("--init-weights", type=Path, default=None,
                    help="fine-tune from a model: the shipped int8 .tflite "
                         "(models/civil-complaint.tflite) or a previous run's .weights.h5")
    ap.add_argument("--calibration", type=int, default=200, help="photos for int8 calibration")
    ap.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    args = ap.parse_args(argv)
    if args.size % 32 or args.crop % 32:
        raise SystemExit("--size and --crop must be multiples of 32")
    try:
        samples = datasets.read(args.data, args.format)
        if args.format == "auto":
            args.format = datasets.detect_format(args.data)
        cmap = datasets.ClassMap.load(args.classes, data.CLASSES)
        cmap.check(samples)
        split = datasets.split(samples, args.seed, val=args.val, held_out=args.held_out)
        parts = {k: load_photos(v, cmap, args.size) for k, v in split.items()}
    except datasets.DatasetError as e:
        print(f"train_dataset: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "split.json").write_text(json.dumps(
        {k: [str(p.path) for p in v] for k, v in parts.items()}, indent=1), encoding="utf-8")
    print(", ".join(f"{k}: {len(v)} images" for k, v in parts.items()), flush=True)

    tf.keras.utils.set_random_seed(args.seed)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    images = [p.rgb for p in parts["train"]]
    boxes = [p.boxes for p in parts["train"]]
    if args.synthetic:
        bgr, bx = data.synthetic_scenes(args.seed, data.TRAIN_STREAM, args.synthetic,
                                        clutter=True)
        im, bx = data.to_model_input(bgr, bx, args.size)
        images += list(im)
        boxes += bx
    images_np = np.stack(images)
    t0 = time.time()
    try:
        net = train(args, images_np, boxes)
    except (ValueError, OSError) as e:  # --init-weights of another network, or unreadable
        print(f"train_dataset: --init-weights {args.init_weights}: {e}", file=sys.stderr)
        return 2
    train_s = time.time() - t0
    # calibration: a seeded draw of the set's own photos (the first rows of images_np), taken
    # by index so that a large set is not copied whole a second time
    pick = np.random.default_rng(args.seed).permutation(len(parts["train"]))
    calib = images_np[pick[:args.calibration]]
    path = gridnet.export_grid_model(net, args.size, calib, args.calibration, args.out,
                                     args.name, data.CLASSES)
    held = judge(path, parts["held_out"], data.CLASSES)
    val = judge(path, parts["val"], data.CLASSES)
    res = {"held_out": held, "val": val, "steps": args.steps, "seed": args.seed,
           "train_minutes": round(train_s / 60, 2),
           "step_seconds": round(args.step_seconds, 4), "batch": args.batch}
    if args.init_weights and args.init_weights.suffix == ".tflite":
        # the model it started from, on the same held-out photos: did retraining help?
        res["held_out_before"] = judge(args.init_weights, parts["held_out"], data.CLASSES)
    (args.out / "evaluation.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
    (args.out / "MODEL_CARD.md").write_text(
        model_card(args, path, parts, res, train_s, net.count_params()), encoding="utf-8")
    print(f"wrote {path}; held-out mAP (reported classes) {_f(held['map50_reported'])}, "
          f"{held['false_alarms_per_image']:.2f} false alarms per image", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
