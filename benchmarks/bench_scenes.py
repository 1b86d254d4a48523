"""Benchmark: how fast the simulator renders, which bounds how many training scenes and test
drives are affordable. Prints figures, asserts nothing.

    python benchmarks/bench_scenes.py [--scenes 50]

Figures: ms per 320x320 training scene and per 640x360 drive frame, each also as a ratio
to decoding one 640x360 frame of the bundled sample video with OpenCV, measured in the same
run (the cheapest thing a frame can cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.simulate import render_training_scene

ROOT = Path(__file__).resolve().parent.parent


def per_call_ms(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: imports, caches
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=50)
    args = ap.parse_args()

    cap = cv2.VideoCapture(str(ROOT / "samples" / "drive" / "video.mp4"))

    def decode() -> None:
        ok, _ = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    base = per_call_ms(decode, args.scenes * 4)
    rng = np.random.default_rng(1)
    scene = per_call_ms(lambda: render_training_scene(rng), args.scenes)
    frame = per_call_ms(lambda: render_training_scene(rng, 640, 360), args.scenes)
    print(f"decode one sample-video frame (baseline): {base:7.2f} ms")
    print(f"training scene 320x320:                   {scene:7.2f} ms  ({scene / base:.1f}x)")
    print(f"scene 640x360:                            {frame:7.2f} ms  ({frame / base:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
