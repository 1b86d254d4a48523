"""Evaluate an int8 .tflite detector the way the agent runs it.

    python models/train/evaluate.py models/civil-complaint.tflite --eval-seed 1 -n 500

The model goes through ``agent.detector.Detector`` (letterbox, int8 invoke, decoding, NMS)
with a low score threshold, on held-out synthetic scenes from ``SeedSequence([eval_seed, 3])``
(a stream that neither training nor the sample drives use). Reported: per-class AP@0.5 (VOC
all-point interpolation), mAP over all classes and over the three reported classes, false
alarms (reported-class detections at the agent's default threshold on no labelled object),
by the road-side clutter they sit on, and the median invoke time at 1 and 4 threads.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agent.detector import Detector

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data

from agent.config import DetectorConfig
from agent.simulate import CLUTTER_KINDS

REPORTED = ("garbage", "banner", "construction")
ALARM_THRESHOLD = DetectorConfig().score_threshold
"""The agent's default detector.score_threshold: false alarms are counted above it."""


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a against boxes b (x1, y1, x2, y2)."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, all points (VOC 2010+)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])
    idx = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[idx + 1] - r[idx]) * p[idx + 1]))


def average_precision(preds: Sequence[list[tuple[int, float, np.ndarray]]],
                      truths: Sequence[list[tuple[int, np.ndarray]]], num_classes: int,
                      iou_thr: float = 0.5, min_h: float = 0.0,
                      max_h: float = math.inf) -> list[float | None]:
    """Per-class AP@iou_thr; ``None`` for a class with no ground truth.

    ``min_h`` > 0 (in the boxes' units) restricts the evaluation to objects at least that
    tall, and ``max_h`` to objects shorter than that, COCO area-range style: ground truth
    outside the range is "ignore" (a detection matching it counts neither way), and so are
    unmatched detections outside it.
    """
    aps: list[float | None] = []
    for c in range(num_classes):
        gt = {i: np.array([b for k, b in t if k == c]).reshape(-1, 4)
              for i, t in enumerate(truths)}
        big = {i: ((g[:, 3] - g[:, 1]) >= min_h) & ((g[:, 3] - g[:, 1]) < max_h)
               for i, g in gt.items()}
        used = {i: np.zeros(len(g), bool) for i, g in gt.items()}
        n_gt = sum(int(b.sum()) for b in big.values())
        dets = [(s, i, b) for i, p in enumerate(preds) for k, s, b in p if k == c]
        dets.sort(key=lambda d: -d[0])
        tp = np.zeros(len(dets))
        skip = np.zeros(len(dets), bool)
        for j, (_s, i, b) in enumerate(dets):
            g = gt[i]
            matched = False
            if len(g):
                ov = _iou(b, g)
                free = (ov >= iou_thr) & big[i] & ~used[i]
                if free.any():  # COCO style: a free box of the evaluated range first
                    m = int(np.argmax(np.where(free, ov, -1.0)))
                    used[i][m] = True
                    tp[j] = 1
                    matched = True
                elif ((ov >= iou_thr) & ~big[i]).any():
                    skip[j] = matched = True
            if not matched and not min_h <= (b[3] - b[1]) < max_h:
                skip[j] = True
        if n_gt == 0:
            aps.append(None)
            continue
        tp = tp[~skip]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        aps.append(voc_ap(ctp / n_gt, ctp / np.maximum(ctp + cfp, 1e-12)))
    return aps


def false_alarms(preds: Sequence[list[tuple[int, float, np.ndarray]]],
                 truths: Sequence[list[tuple[int, np.ndarray]]], labels: Sequence[str],
                 threshold: float = ALARM_THRESHOLD) -> dict[str, object]:
    """Detections of a reported class scoring at least ``threshold`` that overlap no labelled
    object (IoU < 0.3 with every box, any class), counted by the clutter they sit on (the
    clutter box holding the detection's centre; "background" when none does: road, kerbs,
    walls, and also objects drawn but too hidden or small to be labelled, or boxes placed
    badly on a labelled one).

    ``truths`` may hold clutter boxes (negative ids, :func:`data.clutter_id`): how many
    boxes of each kind there were is reported beside the alarms on them."""
    reported = {i for i, lab in enumerate(labels) if lab in REPORTED}
    on: dict[str, int] = {k: 0 for k in (*CLUTTER_KINDS, "background")}
    seen = {k: sum(1 for t in truths for c, _ in t if c == data.clutter_id(k))
            for k in CLUTTER_KINDS}
    for p, t in zip(preds, truths, strict=True):
        objs = np.array([b for c, b in t if c >= 0]).reshape(-1, 4)
        clutter = [(c, b) for c, b in t if c < 0]
        for k, s, b in p:
            if k not in reported or s < threshold or (len(objs) and _iou(b, objs).max() >= 0.3):
                continue
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            inside = [(float((cb[2] - cb[0]) * (cb[3] - cb[1])), c) for c, cb in clutter
                      if cb[0] <= cx <= cb[2] and cb[1] <= cy <= cb[3]]
            kind = data.clutter_kind(min(inside)[1]) if inside else "background"
            on[kind] += 1
    return {"threshold": threshold, "per_100_scenes": 100 * sum(on.values()) / len(preds),
            "on": on, "clutter_boxes": seen}


