"""A drive's world: the road along the vehicle's path and what stands beside it.

Objects are fixed in the world (east/north metres, and so lat/lon), not in the drive's
timeline: a street driven twice shows the same objects in the same places. Labelled
objects stand 3-8 m from the vehicle's path and always beyond the kerb, at least 25 m apart
(so each is seen on its own), about one every 50-85 m of road; 70% are complaint classes and 30%
distractors (legal bins and road signs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agent.simulate.road import Road, Thing, Wall, distance_to_polyline
from agent.simulate.sprites import object_size

COMPLAINT = ("garbage", "banner", "construction")
DISTRACTOR = ("bin", "sign")
LANE_OFFSET_M = 1.75
"""The vehicle drives this far right of the road's centre line (the right-hand lane)."""
HALF_WIDTH_M = 3.6
SIDEWALK_M = 3.0
MIN_SPACING_M = 25.0
MIN_FROM_PATH_M = 3.0
MAX_FROM_PATH_M = 8.0


@dataclass(slots=True)
class World:
    road: Road
    walls: list[Wall]
    things: list[Thing]
    """Labelled objects (id >= 0) and clutter (id -1)."""

    @property
    def labelled(self) -> list[Thing]:
        return [t for t in self.things if t.id >= 0]


def _normals(path: np.ndarray) -> np.ndarray:
    return Road(path).normal


def build_world(path: np.ndarray, r: np.random.Generator,
                objects_until_m: float | None = None) -> World:
    """Road, buildings, labelled objects and clutter along `path` (east/north, 2 m steps).

    Labelled objects stop at `objects_until_m` along the path (default: its end).
    """
    normal = _normals(path)
    road = Road(path + normal * LANE_OFFSET_M, HALF_WIDTH_M, SIDEWALK_M,
                str(r.choice(["dashed", "double"])))
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    length = float(s[-1])
    # the kerb on each side, measured from the vehicle's path
    kerb_right = HALF_WIDTH_M - LANE_OFFSET_M
    kerb_left = HALF_WIDTH_M + LANE_OFFSET_M

    def at(pos: float, left_m: float) -> tuple[float, float]:
        i = int(np.clip(np.searchsorted(s, pos), 0, len(s) - 1))
        p = path[i] + normal[i] * left_m
        return float(p[0]), float(p[1])

    things: list[Thing] = []
    placed: list[tuple[float, float]] = []
    next_id = 1
    pos = float(r.uniform(15, 40))
    until = length - 5 if objects_until_m is None else min(length - 5, objects_until_m)
    while pos < until:
        for _ in range(8):
            right = r.random() < 0.7
            lo = max(MIN_FROM_PATH_M, (kerb_right if right else kerb_left) + 0.6)
            off = float(r.uniform(lo, MAX_FROM_PATH_M))
            e, n = at(pos, -off if right else off)
            near_path = distance_to_polyline(np.array([[e, n]]), path)[0]
            if (MIN_FROM_PATH_M <= near_path <= MAX_FROM_PATH_M and road.clear((e, n), 0.5)
                    and all(np.hypot(e - a, n - b) >= MIN_SPACING_M for a, b in placed)):
                kind = str(r.choice(COMPLAINT) if r.random() < 0.7 else r.choice(DISTRACTOR))
                w, h = object_size(kind, r)
                things.append(Thing(kind, e, n, w, h, int(r.integers(2**31)), next_id))
                placed.append((e, n))
                next_id += 1
                break
            pos += 3.0
        pos += float(r.uniform(50, 85))

    # clutter: street trees and lamps along the kerbs, parked cars, people, bushes
    for side in (-1, 1):
        kerb = kerb_right if side < 0 else kerb_left
        kind = str(r.choice(["tree", "lamp"]))
        step = float(r.uniform(15, 30))
        p = float(r.uniform(0, step))
        while p < length:
            e, n = at(p, side * (kerb + 0.6))
            if road.clear((e, n), 0.3) and all(np.hypot(e - a, n - b) >= 2.5 for a, b in placed):
                w, h = object_size(kind, r)
                things.append(Thing(kind, e, n, w, h, int(r.integers(2**31))))
            p += step
    for _ in range(int(length / 40)):
        kind = str(r.choice(["car", "car", "pedestrian", "bush", "pole"]))
        side = -1 if r.random() < 0.6 else 1
        kerb = kerb_right if side < 0 else kerb_left
        lat = kerb - 1.1 if kind == "car" else kerb + float(r.uniform(0.5, SIDEWALK_M))
        e, n = at(float(r.uniform(0, length)), side * lat)
        if kind != "car" and not road.clear((e, n), 0.3):
            continue
        if all(np.hypot(e - a, n - b) >= 3.0 for a, b in placed):
            w, h = object_size(kind, r)
            things.append(Thing(kind, e, n, w, h, int(r.integers(2**31))))

    # building fronts behind the sidewalks, kept clear of every stretch of the road
    walls: list[Wall] = []
    mids: list[tuple[float, float]] = []
    for side in (-1, 1):
        kerb = kerb_right if side < 0 else kerb_left
        p = float(r.uniform(-5, 10))
        # behind the sidewalk and behind every labelled object: nothing stands inside a house
        setback = max(kerb + SIDEWALK_M, MAX_FROM_PATH_M) + float(r.uniform(0.8, 5.0))
        while p < length:
            seg = float(r.uniform(8, 30))
            a, b = at(p, side * setback), at(min(length, p + seg), side * setback)
            samples = np.linspace(a, b, 6)
            mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
            if (np.hypot(b[0] - a[0], b[1] - a[1]) > 4.0
                    and road.clear(samples, SIDEWALK_M)
                    and all(np.hypot(mid[0] - x, mid[1] - y) > 6.0 for x, y in mids)):
                walls.append(Wall(a, b, float(r.uniform(5, 30)), int(r.integers(2**31))))
                mids.append(mid)
            p += seg + float(r.uniform(0, 8))
    return World(road, walls, things)
