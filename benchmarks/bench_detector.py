"""Benchmark: detector time per frame, split into preprocessing, invoke and
postprocessing, each as a ratio to a bare ``interpreter.invoke()`` loop on the
same model measured in the same run, and the cost of one view of a finding's second
look. Prints figures, asserts nothing.

    python benchmarks/bench_detector.py [--model models/civil-complaint.tflite] [--frames 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.detector import Detector

ROOT = Path(__file__).resolve().parent.parent


def frames(n: int, seed: int = 3) -> list[np.ndarray]:
    """Drive-sized frames (640x360) with structure, so NMS has candidates to chew on."""
    try:
        from agent.simulate import render_training_scene

        rng = np.random.default_rng(np.random.SeedSequence([seed, 9]))
        out = []
        for _ in range(n):
            img, _ = render_training_scene(rng, 640, 360)
            out.append(img)
        return out
    except ImportError:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(n)]


def bench(model: Path, threads: int, imgs: list[np.ndarray]) -> None:
    det = Detector(model, threads=threads, score_threshold=0.3, allow=None)
    det.detect(imgs[0])  # warm-up
    bare = []
    for _ in range(len(imgs)):
        t0 = time.perf_counter()
        det.interp.invoke()
        bare.append((time.perf_counter() - t0) * 1e3)
    pre, inv, post, total = [], [], [], []
    first = []  # each frame's best detection, for the second look below
    for img in imgs:
        t0 = time.perf_counter()
        found = det.detect(img)
        total.append((time.perf_counter() - t0) * 1e3)
        pre.append(det.timings.preprocess_ms)
        inv.append(det.timings.invoke_ms)
        post.append(det.timings.postprocess_ms)
        first.append(found[0] if found else None)
    # A finding's second look (events.confirm_score): detect() on a zoomed crop around a
    # box, at most events.confirm_views of them per finding, none per ordinary frame.
    look = []
    for img, d in zip(imgs, first, strict=True):
        if d is not None:
            t0 = time.perf_counter()
            det.second_look(img, d.bbox, d.label)
            look.append((time.perf_counter() - t0) * 1e3)
    b = statistics.median(bare)
    print(f"{model.name} ({det.layout}, {det.in_w}x{det.in_h}), {threads} thread(s), "
          f"{len(imgs)} frames of 640x360, medians:")
    print(f"  bare invoke (baseline)   {b:7.2f} ms  1.00 x")
    for name, xs in (("preprocess (letterbox)", pre), ("invoke in detect()", inv),
                     ("postprocess (decode,NMS)", post), ("detect() total", total)):
        m = statistics.median(xs)
        print(f"  {name:<24} {m:7.2f} ms  {m / b:4.2f} x")
    if look:
        m = statistics.median(look)
        print(f"  {'second look (one view)':<24} {m:7.2f} ms  {m / b:4.2f} x  "
              f"({len(look)} boxes; per finding, not per frame)")
    print(f"  => {1000 / statistics.median(total):.0f} frames/s through detect()")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, action="append")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--threads", type=int, action="append")
    args = ap.parse_args()
    models = args.model or [ROOT / "models" / "civil-complaint.tflite"]
    imgs = frames(args.frames)
    for model in models:
        for threads in args.threads or [1, 4]:
            bench(model, threads, imgs)


if __name__ == "__main__":
    main()