def evaluate(model: Path, images_bgr: np.ndarray, boxes: Sequence[list[data.Box]],
             score_threshold: float = 0.05, min_px: float = 16.0) -> dict[str, object]:
    """Per-class AP@0.5 and mAP of ``model`` on BGR scenes with pixel boxes; the same again
    (``*_big``) for objects at least ``min_px`` tall in the model input; false alarms
    (:func:`false_alarms`; clutter boxes, negative ids, may be among ``boxes``)."""
    det = Detector(model, threads=2, score_threshold=score_threshold, max_detections=100)
    labels = det.labels
    preds, truths, with_clutter = [], [], []
    for img, bx in zip(images_bgr, boxes, strict=True):
        h, w = img.shape[:2]
        preds.append([(d.class_id, d.score, np.array(d.bbox)) for d in det.detect(img)])
        norm = [(c, np.array([x1 / w, y1 / h, x2 / w, y2 / h])) for c, x1, y1, x2, y2 in bx]
        truths.append([(c, b) for c, b in norm if c >= 0])
        with_clutter.append(norm)
    aps = average_precision(preds, truths, len(labels))
    per_class = {lab: ap for lab, ap in zip(labels, aps, strict=True)}
    counts = {lab: sum(1 for t in truths for k, _ in t if k == i) for i, lab in enumerate(labels)}
    valid = [a for a in aps if a is not None]
    rep = [per_class[c] for c in REPORTED if per_class.get(c) is not None]
    # scenes are square; the model input is det.in_h tall, so min_px / in_h of the height
    min_h = min_px / det.in_h
    aps_b = average_precision(preds, truths, len(labels), min_h=min_h)
    big = {lab: ap for lab, ap in zip(labels, aps_b, strict=True)}
    counts_b = {lab: sum(1 for t in truths for k, b in t if k == i and b[3] - b[1] >= min_h)
                for i, lab in enumerate(labels)}
    valid_b = [a for a in aps_b if a is not None]
    rep_b = [big[c] for c in REPORTED if big.get(c) is not None]
    return {"n_scenes": len(images_bgr), "ap50": per_class, "instances": counts,
            "map50_all": float(np.mean(valid)) if valid else 0.0,
            "map50_reported": float(np.mean(rep)) if rep else 0.0,
            "min_px": min_px, "ap50_big": big, "instances_big": counts_b,
            "map50_all_big": float(np.mean(valid_b)) if valid_b else 0.0,
            "map50_reported_big": float(np.mean(rep_b)) if rep_b else 0.0,
            "false_alarms": false_alarms(preds, with_clutter, labels)}


def invoke_ms(model: Path, threads: int, runs: int = 50) -> float:
    """Median interpreter invoke time in ms (preprocessing and decoding excluded)."""
    det = Detector(model, threads=threads)
    img = np.full((det.in_h, det.in_w, 3), 114, np.uint8)
    det.detect(img)  # warm-up: the first invoke prepares XNNPACK
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        det.interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--eval-seed", type=int, default=1)
    ap.add_argument("-n", type=int, default=500, help="held-out scenes")
    ap.add_argument("--score-threshold", type=float, default=0.05)
    args = ap.parse_args(argv)
    images, boxes = data.synthetic_scenes(args.eval_seed, data.EVAL_STREAM, args.n,
                                          clutter=True)
    res = evaluate(args.model, images, boxes, args.score_threshold)
    res["invoke_ms"] = {t: invoke_ms(args.model, t) for t in (1, 4)}
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
