"""Training and evaluation data for the default civil-complaint model.

Two sources, same output (RGB uint8 images letterboxed into the square model input, boxes as
(class id, x1, y1, x2, y2) in input pixels):

* synthetic road-side scenes from ``agent.simulate.scene.render_training_scene``. Seed
  streams never overlap with the sample drives (which use ``SeedSequence([seed, 1])``):
  training scenes come from ``SeedSequence([train_seed, 2])`` and held-out evaluation scenes
  from ``SeedSequence([eval_seed, 3])``. Each scene gets its own child seed (``spawn``), so
  the set is the same whatever the number of worker processes.
* a YOLO-format data set of real labelled photos (``--data DIR``): ``images/*.jpg`` (or
  .png) and ``labels/<same stem>.txt`` with lines ``class cx cy w h`` normalised to the
  photo, classes in :data:`CLASSES` order. Photos are letterboxed exactly as the agent does
  at run time (``agent.detector.letterbox``: aspect kept, grey 114 bars).

Training scenes also carry the visible road-side clutter (trees, poles, cars, pedestrians,
bushes) as boxes with negative class ids (:func:`clutter_id`): training crops centred on them
are the hard negatives that teach the model what is not a finding. Only code that asks for them
(``clutter=True``) sees them; evaluation never does.

Rendered scenes are cached as .npz under /tmp (never in the repository).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import cv2
import numpy as np

from agent.detector import letterbox
from agent.simulate import CLASSES as SIM_CLASSES
from agent.simulate import CLUTTER_KINDS, render_training_scene

CLASSES = ["garbage", "banner", "construction", "bin", "sign"]
"""Model class order. bin (legal public trash bin) and sign (legal road sign) are distractor
classes: learning them keeps the model from calling them garbage / banner; the agent only
reports the first three."""

TRAIN_STREAM = 2
EVAL_STREAM = 3
SCENE_SIZE = 320
CACHE = Path(os.environ.get("PATROL_SCENE_CACHE", "/tmp/patrol_scenes"))

Box = tuple[int, float, float, float, float]


def clutter_id(kind: str) -> int:
    """Class id of a clutter box: -2, -3, ... by kind (a hard-negative anchor, never a
    target; -1 marks ignore regions inside training)."""
    return -2 - CLUTTER_KINDS.index(kind)


def clutter_kind(class_id: int) -> str:
    """The kind of clutter a :func:`clutter_id` stands for."""
    return CLUTTER_KINDS[-2 - class_id]


def _render(args: tuple[np.random.SeedSequence, int]) -> tuple[np.ndarray, list[Box]]:
    """One scene, BGR at SCENE_SIZE, boxes (clutter included) in its pixels (run in a worker
    process)."""
    seq, size = args
    img, boxes = render_training_scene(np.random.default_rng(seq), width=size, height=size,
                                       clutter=True)
    out: list[Box] = []
    for name, x1, y1, x2, y2 in boxes:
        if name in CLUTTER_KINDS:
            c = clutter_id(name)
        elif name in CLASSES:
            c = CLASSES.index(name)
        else:
            raise ValueError(f"scene class {name!r} is not one of {CLASSES} ({SIM_CLASSES})")
        out.append((c, float(x1), float(y1), float(x2), float(y2)))
    return np.ascontiguousarray(img, dtype=np.uint8), out


def synthetic_scenes(seed: int, stream: int, count: int, workers: int = 2,
                     clutter: bool = False) -> tuple[np.ndarray, list[list[Box]]]:
    """``count`` scenes (BGR, SCENE_SIZE square) from ``SeedSequence([seed, stream])``;
    ``clutter`` keeps the clutter boxes (negative ids) in the lists."""
    images, boxes = _scenes(seed, stream, count, workers)
    if not clutter:
        boxes = [[b for b in bx if b[0] >= 0] for bx in boxes]
    return images, boxes


def _scenes(seed: int, stream: int, count: int,
            workers: int) -> tuple[np.ndarray, list[list[Box]]]:
    key = hashlib.sha1(_scene_code_fingerprint().encode()).hexdigest()[:10]
    path = CACHE / f"scenes_{seed}_{stream}_{count}_{SCENE_SIZE}_{key}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=True)
        return z["images"], [list(map(tuple, b)) for b in z["boxes"]]
    seqs = np.random.SeedSequence([seed, stream]).spawn(count)
    jobs = [(s, SCENE_SIZE) for s in seqs]
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            res = pool.map(_render, jobs, chunksize=16)
    else:
        res = [_render(j) for j in jobs]
    images = np.stack([r[0] for r in res])
    boxes = [r[1] for r in res]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, boxes=np.array(boxes, dtype=object))
    tmp.replace(path)
    return images, boxes


def _scene_code_fingerprint() -> str:
    """The scene generator's and this module's source, so that a change to either
    invalidates the cache."""
    import agent.simulate.scene as scene
    return "".join(Path(f).read_text(encoding="utf-8") for f in (scene.__file__, __file__))


def to_model_input(images_bgr: np.ndarray, boxes: list[list[Box]],
                   size: int) -> tuple[np.ndarray, list[list[Box]]]:
    """Letterbox BGR images into the RGB ``size`` square input; boxes follow."""
    out = np.empty((len(images_bgr), size, size, 3), np.uint8)
    new_boxes: list[list[Box]] = []
    for i, (img, bx) in enumerate(zip(images_bgr, boxes, strict=True)):
        rgb, lb = letterbox(img, size, size)
        out[i] = rgb
        new_boxes.append([(c, *lb.to_input(*b)) for c, *b in bx])
    return out, new_boxes


def yolo_dataset(root: Path, size: int) -> tuple[np.ndarray, list[list[Box]]]:
    """Real photos in YOLO format, letterboxed into the ``size`` square like at run time."""
    img_dir, lab_dir = root / "images", root / "labels"
    files = sorted(p for p in img_dir.iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    if not files:
        raise SystemExit(f"{img_dir}: no images")
    images, all_boxes = [], []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            print(f"skipping unreadable {f}")
            continue
        h, w = bgr.shape[:2]
        rgb, lb = letterbox(bgr, size, size)
        boxes: list[Box] = []
        lab = lab_dir / (f.stem + ".txt")
        if lab.is_file():
            for line in lab.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) != 5:
                    continue
                c = int(parts[0])
                if not 0 <= c < len(CLASSES):
                    raise SystemExit(f"{lab}: class {c} outside 0..{len(CLASSES) - 1}")
                cx, cy, bw, bh = (float(v) for v in parts[1:])
                x1, x2 = (cx - bw / 2) * w, (cx + bw / 2) * w
                y1, y2 = (cy - bh / 2) * h, (cy + bh / 2) * h
                boxes.append((c, *lb.to_input(x1, y1, x2, y2)))
        images.append(rgb)
        all_boxes.append(boxes)
    return np.stack(images), all_boxes
