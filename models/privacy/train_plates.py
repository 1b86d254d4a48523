"""Train the Korean licence-plate detector of the privacy step.

    python models/privacy/train_plates.py [--steps 6000] [--seed 5] [--out models/privacy]

writes ``korean_plates.tflite`` (full int8, the "patrol_grid" layout, one class ``plate``,
labels embedded), ``korean_plates.labels.txt`` and ``korean_plates.weights.h5``.

No package ships photos of Korean plates, so the plates are drawn (``plates.draw_plate``: the
four kinds, to the standard's proportions) and pasted into road frames that the simulator
renders, most of them on the back of its cars, at widths from 10 to 170 px: a plate from
30 m down to 2 m. Training varies what a camera varies and the measurement does not: the
digits' font and weight, the colours' fading, yaw and roll, light, blur, noise and JPEG. Hard
negatives are pasted too: signs and shop boards with text, of other proportions and
colours, so that the model learns a plate's look and not "white box with writing".

The network is the default model's grid detector at half width, trained on 128 px crops at
the scale it runs at and exported at 192 px: ``agent.plates`` runs it on a picture in 192 px
tiles at full resolution, as BlazeFace is run, and on the whole picture for the near
plates. Its frames come from their own seed stream; the measurement
(``plates.py``) pastes plates into the sample drive's frames, which no training sees.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models" / "train"))
sys.path.insert(0, str(HERE))
import gridnet  # noqa: E402  (models/train/gridnet.py)
import plates  # noqa: E402  (models/privacy/plates.py)
import tensorflow as tf  # noqa: E402

from agent.simulate.scene import render_training_recording  # noqa: E402

NAME = "korean_plates"
SIZE = 192   # exported input: the tile the agent runs
CROP = 128   # training crops, at run-time scale
STRIDE = 8
WIDTH = 0.5
STREAM = 31  # frames' seed stream: the sample drives use 1, the default model 2 and 3
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_PLAIN,
         cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
CAR = "car"


def backgrounds(seed: int, recordings: int, frames: int = 4
                ) -> tuple[list[np.ndarray], list[list[tuple[float, ...]]]]:
    """Road frames (BGR 640x360) and the boxes of the cars in them."""
    images, cars = [], []
    for seq in np.random.SeedSequence([seed, STREAM]).spawn(recordings):
        rec = render_training_recording(np.random.default_rng(seq), frames, step_m=5.0,
                                        clutter=True)
        for img, labels in rec:
            images.append(img)
            cars.append([tuple(map(float, b[1:])) for b in labels if b[0] == CAR])
    return images, cars


def random_plate(rng: np.random.Generator) -> np.ndarray:
    kind = list(plates.KINDS)[int(rng.choice(4, p=[0.45, 0.25, 0.15, 0.15]))]
    _size, bg, fg, _two = plates.KINDS[kind]
    fade = rng.uniform(0.75, 1.1)
    colours = (tuple(int(np.clip(c * fade + rng.normal(0, 8), 0, 255)) for c in bg),
               tuple(int(np.clip(c + rng.normal(0, 15), 0, 255)) for c in fg))
    return plates.draw_plate(kind, rng, font=int(FONTS[int(rng.integers(len(FONTS)))]),
                             weight=float(rng.uniform(1.6, 3.2)),
                             colours=colours)  # type: ignore[arg-type]


def random_board(rng: np.random.Generator) -> np.ndarray:
    """A sign or shop board with writing: not a plate (other proportions, colours, text)."""
    aspect = float(rng.choice([rng.uniform(0.5, 1.4), rng.uniform(6.0, 12.0)]))
    h = int(rng.integers(40, 120))
    w = max(20, int(h * aspect))
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    fg = tuple(int(255 - v) for v in bg)
    img = np.full((h, w, 3), bg, np.uint8)
    text = "".join(rng.choice(list("ABCDEFGHKMNPRSTUVWXZ0123456789 "), int(rng.integers(2, 9))))
    scale = h / 40
    cv2.putText(img, text, (int(0.05 * w), int(0.7 * h)), FONTS[int(rng.integers(len(FONTS)))],
                scale, fg, max(1, int(scale * 2)), cv2.LINE_AA)
    return img


def sample(frames: list[np.ndarray], cars: list[list[tuple[float, ...]]], i: int,
           rng: np.random.Generator, side: int = CROP
           ) -> tuple[np.ndarray, list[gridnet.Box], list[tuple[float, float, float, float]]]:
    """A ``side`` square (RGB) of frame ``i`` at a random camera scale, with plates pasted
    (on the cars where there are some) and maybe a board; the plates' boxes."""
    frame = frames[i]
    fh, fw = frame.shape[:2]
    # a camera of 450-1000 px width, or the whole picture shrunk into one tile
    k = float(np.exp(rng.uniform(np.log(0.3), np.log(1.6))))
    s = min(fh, round(side / k))
    k = side / s
    on_car = [c for c in cars[i] if (c[2] - c[0]) * k >= 30] if rng.random() < 0.6 else []
    if on_car:
        x1, y1, x2, y2 = on_car[int(rng.integers(len(on_car)))]
        x0 = int(np.clip((x1 + x2) / 2 - s / 2 + rng.normal(0, s / 6), 0, fw - s))
        y0 = int(np.clip(y2 - s * rng.uniform(0.3, 0.9), 0, fh - s))
    else:
        x0, y0 = int(rng.integers(0, fw - s + 1)), int(rng.integers(0, fh - s + 1))
    if rng.random() < 0.25:  # not a road at all: what else a camera sees
        crop = gridnet.texture(rng, side)
    else:
        crop = np.ascontiguousarray(cv2.resize(frame[y0:y0 + s, x0:x0 + s], (side, side),
                                               interpolation=cv2.INTER_AREA))
    if rng.random() < 0.35:
        board = random_board(rng)
        bw = int(rng.integers(16, 110))
        bh = max(4, min(side - 2, round(bw * board.shape[0] / board.shape[1])))
        bw = min(side - 2, bw)
        bx, by = int(rng.integers(0, side - bw)), int(rng.integers(0, side - bh))
        crop[by:by + bh, bx:bx + bw] = cv2.resize(board, (bw, bh), interpolation=cv2.INTER_AREA)
    boxes: list[gridnet.Box] = []
    count = int(rng.choice([0, 0, 1, 1, 2, 3]))
    for j in range(count):
        width = int(np.exp(rng.uniform(np.log(10), np.log(150))))
        width = min(width, side - 12)
        plate = random_plate(rng)
        # what plates.paste may take, with its yaw and roll
        height = width * plate.shape[0] / plate.shape[1] * 1.2 + 0.12 * width + 3
        if j == 0 and on_car:  # the car's back, low and centred
            cx = ((x1 + x2) / 2 - x0) * k + rng.normal(0, 0.05 * (x2 - x1) * k)
            cy = (y2 - y0) * k - (y2 - y1) * k * rng.uniform(0.1, 0.35)
            px, py = int(cx - width / 2), int(cy - height / 2)
        else:
            px, py = int(rng.integers(0, side - width)), int(rng.integers(0, side))
        px = int(np.clip(px, 0, side - width - 2))
        py = int(np.clip(py, 0, max(0, side - int(height) - 2)))
        if any(_overlap((px, py, px + width, py + height), b[1:]) > 0.05 for b in boxes):
            continue  # would cover another plate: one plate is not drawn over another
        boxes.append((0, *plates.paste(crop, plate, width, px, py, rng)))
    # light: a plate in shade or sun
    if rng.random() < 0.5:
        crop = np.clip(crop.astype(np.float32) * rng.uniform(0.5, 1.3)
                       + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(crop[..., ::-1]), boxes, []


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / max(1e-6, small)


def calibration(frames: list[np.ndarray], cars: list[list[tuple[float, ...]]], seed: int,
                count: int = 200) -> np.ndarray:
    """``SIZE`` tiles with plates, RGB, for the int8 conversion."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
    out = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for n in range(count):
        out[n] = sample(frames, cars, int(rng.integers(len(frames))), rng, SIZE)[0]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--recordings", type=int, default=150)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    tf.keras.utils.set_random_seed(args.seed)
    # a far long plate is 10 x 2 px: still a target, not an ignored smudge
    gridnet.MIN_TARGET_PX = 2.0
    t0 = time.time()
    frames, cars = backgrounds(args.seed, args.recordings)
    print(f"{len(frames)} frames rendered in {time.time() - t0:.0f} s", flush=True)
    net = gridnet.build_grid_net(CROP, 1, width=WIDTH, name=NAME, bn_momentum=0.9)
    ds = gridnet._augmented_dataset(
        len(frames), lambda i, rng: sample(frames, cars, i, rng), CROP, CROP // STRIDE, 1,
        args.batch, np.random.default_rng(np.random.SeedSequence([args.seed, 8])),
        wh_norm=SIZE, realism=0.5)
    net.compile(optimizer=tf.keras.optimizers.Adam(args.lr),
                loss=gridnet.dense_grid_loss(CROP // STRIDE, 1, alpha=0.5, gamma=0.0))
    per_epoch = min(200, args.steps)
    sched = gridnet.StepSchedule(args.lr, args.steps)
    net.fit(ds, epochs=math.ceil(args.steps / per_epoch), steps_per_epoch=per_epoch,
            callbacks=[sched], verbose=0)
    full = gridnet.build_grid_net(SIZE, 1, width=WIDTH, name=NAME, bn_momentum=0.9)
    full.set_weights(net.get_weights())
    calib = calibration(frames, cars, args.seed)
    gridnet.recalibrate_bn(full, calib, batches=20, seed=args.seed)
    path = gridnet.export_grid_model(full, SIZE, calib, len(calib), args.out, NAME, ["plate"])
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) after {sched.step} steps in "
          f"{(time.time() - t0) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
