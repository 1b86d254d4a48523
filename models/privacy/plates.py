"""Licence-plate recall of the privacy step, by plate size, on Korean plates drawn to the
standard and pasted into road frames.

    python models/privacy/plates.py            # print the table
    python models/privacy/plates.py --write    # put it into models/privacy/README.md
    python models/privacy/plates.py --check    # exit 1 if the README is not current

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
WIDTHS = (24, 32, 48, 64, 96, 128)
FRAMES = (30, 230, 430)
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


def _text(img: np.ndarray, text: str, x: int, y: int, w: int, h: int,
          colour: tuple[int, ...]) -> None:
    """Digits filling the box: Hershey font scaled to the box height."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 2)
    scale = min(h / th, w / tw) * 0.85
    thick = max(2, round(scale * 2.5))  # a plate's stroke: about a seventh of the height
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(img, text, (x + (w - tw) // 2, y + (h + th) // 2), font, scale, colour, thick,
                cv2.LINE_AA)


def draw_plate(kind: str, rng: np.random.Generator, px_per_mm: float = 2.0) -> np.ndarray:
    """One plate of ``kind`` at ``px_per_mm``, BGR, with its border and random number."""
    (wmm, hmm), bg, fg, two = KINDS[kind]
    w, h = int(wmm * px_per_mm), int(hmm * px_per_mm)
    img = np.full((h, w, 3), bg, np.uint8)
    cv2.rectangle(img, (3, 3), (w - 4, h - 4), fg, max(2, w // 150))
    digits = lambda n: "".join(str(d) for d in rng.integers(0, 10, n))  # noqa: E731
    syl = int(rng.integers(0, 4))
    if not two:  # 123가 4567
        _text(img, digits(3), int(0.06 * w), int(0.1 * h), int(0.28 * w), int(0.8 * h), fg)
        _syllable(img, int(0.36 * w), int(0.1 * h), int(0.13 * w), int(0.8 * h), fg, syl)
        _text(img, digits(4), int(0.52 * w), int(0.1 * h), int(0.42 * w), int(0.8 * h), fg)
    else:        # region + class on top, 가 1234 below
        _syllable(img, int(0.2 * w), int(0.06 * h), int(0.14 * w), int(0.34 * h), fg,
                  int(rng.integers(0, 4)))
        _syllable(img, int(0.36 * w), int(0.06 * h), int(0.14 * w), int(0.34 * h), fg,
                  int(rng.integers(0, 4)))
        _text(img, digits(2), int(0.54 * w), int(0.06 * h), int(0.26 * w), int(0.34 * h), fg)
        _syllable(img, int(0.06 * w), int(0.44 * h), int(0.2 * w), int(0.5 * h), fg, syl)
        _text(img, digits(4), int(0.3 * w), int(0.44 * h), int(0.64 * w), int(0.5 * h), fg)
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


def measure() -> dict[str, dict[int, list[int]]]:
    from measure import drive_frames  # models/privacy/measure.py

    from agent.privacy import Redactor
    red = Redactor(faces="haar")
    frames = drive_frames(FRAMES)
    rng = np.random.default_rng(11)
    out: dict[str, dict[int, list[int]]] = {k: {w: [0, 0] for w in WIDTHS} for k in KINDS}
    for kind in KINDS:
        for width in WIDTHS:
            for base in frames:
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
                # the plate search exactly as Redactor.redact makes it
                gray = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
                boxes = red._detect(gray, "plate")
                for t in truths:
                    out[kind][width][0] += 1
                    out[kind][width][1] += covered(boxes, t, red.pad)
    return out


def table(m: dict[str, dict[int, list[int]]]) -> str:
    lines = [BEGIN, "Written by `models/privacy/plates.py --write`; do not edit by hand.", "",
             "Share of drawn Korean plates that the privacy step blurs (its padded boxes cover "
             f"at least {COVER:.0%} of the plate), by plate width in a 640x360 frame; "
             f"{PER_FRAME * len(FRAMES)} plates per cell.", "",
             "| plate width (px) | " + " | ".join(KINDS) + " | all |",
             "| --- | " + " | ".join("---" for _ in KINDS) + " | --- |"]
    for width in WIDTHS:
        cells = [m[k][width] for k in KINDS]
        n, f = sum(c[0] for c in cells), sum(c[1] for c in cells)
        lines.append(f"| {width} | " + " | ".join(f"{c[1] / c[0]:.2f}" for c in cells)
                     + f" | {f / n:.2f} |")
    tot = [sum(m[k][w][i] for w in WIDTHS) for k in KINDS for i in (0, 1)]
    n, f = sum(tot[0::2]), sum(tot[1::2])
    lines.append("| all | " + " | ".join(f"{tot[2 * i + 1] / tot[2 * i]:.2f}"
                                         for i in range(len(KINDS))) + f" | {f / n:.2f} |")
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="put the table into the README")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is not current")
    args = ap.parse_args(argv)
    def with_heading(doc: str, text: str) -> str:
        return doc.rstrip("\n") + "\n\n## Licence plates, by size\n\n" + text + "\n"

    return sections.publish(README, "plate-recall", table(measure()), write=args.write,
                            check=args.check, missing=with_heading,
                            fix="models/privacy/plates.py --write")


if __name__ == "__main__":
    sys.exit(main())
