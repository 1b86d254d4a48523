"""Face recall of the privacy step, by face size: BlazeFace (agent/faces.py) against the
OpenCV Haar cascades it replaced, on real photos and on road scenes with real faces in them.

    python models/privacy/measure.py            # print the table
    python models/privacy/measure.py --write    # put it into models/privacy/README.md
    python models/privacy/measure.py --check    # exit 1 if the README is not current

Real photos: the two faces scikit-image ships (the astronaut, frontal; the cameraman,
turned to his camera), boxes labelled by hand below. Road scenes: frames of the bundled
sample drive with those two faces pasted in (a soft oval edge), eight per frame, at face
heights from 10 to 56 px, upright and rolled by 15 degrees either way: the sizes a face at
the road side has in a 640-px-wide frame. A face counts as found when a detected box
overlaps it with IoU 0.3 or more (the redaction pads and blurs each box).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "models"))
import sections  # noqa: E402  (models/sections.py)

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = sections.markers("face-recall")
# Hand-labelled face boxes (x1, y1, x2, y2): forehead to chin, ear to ear as seen.
FACES = {"astronaut": (178, 72, 283, 190), "camera": (205, 122, 272, 200)}
SIZES = (10, 14, 20, 28, 40, 56)
ROLLS = (0, 15, -15)
FRAMES = (30, 230, 430)
PER_FRAME = 8


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _photo(name: str) -> np.ndarray:
    import skimage.data
    img = getattr(skimage.data, name)()
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_RGB2BGR)


def _found(boxes: list[tuple[int, int, int, int]], truth: tuple[float, ...]) -> bool:
    return any(_iou((x, y, x + w, y + h), truth) >= 0.3 for x, y, w, h in boxes)


def _paste(frame: np.ndarray, face: str, height: int, roll: int, x: int, y: int
           ) -> tuple[float, float, float, float]:
    """Paste the face so that it is ``height`` px tall with its box's top-left at (x, y)."""
    src = _photo(face)
    x1, y1, x2, y2 = FACES[face]
    m = int(0.35 * (y2 - y1))
    patch = src[max(0, y1 - m):y2 + m, max(0, x1 - m):x2 + m]
    s = height / (y2 - y1)
    patch = cv2.resize(patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    ph, pw = patch.shape[:2]
    mask = np.zeros((ph, pw), np.float32)
    cv2.ellipse(mask, (pw // 2, ph // 2), (pw // 2 - 1, ph // 2 - 1), 0, 0, 360, 1.0, -1)
    if roll:
        rot = cv2.getRotationMatrix2D((pw / 2, ph / 2), roll, 1.0)
        patch = cv2.warpAffine(patch, rot, (pw, ph), borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(mask, rot, (pw, ph))
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, pw / 20))[..., None]
    ox, oy = x - round(m * s), y - round(m * s)
    roi = frame[oy:oy + ph, ox:ox + pw]
    roi[:] = (roi * (1 - mask) + patch * mask).astype(np.uint8)
    fw, fh = (x2 - x1) * s, (y2 - y1) * s
    return (x, y, x + fw, y + fh)


def drive_frames(indices: tuple[int, ...]) -> list[np.ndarray]:
    """Frames of the bundled sample drive (BGR): the road scenes things are pasted into."""
    cap = cv2.VideoCapture(str(ROOT / "samples" / "drive" / "video.mp4"))
    frames = []
    for i in indices:
        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, f = cap.read()
        if ok:
            frames.append(f)
    cap.release()
    return frames


def measure() -> dict[str, object]:
    from agent.faces import FaceDetector
    from agent.privacy import Redactor
    blaze = FaceDetector()
    haar_faces = Redactor(faces="haar", plates="haar").find_faces

    real = {name: (_found(blaze.detect(_photo(name)), FACES[name]),
                   _found(haar_faces(_photo(name)), FACES[name])) for name in FACES}
    frames = drive_frames(FRAMES)
    rng = np.random.default_rng(7)
    by_size: dict[int, list[int]] = {s: [0, 0, 0] for s in SIZES}  # faces, blaze, haar
    for size in SIZES:
        for face in FACES:
            for roll in ROLLS:
                for base in frames:
                    frame = base.copy()
                    h, w = frame.shape[:2]
                    truths = []
                    cols = PER_FRAME // 2
                    for k in range(PER_FRAME):
                        cw, ch = (w - 40) // cols, (h - 40) // 2
                        room_x, room_y = max(1, cw - 2 * size), max(1, ch - 2 * size)
                        x = 20 + (k % cols) * cw + size // 2 + int(rng.integers(0, room_x))
                        y = 20 + (k // cols) * ch + size // 2 + int(rng.integers(0, room_y))
                        truths.append(_paste(frame, face, size, roll, x, y))
                    b, hr = blaze.detect(frame), haar_faces(frame)
                    for t in truths:
                        by_size[size][0] += 1
                        by_size[size][1] += _found(b, t)
                        by_size[size][2] += _found(hr, t)
    return {"real": real, "by_size": by_size}


def table(m: dict[str, object]) -> str:
    real = m["real"]
    by_size = m["by_size"]
    assert isinstance(real, dict) and isinstance(by_size, dict)
    yes = {True: "found", False: "missed"}
    lines = [BEGIN, "Written by `models/privacy/measure.py --write`; do not edit by hand.", "",
             "| real photo | BlazeFace | Haar cascades |", "| --- | --- | --- |"]
    for name, (b, h) in real.items():
        lines.append(f"| {name} | {yes[b]} | {yes[h]} |")
    lines += ["", "| face height (px) | faces | BlazeFace recall | Haar recall |",
              "| --- | --- | --- | --- |"]
    for size, (n, b, h) in by_size.items():
        lines.append(f"| {size} | {n} | {b / n:.2f} | {h / n:.2f} |")
    tn = sum(v[0] for v in by_size.values())
    tb = sum(v[1] for v in by_size.values())
    th = sum(v[2] for v in by_size.values())
    lines += [f"| all | {tn} | {tb / tn:.2f} | {th / tn:.2f} |", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    return sections.publish(README, "face-recall", table(measure()), write=args.write,
                            check=args.check, fix="models/privacy/measure.py --write")


if __name__ == "__main__":
    sys.exit(main())
