"""Licence-plate recall of the privacy step, by plate size, on Korean plates drawn to the
standard and pasted into road frames.

    python models/privacy/plates.py            # print the table
    python models/privacy/plates.py --write    # put it into models/privacy/README.md
    python models/privacy/plates.py --check    # exit 1 if the README is not current
    python models/privacy/plates.py --tune     # the plate model's score threshold, swept

No published detector for Korean plates installs here, and no package ships photos of them,
so the plates are drawn: the four kinds a patrol camera meets, to the standard's proportions
and colours,

* ``white 520x110``: the long white plate (2006-), black "123가 4567" on one line;
* ``white 335x170``: the short white plate, two lines;
* ``green 335x170``: the older green plate, white characters, region on the top line;
* ``yellow 335x170``: the commercial plate, dark characters on yellow;

the digits in OpenCV's Hershey font and the Hangul syllables as strokes (OpenCV has no
Hangul font, and a detector must not depend on the exact glyphs anyway). Each is warped a
little (a plate seen from the side, tilted), softened to its size, and pasted eight to a
frame into frames of the bundled sample drive, at plate widths from 24 to 128 px: a plate
from about 20 m down to 4 m in a 640-px-wide frame. The step under test is
``agent.privacy.Redactor``'s plate search, as ``redact`` runs it; a plate counts as
redacted when the padded boxes it would blur cover at least 80 % of the plate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import sections  # noqa: E402  (models/sections.py)

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = sections.markers("plate-recall")
WIDTHS = (16, 24, 32, 48, 64, 96, 128)
FRAMES = (30, 230, 430)
PLAIN = tuple(range(15, 600, 45))
# --tune works on other frames of the drive (and no real photo), so that the threshold it
# chooses is judged by the table on data that did not choose it
TUNE_FRAMES = (60, 260, 460)
TUNE_PLAIN = tuple(range(37, 600, 45))
PER_FRAME = 8
COVER = 0.8
# kind: (size in mm, background BGR, text BGR, two lines)
KINDS: dict[str, tuple[tuple[int, int], tuple[int, int, int], tuple[int, int, int], bool]] = {
    "white 520x110": ((520, 110), (245, 245, 245), (20, 20, 20), False),
    "white 335x170": ((335, 170), (245, 245, 245), (20, 20, 20), True),
    "green 335x170": ((335, 170), (60, 120, 20), (240, 240, 240), True),
    "yellow 335x170": ((335, 170), (30, 200, 240), (60, 30, 20), True),
}


def _syllable(img: np.ndarray, x: int, y: int, w: int, h: int, colour: tuple[int, ...],
              kind: int) -> None:
    """A Hangul-like syllable in the box: a consonant left and a vowel right, as strokes."""
    t = max(2, w // 8)
    cx, vx = x + int(0.05 * w), x + int(0.62 * w)
    top, bot = y + int(0.15 * h), y + int(0.85 * h)
    mid = (top + bot) // 2
    cw = int(0.45 * w)
    if kind == 0:    # ㄱ
        cv2.line(img, (cx, top), (cx + cw, top), colour, t)
        cv2.line(img, (cx + cw, top), (cx + cw - t, bot), colour, t)
    elif kind == 1:  # ㄴ
        cv2.line(img, (cx, top), (cx, bot), colour, t)
        cv2.line(img, (cx, bot), (cx + cw, bot), colour, t)
    elif kind == 2:  # ㅂ
        cv2.rectangle(img, (cx, mid - h // 8), (cx + cw, bot), colour, t)
        cv2.line(img, (cx, top), (cx, bot), colour, t)
        cv2.line(img, (cx + cw, top), (cx + cw, bot), colour, t)
    else:            # ㅅ
        cv2.line(img, (cx + cw // 2, top), (cx, bot), colour, t)
        cv2.line(img, (cx + cw // 2, mid), (cx + cw, bot), colour, t)
    cv2.line(img, (vx, top - h // 12), (vx, bot + h // 12), colour, t)  # ㅏ
    cv2.line(img, (vx, mid), (vx + int(0.3 * w), mid), colour, t)


def _digits(img: np.ndarray, text: str, x: int, y: int, w: int, h: int,
            colour: tuple[int, ...], font: int = cv2.FONT_HERSHEY_SIMPLEX,
            weight: float = 2.5) -> None:
    """Digits filling the box: a Hershey font scaled to the box height."""
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(h / th, w / tw) * 0.85
    thick = max(2, round(scale * weight))  # a plate's stroke: about a seventh of the height
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(img, text, (x + (w - tw) // 2, y + (h + th) // 2), font, scale, colour, thick,
                cv2.LINE_AA)


def draw_plate(kind: str, rng: np.random.Generator, px_per_mm: float = 2.0,
               font: int = cv2.FONT_HERSHEY_SIMPLEX, weight: float = 2.5,
               colours: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
               ) -> np.ndarray:
    """One plate of ``kind`` at ``px_per_mm``, BGR, with its border and random number.

    ``font``, ``weight`` (stroke per unit of font scale) and ``colours`` (background, text)
    let training vary the look; the measurement draws the standard look."""
    (wmm, hmm), bg, fg, two = KINDS[kind]
    if colours is not None:
        bg, fg = colours
    w, h = int(wmm * px_per_mm), int(hmm * px_per_mm)
    img = np.full((h, w, 3), bg, np.uint8)
    cv2.rectangle(img, (3, 3), (w - 4, h - 4), fg, max(2, w // 150))
    digits = lambda n: "".join(str(d) for d in rng.integers(0, 10, n))  # noqa: E731
    syl = int(rng.integers(0, 4))

    if not two:  # 123가 4567
        _digits(img, digits(3), int(0.06 * w), int(0.1 * h), int(0.28 * w), int(0.8 * h), fg,
                font, weight)
        _syllable(img, int(0.36 * w), int(0.1 * h), int(0.13 * w), int(0.8 * h), fg, syl)
        _digits(img, digits(4), int(0.52 * w), int(0.1 * h), int(0.42 * w), int(0.8 * h), fg,
                font, weight)
    else:        # region + class on top, 가 1234 below
        _syllable(img, int(0.2 * w), int(0.06 * h), int(0.14 * w), int(0.34 * h), fg,
                  int(rng.integers(0, 4)))
        _syllable(img, int(0.36 * w), int(0.06 * h), int(0.14 * w), int(0.34 * h), fg,
                  int(rng.integers(0, 4)))
        _digits(img, digits(2), int(0.54 * w), int(0.06 * h), int(0.26 * w), int(0.34 * h), fg,
                font, weight)
        _syllable(img, int(0.06 * w), int(0.44 * h), int(0.2 * w), int(0.5 * h), fg, syl)
        _digits(img, digits(4), int(0.3 * w), int(0.44 * h), int(0.64 * w), int(0.5 * h), fg,
                font, weight)
    return img


def paste(frame: np.ndarray, plate: np.ndarray, width: int, x: int, y: int,
          rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Warp the plate to ``width`` px (a little yaw and roll) at (x, y); its box."""
    ph, pw = plate.shape[:2]
    height = width * ph / pw
    yaw = rng.uniform(-0.15, 0.15)  # one side nearer: taller
    roll = rng.uniform(-0.05, 0.05) * width
    dst = np.float32([[0, 0 + roll], [width, -roll], [width, height * (1 + yaw)],
                      [0, height * (1 - yaw)]])
    dst[:, 1] += max(0.0, -dst[:, 1].min())
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    bw, bh = int(np.ceil(dst[:, 0].max())) + 1, int(np.ceil(dst[:, 1].max())) + 1
    # shrink in steps (no aliasing), then warp
    small = cv2.resize(plate, (max(1, width), max(1, round(height))),
                       interpolation=cv2.INTER_AREA)
    m = cv2.getPerspectiveTransform(
        np.float32([[0, 0], [small.shape[1], 0], [small.shape[1], small.shape[0]],
                    [0, small.shape[0]]]), dst)
    del src
    warped = cv2.warpPerspective(small, m, (bw, bh), flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones(small.shape[:2], np.float32), m, (bw, bh))[..., None]
    roi = frame[y:y + bh, x:x + bw]
    roi[:] = (roi * (1 - mask) + warped * mask).astype(np.uint8)
    return (float(x + dst[:, 0].min()), float(y + dst[:, 1].min()),
            float(x + dst[:, 0].max()), float(y + dst[:, 1].max()))


