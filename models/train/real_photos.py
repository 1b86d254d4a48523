"""False alarms on real photos: the default model on every photograph that the installed
packages ship, none of which holds a civil-complaint element.

    python models/train/real_photos.py models/civil-complaint.tflite            # print
    python models/train/real_photos.py models/civil-complaint.tflite --write    # into the card
    python models/train/real_photos.py models/civil-complaint.tflite --check    # card up to date?
    python models/train/real_photos.py MODEL --photos DIR  # a city's photos with no element

The photos are scikit-image's (``skimage/data``, inside its wheel): people, animals, a street
scene, objects, textures, documents, microscope and telescope images. The synthetic test
images there (chessboards, a colour wheel, a logo, a phantom) are left out. Every reported
class detection (garbage, banner, construction) scoring at least the agent's default
``detector.score_threshold`` is a false alarm, since no photo holds one. The model card's
section between the ``real-photos`` markers (in the MODEL_CARD.md beside the model) is written
by ``--write`` and nothing else;
``tests/test_model_contract.py`` runs ``--check``, so a retrained model with a stale card
fails the tests.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from agent.config import DetectorConfig
from agent.detector import Detector

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sections  # models/sections.py

REPORTED = ("garbage", "banner", "construction")
THRESHOLD = DetectorConfig().score_threshold
HIGH = 0.9  # events.min_score: what could become a finding after tracking
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg")
SYNTHETIC = {"chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "logo.png",
             "phantom.png"}
BEGIN, END = sections.markers("real-photos")


def photos(folder: Path | None = None) -> list[Path]:
    """scikit-image's photographs (its synthetic images left out), or every JPEG/PNG in
    ``folder``."""
    skip: frozenset[str] | set[str] = frozenset()
    if folder is None:
        import skimage
        folder, skip = Path(skimage.__file__).parent / "data", SYNTHETIC
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in PHOTO_SUFFIXES and p.name not in skip)


def measure(model: Path, folder: Path | None = None
            ) -> list[tuple[str, tuple[int, int], list[tuple[str, float]]]]:
    det = Detector(model, threads=2, score_threshold=THRESHOLD, allow=list(REPORTED))
    rows = []
    for p in photos(folder):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            continue
        found = [(d.label, round(d.score, 2)) for d in det.detect(img)]
        rows.append((p.name, (img.shape[1], img.shape[0]), found))
    return rows


def figures(rows: list[tuple[str, tuple[int, int], list[tuple[str, float]]]],
            where: str) -> list[str]:
    """The summary sentence and the per-photo table: the section's body, or what
    ``--photos`` prints."""
    n = len(rows)
    total = sum(len(f) for _, _, f in rows)
    high = sum(1 for _, _, f in rows for _, s in f if s >= HIGH)
    with_any = sum(1 for _, _, f in rows if f)
    lines = [
        f"On the **{n}** photographs {where} (none holds a civil-complaint "
        f"element), the model reports **{total / n:.2f} false alarms per photo** at score "
        f"{THRESHOLD} or more ({total} on {with_any} of {n} photos), **{high / n:.2f}** at "
        f"{HIGH} or more ({high}).",
        "",
        f"| photo | size | false alarms ≥ {THRESHOLD} | ≥ {HIGH} | strongest |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, (w, h), found in rows:
        top = max(found, key=lambda f: f[1], default=None)
        lines.append(f"| {name} | {w}×{h} | {len(found)} | "
                     f"{sum(1 for _, s in found if s >= HIGH)} | "
                     f"{f'{top[0]} {top[1]:.2f}' if top else '-'} |")
    return lines


def section(model: Path) -> str:
    return "\n".join([
        BEGIN,
        f"Written by `models/train/real_photos.py {model.name} --write`; do not edit by hand.",
        "",
        *figures(measure(model), "that scikit-image ships"),
        END])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--write", action="store_true", help="put the section into the card")
    ap.add_argument("--check", action="store_true", help="exit 1 if the card is not current")
    ap.add_argument("--photos", type=Path, default=None,
                    help="measure on the photos in this folder instead (prints; never "
                         "written into the card)")
    args = ap.parse_args(argv)
    if args.photos is not None:
        if args.write or args.check:
            ap.error("--photos only prints: the card holds scikit-image's figures")
        if not args.photos.is_dir():
            ap.error(f"--photos {args.photos}: not a folder")
        rows = measure(args.model, args.photos)
        if not rows:
            ap.error(f"--photos {args.photos}: no readable JPEG or PNG photo in it")
        print("\n".join(figures(rows, f"in {args.photos}")))
        return 0

    def before_speed(card: str, text: str) -> str:
        return card.replace("## Speed", "## False alarms on real photos\n\n" + text
                            + "\n\n## Speed", 1)

    return sections.publish(sections.card_for(args.model), "real-photos", section(args.model),
                            write=args.write, check=args.check, missing=before_speed,
                            fix=f"models/train/real_photos.py {args.model} --write")


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
