"""Findings against ground truth: did the agent report each object once, in the right place?

An event matches a ground-truth object of the same class within
``match_radius_m``. Every event is assigned to its nearest unclaimed object
first (so two objects close together each get their own event); further
events near an already matched object are duplicates of it. Events that match
no object are false positives.

* recall = matched objects / objects
* precision = events that belong to a real object / events
* events per object = events belonging to matched objects / matched objects
* position error = distance of each object's first event to the object
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.geo import haversine_m

COMPLAINT_CLASSES = ("garbage", "banner", "construction")


@dataclass(frozen=True, slots=True)
class TruthObject:
    id: str
    label: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Scores:
    objects: int
    events: int
    matched: int
    recall: float
    precision: float
    events_per_object: float
    position_error_m_p50: float | None
    position_error_m_p95: float | None
    false_positives: int
    missed: list[str]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def load_truth(path: Path, classes: Iterable[str] = COMPLAINT_CLASSES) -> list[TruthObject]:
    """Objects of ``truth.json`` whose class the agent reports (distractors are left out)."""
    try:
        data = json.loads(path.read_text())
        objs = data["objects"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"truth file {path}: not a truth.json ({e})") from None
    keep = set(classes)
    return [TruthObject(str(o["id"]), str(o["class"]), float(o["lat"]), float(o["lon"]))
            for o in objs if o["class"] in keep]


def score(truth: list[TruthObject], events: list[tuple[str, float | None, float | None]],
          match_radius_m: float = 15.0) -> Scores:
    """``events``: (label, lat, lon) of each finding; lat/lon None when it had no position."""
    pairs = []
    for ei, (label, lat, lon) in enumerate(events):
        if lat is None or lon is None:
            continue
        for oi, o in enumerate(truth):
            if o.label == label:
                d = haversine_m(lat, lon, o.lat, o.lon)
                if d <= match_radius_m:
                    pairs.append((d, ei, oi))
    pairs.sort()
    first: dict[int, float] = {}  # object -> error of its closest event
    owner: dict[int, int] = {}  # event -> object
    for d, ei, oi in pairs:
        if ei in owner or oi in first:
            continue
        owner[ei] = oi
        first[oi] = d
    for _, ei, oi in pairs:  # the remaining events near a matched object: duplicates
        if ei not in owner and oi in first:
            owner[ei] = oi
    matched = len(first)
    belong = len(owner)
    errs = list(first.values())
    return Scores(
        objects=len(truth),
        events=len(events),
        matched=matched,
        recall=matched / len(truth) if truth else 1.0,
        precision=belong / len(events) if events else 1.0,
        events_per_object=belong / matched if matched else 0.0,
        position_error_m_p50=round(float(np.percentile(errs, 50)), 2) if errs else None,
        position_error_m_p95=round(float(np.percentile(errs, 95)), 2) if errs else None,
        false_positives=len(events) - belong,
        missed=[truth[i].id for i in range(len(truth)) if i not in first],
    )
