"""Where a model's boxes place objects: on generated drives, the ground distance that each
detection's box bottom gives, against the distance its labelled box gives, by class and by
how far the object is.

    python models/train/placement.py models/civil-complaint.tflite            # print
    python models/train/placement.py models/civil-complaint.tflite --write    # into the card
    python models/train/placement.py models/civil-complaint.tflite --check    # card current?

The section goes into the MODEL_CARD.md beside the model (``sections.card_for``).

The event stage places an object where the bottom of its box meets the ground
(``events.ground_point``), from its nearest views, and drops a track whose place keeps its
distance ahead of the vehicle (``events.max_drift``): that is what a far object placed short
looks like. A model whose boxes come out too tall far away (placed short) and end above the
object's foot close by (placed too far) moves every place it gives along with the vehicle,
and loses real objects to that filter. This measures it directly, frame by frame, without
the tracker and the filters: each labelled object of a reported class, wholly in view with its
foot in the frame, is matched to the detection (of any class: a class mix-up is not a
placement error) that overlaps its box most, at IoU 0.3 or more. The ratio of the two ground
distances is 1 for a box whose bottom is the label's, above 1 for one that ends above the
foot, below 1 for one that reaches below it. The drives are the tuning drives (the figures
explain what the filters do there), generated as ``drives.py`` generates them; with
``--workdir`` they are kept and used again.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from agent.config import CameraConfig, Config
from agent.evaluate import COMPLAINT_CLASSES
from agent.events import ground_point
from agent.pipeline import build_detector
from agent.records import Box, iou

sys.path.insert(0, str(Path(__file__).resolve().parent))
import drives  # models/train/drives.py: the drives, seeds and model naming the card uses

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sections  # models/sections.py

NAME = "placement"
SEEDS = drives.SECTIONS["drives-tuning"]
BANDS = ((0.0, 15.0), (15.0, 30.0), (30.0, 50.0), (50.0, math.inf))
"""Distance bands in metres: near, where the places come from; far, where drift starts."""
MIN_IOU = 0.3
HEADING = "### Where the boxes place objects"

Ratios = dict[tuple[str, int], list[float]]
"""Ground-distance ratios (detection over label) by (class, index into :data:`BANDS`)."""


def band(distance_m: float) -> int:
    return next(i for i, (lo, hi) in enumerate(BANDS) if lo <= distance_m < hi)


def band_text(i: int) -> str:
    lo, hi = BANDS[i]
    return f"under {hi:g} m" if lo == 0 else f"{lo:g} m and more" if hi == math.inf \
        else f"{lo:g}-{hi:g} m"


def distance_ratio(detected: Box, labelled: Box, aspect: float, camera: CameraConfig
                   ) -> float | None:
    """How far the detection's box bottom places the object, over how far the label's
    does; None when either ray misses the ground."""
    d, t = ground_point(detected, aspect, camera), ground_point(labelled, aspect, camera)
    if d is None or t is None:
        return None
    return math.hypot(*d) / max(math.hypot(*t), 1e-6)


def ratios(model: Path, drive_dirs: Sequence[Path], threads: int = 2) -> Ratios:
    """Every matched view's ratio on these drives (each a ``simulate-drive`` folder)."""
    cfg = Config()
    det = build_detector(cfg, model, every_class=True, threads=threads)
    out: Ratios = defaultdict(list)
    for d in drive_dirs:
        cap = cv2.VideoCapture(str(d / "video.mp4"))
        try:
            with open(d / "frames.jsonl", encoding="utf-8") as f:
                for line in f:
                    ok, img = cap.read()
                    if not ok:
                        break
                    objects = [o for o in json.loads(line)["objects"]
                               if o["class"] in COMPLAINT_CLASSES and o["visible"] >= 0.9
                               and o["box"][3] < 0.99]
                    if not objects:
                        continue
                    found = det.detect(img)
                    aspect = img.shape[0] / img.shape[1]
                    for o in objects:
                        label = tuple(o["box"])
                        best = max(found, key=lambda x: iou(x.bbox, label), default=None)
                        if best is None or iou(best.bbox, label) < MIN_IOU:
                            continue
                        r = distance_ratio(best.bbox, label, aspect, cfg.camera)
                        if r is not None:
                            out[(o["class"], band(o["distance_m"]))].append(r)
        finally:
            cap.release()
    return dict(out)


def command(model: Path, seeds: Sequence[int], duration: float) -> str:
    return (f"python models/train/placement.py {drives.model_display(model)} --seeds "
            f"{drives.seeds_text(seeds)} --duration {duration:g} --write")


def section(model: Path, seeds: Sequence[int], duration: float, r: Ratios) -> str:
    """The card's section, markers included."""
    begin, end = sections.markers(NAME)
    lines = [
        begin,
        f"Written by `{command(model, seeds, duration)}` (model sha256 "
        f"`{drives.sha256_prefix(model)}`); do not edit by hand.",
        "",
        f"On **{len(seeds)}** generated drives (seeds {drives.seeds_text(seeds)}, "
        f"{duration:g} s each), every frame: each labelled object of a reported class wholly "
        f"in view, its foot in the frame, matched to the detection overlapping it most "
        f"(IoU {MIN_IOU:g} or more, any class). The ratio is the ground distance the "
        "detection's box bottom gives over the one the labelled box gives: 1 places the "
        "object right, above 1 too far (the box ends above its foot), below 1 too near "
        "(the box reaches below it).",
        "",
        "| class | distance | views | median ratio | 10th-90th percentile |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cls in COMPLAINT_CLASSES:
        for i in range(len(BANDS)):
            v = r.get((cls, i))
            if not v:
                continue
            p10, p50, p90 = np.percentile(v, [10, 50, 90])
            lines.append(f"| {cls} | {band_text(i)} | {len(v)} | {p50:.2f} | "
                         f"{p10:.2f}-{p90:.2f} |")
    lines.append(end)
    return "\n".join(lines)


def before_reproduce(card: str, text: str) -> str:
    """Where a card without the section gets it: its own heading, before Reproduce."""
    return sections.under_heading(card, HEADING, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--seeds", type=drives.parse_seeds, default=list(SEEDS),
                    help=f"drive seeds (default: the tuning drives, "
                         f"{drives.seeds_text(SEEDS)})")
    ap.add_argument("--duration", type=float, default=drives.DEFAULT_DURATION,
                    help="seconds per drive")
    ap.add_argument("--workdir", type=Path, help="keep the drives here (and use them again)")
    ap.add_argument("--jobs", type=int, default=2, help="drives generated at a time")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="put the section into the card")
    mode.add_argument("--check", action="store_true", help="exit 1 if the card is not current")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        ap.error(f"{args.model}: no such model")
    with tempfile.TemporaryDirectory(prefix="patrol-placement-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        made = drives.simulate(args.seeds, args.duration, work, args.jobs)
        r = ratios(args.model, [made[s] for s in args.seeds])
    text = section(args.model, args.seeds, args.duration, r)
    return sections.publish(sections.card_for(args.model), NAME, text, write=args.write,
                            check=args.check, missing=before_reproduce,
                            fix=command(args.model, args.seeds, args.duration))


if __name__ == "__main__":
    sys.exit(main())