def covered(boxes: list[tuple[int, int, int, int]], plate: tuple[float, ...],
            pad: float) -> bool:
    """The padded boxes (x, y, w, h, as the Redactor blurs them) cover the plate enough."""
    x1, y1, x2, y2 = plate
    mask = np.zeros((int(np.ceil(y2 - y1)) + 1, int(np.ceil(x2 - x1)) + 1), bool)
    for x, y, w, h in boxes:
        px, py = w * pad, h * pad
        ax, ay = int(max(0, x - px - x1)), int(max(0, y - py - y1))
        bx, by = int(max(0, x + w + px - x1)), int(max(0, y + h + py - y1))
        mask[ay:by, ax:bx] = True
    return mask.mean() >= COVER


def _pasted(base: np.ndarray, kind: str, width: int, rng: np.random.Generator
            ) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """``base`` with ``PER_FRAME`` plates of ``kind`` pasted in a grid; their boxes."""
    frame = base.copy()
    h, w = frame.shape[:2]
    cols = PER_FRAME // 2
    cw, ch = (w - 20) // cols, (h - 20) // 2
    truths = []
    for k in range(PER_FRAME):
        plate = draw_plate(kind, rng)
        room_x = max(1, cw - int(1.2 * width))
        room_y = max(1, ch - int(0.8 * width))
        x = 10 + (k % cols) * cw + int(rng.integers(0, room_x))
        y = 10 + (k // cols) * ch + int(rng.integers(0, room_y))
        truths.append(paste(frame, plate, width, x, y, rng))
    return frame, truths


def _blurred_share(img: np.ndarray, boxes: list[tuple[int, int, int, int]],
                   pad: float = 0.25) -> float:
    """Share of the picture that the padded boxes blur."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), bool)
    for x, y, bw, bh in boxes:
        px, py = int(bw * pad), int(bh * pad)
        mask[max(0, y - py):y + bh + py, max(0, x - px):x + bw + px] = True
    return float(mask.mean())


def real_photos() -> list[np.ndarray]:
    """Every real photo the installed packages ship (models/train/real_photos.py's list:
    scikit-image's), none with a licence plate."""
    sys.path.insert(0, str(ROOT / "models" / "train"))
    from real_photos import photos
    out = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in photos()]
    return [img for img in out if img is not None and img.size]


def measure() -> dict[str, object]:
    from measure import drive_frames  # models/privacy/measure.py

    from agent.privacy import Redactor
    searches = {"model": Redactor(faces="haar", plates="model").find_plates,
                "haar": Redactor(faces="haar", plates="haar").find_plates}
    frames = drive_frames(FRAMES)
    rng = np.random.default_rng(11)
    # [plates, found by the model, found by the cascade]
    found: dict[str, dict[int, list[int]]] = {k: {w: [0, 0, 0] for w in WIDTHS} for k in KINDS}
    for kind in KINDS:
        for width in WIDTHS:
            for base in frames:
                frame, truths = _pasted(base, kind, width, rng)
                boxes = {name: search(frame) for name, search in searches.items()}
                pad = 0.25  # the Redactor's default padding
                for t in truths:
                    cell = found[kind][width]
                    cell[0] += 1
                    cell[1] += covered(boxes["model"], t, pad)
                    cell[2] += covered(boxes["haar"], t, pad)
    # what is blurred where there is no plate: the drive's frames as they are, and real photos
    plain = drive_frames(PLAIN)
    photos = real_photos()
    false = {}
    for name, search in searches.items():
        per = [[(len(b := search(f)), _blurred_share(f, b)) for f in group]
               for group in (plain, photos)]
        false[name] = tuple(float(np.mean([v[i] for v in g])) for g in per for i in (0, 1))
    return {"found": found, "false": false, "plain": len(plain), "photos": len(photos)}


def table(m: dict[str, object]) -> str:
    found, false = m["found"], m["false"]
    assert isinstance(found, dict) and isinstance(false, dict)
    lines = [BEGIN, "Written by `models/privacy/plates.py --write`; do not edit by hand.", "",
             "Share of drawn Korean plates that the privacy step blurs (its padded boxes cover "
             f"at least {COVER:.0%} of the plate), by plate width in a 640x360 frame; "
             f"{PER_FRAME * len(FRAMES)} plates per kind and width. The kinds' columns are the "
             "plate model's (agent/plates.py); the last two compare it with the Haar cascade "
             "it replaced (the fallback).", "",
             "| plate width (px) | " + " | ".join(KINDS) + " | all, model | all, Haar |",
             "| --- | " + " | ".join("---" for _ in KINDS) + " | --- | --- |"]

    def row(label: str, cells: list[list[int]]) -> str:
        n = sum(c[0] for c in cells)
        return (f"| {label} | " + " | ".join(f"{c[1] / c[0]:.2f}" for c in cells[:len(KINDS)])
                + f" | {sum(c[1] for c in cells) / n:.2f} | {sum(c[2] for c in cells) / n:.2f} |")

    for width in WIDTHS:
        lines.append(row(str(width), [found[k][width] for k in KINDS]))
    per_kind = [[sum(found[k][w][i] for w in WIDTHS) for i in range(3)] for k in KINDS]
    lines.append(row("all", per_kind))
    lines += ["", "Plates blurred where there is none (boxes per picture): "
              f"{m['plain']} frames of the sample drive as they are, and scikit-image's "
              f"{m['photos']} real photos (models/train/real_photos.py's set).", "",
              "| plate search | per drive frame | share of it blurred | per real photo "
              "| share of it blurred |", "| --- | --- | --- | --- | --- |"]
    for name, label in (("model", "plate model"), ("haar", "Haar cascade")):
        a, sa, b, sb = false[name]
        lines.append(f"| {label} | {a:.2f} | {sa:.1%} | {b:.2f} | {sb:.1%} |")
    lines.append(END)
    return "\n".join(lines)


def tune(thresholds: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)) -> str:
    """The plate model's recall and false plates per frame at each score threshold, on the
    tuning frames: what ``agent.plates.MIN_SCORE`` is chosen from."""
    from measure import drive_frames

    from agent.plates import PlateDetector
    frames, plain = drive_frames(TUNE_FRAMES), drive_frames(TUNE_PLAIN)
    lines = ["| min score | recall | false plates per frame |", "| --- | --- | --- |"]
    for thr in thresholds:
        det = PlateDetector(min_score=thr)
        rng = np.random.default_rng(99)
        n = f = 0
        for kind in KINDS:
            for width in WIDTHS:
                for base in frames:
                    frame, truths = _pasted(base, kind, width, rng)
                    boxes = det.detect(frame)
                    n += len(truths)
                    f += sum(covered(boxes, t, 0.25) for t in truths)
        fp = sum(len(det.detect(x)) for x in plain) / len(plain)
        lines.append(f"| {thr:.2f} | {f / n:.3f} | {fp:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="put the table into the README")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is not current")
    ap.add_argument("--tune", action="store_true",
                    help="sweep the plate model's score threshold on the tuning frames")
    args = ap.parse_args(argv)
    if args.tune:
        print(tune())
        return 0
    def with_heading(doc: str, text: str) -> str:
        return doc.rstrip("\n") + "\n\n## Licence plates, by size\n\n" + text + "\n"

    return sections.publish(README, "plate-recall", table(measure()), write=args.write,
                            check=args.check, missing=with_heading,
                            fix="models/privacy/plates.py --write")


if __name__ == "__main__":
    sys.exit(main())
