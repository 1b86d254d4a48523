"""A small labelled data set in COCO form, made with the project's own scene generator.

    python models/train/export_coco.py OUT [--recordings 24] [--frames 8] [--seed 1]

writes ``OUT/images/rec_NNNN/frame_NNNN.jpg`` (640x360 camera frames) and
``OUT/annotations.json``: what a city's labelled photos look like when they arrive, so that
``models/train/train_dataset.py`` can be proved end to end here and then run unchanged on a
real set. Each recording is a vehicle driving up one generated road-side world, a frame every
2 m, so consecutive frames are near-copies, as in a real patrol recording; the COCO images
carry ``video_id`` and ``frame_id`` (the COCO-VID convention) so the split keeps a recording
together.

The categories are named in a data set's own words, not ours (``illegal_dumping``,
``placard``, ``construction_site``, ``trash_bin``, ``traffic_sign``, and with ``--clutter``
also ``car``, ``person``, ``tree``, ...), so that the class mapping file is exercised as a
real set would need it: ``models/train/classes.example.toml`` maps them.

Seeds: recordings come from ``np.random.SeedSequence([seed, 4])``, a stream that neither the
default model's training scenes (2), its evaluation scenes (3) nor the drives (1) use.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from agent.simulate import CLUTTER_KINDS, render_training_recording

STREAM = 4
SOURCE_NAMES = {
    "garbage": "illegal_dumping",
    "banner": "placard",
    "construction": "construction_site",
    "bin": "trash_bin",
    "sign": "traffic_sign",
    "pedestrian": "person",
}
"""Our class (or clutter kind) -> the name this data set uses for it; the rest keep theirs."""


def export(out: Path, recordings: int, frames: int, seed: int, clutter: bool = False,
           width: int = 640, height: int = 360, quality: int = 90) -> dict:
    """Render and write the set; returns the COCO document (also written to disk)."""
    img_dir = out / "images"
    seqs = np.random.SeedSequence([seed, STREAM]).spawn(recordings)
    images, annotations = [], []
    names: dict[str, int] = {}
    kinds = ["garbage", "banner", "construction", "bin", "sign"]
    kinds += list(CLUTTER_KINDS) if clutter else []
    for kind in kinds:
        names.setdefault(SOURCE_NAMES.get(kind, kind), len(names) + 1)
    for r, seq in enumerate(seqs):
        rec = render_training_recording(np.random.default_rng(seq), frames, width, height,
                                        clutter=clutter)
        folder = img_dir / f"rec_{r:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for f, (bgr, labels) in enumerate(rec):
            image_id = len(images) + 1
            path = folder / f"frame_{f:04d}.jpg"
            cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            images.append({"id": image_id, "file_name": str(path.relative_to(img_dir)),
                           "width": width, "height": height, "video_id": r + 1,
                           "frame_id": f})
            for kind, x1, y1, x2, y2 in labels:
                w, h = x2 - x1, y2 - y1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": names[SOURCE_NAMES.get(kind, kind)],
                    "bbox": [round(x1, 2), round(y1, 2), round(w, 2), round(h, 2)],
                    "area": round(w * h, 2), "iscrowd": 0})
    doc = {"info": {"description": "patrol-agent generated recordings "
                                   f"(seed {seed}, stream {STREAM})"},
           "images": images, "annotations": annotations,
           "categories": [{"id": i, "name": n} for n, i in names.items()]}
    (out / "annotations.json").write_text(json.dumps(doc), encoding="utf-8")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--recordings", type=int, default=24)
    ap.add_argument("--frames", type=int, default=8, help="frames per recording")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--clutter", action="store_true",
                    help="also label road-side clutter (cars, people, trees, ...)")
    args = ap.parse_args(argv)
    doc = export(args.out, args.recordings, args.frames, args.seed, args.clutter)
    print(f"{args.out / 'annotations.json'}: {len(doc['images'])} images in "
          f"{args.recordings} recordings, {len(doc['annotations'])} boxes, categories "
          + ", ".join(c["name"] for c in doc["categories"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
