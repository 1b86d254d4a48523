"""The road-side world's geometry: roads (a centre line with width and sidewalks), building
fronts and the objects standing beside the road, in local east/north metres.

Everything here is world geometry, with no pixels: the same world is seen from any pose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Thing:
    """An object standing on the ground: a labelled kind or clutter."""

    kind: str
    east: float
    north: float
    width_m: float
    height_m: float
    seed: int
    """Its appearance: the sprite is drawn from this seed, the same in every frame."""
    id: int = -1
    """Stable id for ground truth (-1: clutter)."""


@dataclass(frozen=True, slots=True)
class Wall:
    """A building front: a vertical rectangle standing on a ground segment."""

    a: tuple[float, float]
    b: tuple[float, float]
    height_m: float
    seed: int


@dataclass(slots=True)
class Road:
    """A road: centre line (N, 2) east/north metres, carriageway half width, sidewalk width."""

    centre: np.ndarray
    half_width: float = 4.0
    sidewalk_m: float = 3.0
    centre_line: str = "dashed"
    """'dashed' (white), 'double' (yellow) or 'none'."""
    s: np.ndarray = field(init=False)
    normal: np.ndarray = field(init=False)
    """Unit normals pointing left of the direction of travel, one per vertex."""

    def __post_init__(self) -> None:
        c = np.asarray(self.centre, dtype=np.float64)
        keep = np.concatenate([[True], np.hypot(*np.diff(c, axis=0).T) > 1e-6])
        c = c[keep]
        self.centre = c
        seg = np.diff(c, axis=0)
        length = np.hypot(seg[:, 0], seg[:, 1])
        self.s = np.concatenate([[0.0], np.cumsum(length)])
        d = seg / np.maximum(length, 1e-9)[:, None]
        dv = np.vstack([d[:1], d[:-1] + d[1:], d[-1:]]) if len(d) > 1 else np.vstack([d, d])
        dv /= np.maximum(np.hypot(dv[:, 0], dv[:, 1]), 1e-9)[:, None]
        self.normal = np.stack([-dv[:, 1], dv[:, 0]], axis=1)

    def offset(self, left_m: float) -> np.ndarray:
        """The line `left_m` metres left of the centre (negative: right)."""
        return self.centre + self.normal * left_m

    def clear(self, points: np.ndarray | tuple[float, float], margin: float) -> bool:
        """Whether every point ((M, 2), or one (east, north)) stands at least ``margin``
        metres beyond the carriageway's edge, anywhere along the road (past a corner the
        road comes back near what stood beside it)."""
        return bool(distance_to_polyline(points, self.centre).min() >= self.half_width + margin)

    def point_at(self, s: float) -> tuple[np.ndarray, float]:
        """Position and heading (degrees from north, clockwise) at arc length s."""
        s = float(np.clip(s, 0.0, self.s[-1]))
        i = int(np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.s) - 2))
        seg = self.centre[i + 1] - self.centre[i]
        ln = self.s[i + 1] - self.s[i]
        t = 0.0 if ln <= 0 else (s - self.s[i]) / ln
        p = self.centre[i] + t * seg
        return p, float(np.degrees(np.arctan2(seg[0], seg[1])) % 360.0)


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Shortest distance (m) from each point (M, 2) to a polyline (N, 2)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 1, 2)
    a, b = line[:-1][None], line[1:][None]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    q = a + t[..., None] * ab
    return np.sqrt(((p - q) ** 2).sum(-1)).min(axis=1)
