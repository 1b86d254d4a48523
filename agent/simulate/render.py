"""Draws the road-side world as the vehicle camera sees it from one pose.

The single renderer for training scenes and drive frames: sky and skyline, ground,
sidewalks, carriageway and markings, building fronts, then the objects far to near, then
the look (light, weather, blur, noise). It also reports which labelled objects are visible,
where, and how much of each is hidden by nearer things or cut by the frame edge.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from agent.simulate.camera import NEAR_M, Camera
from agent.simulate.look import Look, apply_look, sky
from agent.simulate.road import Road, Thing, Wall
from agent.simulate.sprites import LABELLED_KINDS, draw_object

MAX_RANGE_M = 160.0
"""Nothing farther is drawn (it would be under a pixel anyway)."""
OPAQUE = frozenset({"car", "pedestrian", "bush", "garbage", "construction", "bin"})
"""Kinds whose box hides what is behind them (poles, trees, signs are mostly see-through)."""

FACADES = [(170, 175, 180), (120, 130, 150), (90, 100, 140), (200, 205, 210), (140, 140, 135),
           (110, 120, 120), (170, 190, 210), (80, 90, 110), (150, 160, 175)]
"""Building fronts: concrete, brick, render, glass."""


@dataclass(frozen=True, slots=True)
class Pose:
    """Where the vehicle is (local east/north metres) and where it points (deg from north)."""

    east: float
    north: float
    heading_deg: float


@dataclass(frozen=True, slots=True)
class Visible:
    """An object in the image: its box clipped to the frame, and how much of it shows."""

    thing: Thing
    box: tuple[float, float, float, float]
    full_box: tuple[float, float, float, float]
    visible: float
    """Share of the object's full box that is inside the frame and not hidden (0..1)."""
    distance_m: float


def to_vehicle(pose: Pose, pts: np.ndarray) -> np.ndarray:
    """World east/north (N, 2) -> vehicle X right / Y ahead (N, 2)."""
    h = math.radians(pose.heading_deg)
    de = pts[..., 0] - pose.east
    dn = pts[..., 1] - pose.north
    ch, sh = math.cos(h), math.sin(h)
    return np.stack([de * ch - dn * sh, de * sh + dn * ch], axis=-1)


def _ground_quads(cam: Camera, left: np.ndarray, right: np.ndarray, img: np.ndarray,
                  colour: tuple[int, int, int], mask: np.ndarray | None = None) -> None:
    """Fill the strip between two vehicle-frame ground polylines, segment by segment."""
    n = len(left)
    if n < 2:
        return
    pts = np.concatenate([left, right]).astype(np.float64)
    cam_pts = cam.to_camera(np.column_stack([pts, np.zeros(len(pts))]))
    z = cam_pts[:, 2]
    px = cam.project_camera(cam_pts)
    zl, zr = z[:n], z[n:]
    pl, pr = px[:n], px[n:]
    zq = np.stack([zl[:-1], zl[1:], zr[1:], zr[:-1]], axis=1)
    quads = np.stack([pl[:-1], pl[1:], pr[1:], pr[:-1]], axis=1)
    use = np.ones(n - 1, bool) if mask is None else np.asarray(mask, bool)[: n - 1]
    front = use & (zq.min(axis=1) >= NEAR_M)
    polys = list(np.round(np.clip(quads[front], -1e5, 1e5) * 4).astype(np.int32))
    for i in np.flatnonzero(use & ~front & (zq.max(axis=1) >= NEAR_M)):
        poly = np.array([[*left[i], 0], [*left[i + 1], 0], [*right[i + 1], 0],
                         [*right[i], 0]])
        q = cam.project_polygon(poly)
        if q is not None:
            polys.append(np.round(np.clip(q, -1e5, 1e5) * 4).astype(np.int32))
    for q in polys:
        cv2.fillConvexPoly(img, q, colour, cv2.LINE_8, 2)


def _draw_road(img: np.ndarray, cam: Camera, pose: Pose, road: Road, look: Look) -> None:
    d = np.hypot(road.centre[:, 0] - pose.east, road.centre[:, 1] - pose.north)
    near = d < MAX_RANGE_M
    if near.sum() < 2:
        return
    idx = np.flatnonzero(near)
    lo, hi = max(0, idx[0] - 1), min(len(d), idx[-1] + 2)
    seg_ok = (near[lo:hi - 1] | near[lo + 1:hi])
    hw, sw = road.half_width, road.sidewalk_m

    def line(off: float) -> np.ndarray:
        return to_vehicle(pose, (road.centre[lo:hi] + road.normal[lo:hi] * off))

    _ground_quads(cam, line(hw + sw), line(-hw - sw), img, look.sidewalk, seg_ok)
    _ground_quads(cam, line(hw + 0.18), line(-hw - 0.18), img, look.kerb, seg_ok)
    _ground_quads(cam, line(hw), line(-hw), img, look.road, seg_ok)
    s = road.s[lo:hi]
    if road.centre_line == "dashed":
        dash = ((s // 4.5) % 2 == 0)
        _ground_quads(cam, line(0.07), line(-0.07), img, (215, 215, 215), seg_ok & dash[:-1])
    elif road.centre_line == "double":
        _ground_quads(cam, line(0.22), line(0.1), img, (40, 170, 215), seg_ok)
        _ground_quads(cam, line(-0.1), line(-0.22), img, (40, 170, 215), seg_ok)
    edge = (215, 215, 215)
    _ground_quads(cam, line(hw - 0.25), line(hw - 0.4), img, edge, seg_ok)
    _ground_quads(cam, line(-hw + 0.4), line(-hw + 0.25), img, edge, seg_ok)


def _draw_walls(img: np.ndarray, cam: Camera, pose: Pose, walls: Sequence[Wall]) -> None:
    items = []
    for w in walls:
        ab = to_vehicle(pose, np.array([w.a, w.b], dtype=np.float64))
        mid = ab.mean(axis=0)
        if mid[1] < -20 or np.hypot(*mid) > MAX_RANGE_M + 20:
            continue
        items.append((float(np.hypot(*mid)), w, ab))
    items.sort(key=lambda it: -it[0])
    for _, w, ab in items:
        poly = np.array([[*ab[0], 0], [*ab[1], 0], [*ab[1], w.height_m], [*ab[0], w.height_m]])
        q = cam.project_polygon(poly)
        if q is None:
            continue
        r = np.random.default_rng(w.seed)
        tone = FACADES[int(r.integers(len(FACADES)))]
        base = np.clip(np.array(tone) + r.integers(-20, 21, 3), 30, 240)
        colour = (int(base[0]), int(base[1]), int(base[2]))
        cv2.fillPoly(img, [np.round(np.clip(q, -1e5, 1e5) * 4).astype(np.int32)], colour,
                     cv2.LINE_8, 2)
        # windows, floor by floor, as small 3D quads on the front
        length = float(np.hypot(*(ab[1] - ab[0])))
        floors = int(w.height_m // 3.2)
        cols = int(length // 3.0)
        if floors < 1 or cols < 1 or floors * cols > 400:
            continue
        u = (np.arange(cols) + 0.3) / cols
        du = 0.4 / cols
        v = np.arange(floors) * 3.2 + 1.0
        uu, vv = np.meshgrid(u, v)
        uu, vv = uu.ravel(), vv.ravel()
        corners = []
        for cu, cv_ in ((0, 0), (du, 0), (du, 1.5), (0, 1.5)):
            p = ab[0] + (uu + cu)[:, None] * (ab[1] - ab[0])
            corners.append(np.column_stack([p, vv + cv_]))
        allc = np.stack(corners, axis=1).reshape(-1, 3)
        camc = cam.to_camera(allc)
        if (camc[:, 2] < NEAR_M).any():
            ok = (camc[:, 2].reshape(-1, 4) >= NEAR_M).all(axis=1)
        else:
            ok = np.ones(len(uu), bool)
        px = np.clip(cam.project_camera(camc), -1e5, 1e5)
        px = np.round(px).reshape(-1, 4, 2).astype(np.int32)
        win = (int(base[0] * 0.4), int(base[1] * 0.45), int(base[2] * 0.45))
        cv2.fillPoly(img, list(px[ok]), win)  # windows never overlap: one call for all


def _boxes(cam: Camera, pose: Pose, things: Sequence[Thing]) -> list[tuple[float, Thing,
                                                                         np.ndarray]]:
    """Project each thing's billboard; far to near."""
    if not things:
        return []
    pts = np.array([[t.east, t.north] for t in things])
    veh = to_vehicle(pose, pts)
    hs = np.array([t.height_m for t in things])
    ws = np.array([t.width_m for t in things])
    foot = cam.to_camera(np.column_stack([veh, np.zeros(len(veh))]))
    head = cam.to_camera(np.column_stack([veh, hs]))
    z = foot[:, 2]
    ok = (z > NEAR_M + 0.8) & (z < MAX_RANGE_M) & (head[:, 2] > NEAR_M)
    f = cam.focal_px
    out = []
    for i in np.flatnonzero(ok):
        zf = z[i]
        u1 = cam.width / 2 + f * (foot[i, 0] - ws[i] / 2) / zf
        u2 = cam.width / 2 + f * (foot[i, 0] + ws[i] / 2) / zf
        vb = cam.height / 2 + f * foot[i, 1] / zf
        vt = cam.height / 2 + f * head[i, 1] / head[i, 2]
        if u2 < -cam.width or u1 > 2 * cam.width:
            continue
        out.append((float(zf), things[i], np.array([u1, vt, u2, vb])))
    out.sort(key=lambda it: -it[0])
    return out


def render_view(cam: Camera, pose: Pose, roads: Sequence[Road], walls: Sequence[Wall],
                things: Sequence[Thing], look: Look, r: np.random.Generator,
                speed_frac: float = 1.0, effects: bool = True,
                kinds: Collection[str] = LABELLED_KINDS) -> tuple[np.ndarray, list[Visible]]:
    """The camera image from `pose`, and the objects of `kinds` (default: the labelled
    ones) visible in it.

    `r` only drives per-frame randomness (rain streaks, noise); the world's appearance comes
    from the seeds it carries, so the same pose gives the same picture apart from noise.
    """
    horizon = cam.horizon_y
    img = sky(look, cam.width, cam.height, horizon, pose.heading_deg + cam.yaw_deg,
              cam.focal_px)
    for road in roads:
        _draw_road(img, cam, pose, road, look)
    _draw_walls(img, cam, pose, walls)
    placed = _boxes(cam, pose, things)
    for _, t, b in placed:
        draw_object(img, t.kind, (float(b[0]), float(b[1]), float(b[2]), float(b[3])), t.seed)
    visible = _visibility(cam, placed, kinds)
    if effects:
        img = apply_look(img, look, r, horizon, speed_frac)
    return img, visible


def _visibility(cam: Camera, placed: list[tuple[float, Thing, np.ndarray]],
                kinds: Collection[str]) -> list[Visible]:
    out: list[Visible] = []
    w, h = cam.width, cam.height
    for k, (dist, t, b) in enumerate(placed):
        if t.kind not in kinds:
            continue
        x1, y1, x2, y2 = (float(v) for v in b)
        area = max(1e-6, (x2 - x1) * (y2 - y1))
        cx1, cy1, cx2, cy2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        ix1, iy1, ix2, iy2 = int(cx1), int(cy1), math.ceil(cx2), math.ceil(cy2)
        cover = np.ones((iy2 - iy1, ix2 - ix1), bool)
        for _, o, ob in placed[k + 1:]:  # nearer things drawn over it
            if o.kind not in OPAQUE:
                continue
            ox1, oy1 = int(max(ob[0], ix1)) - ix1, int(max(ob[1], iy1)) - iy1
            ox2, oy2 = int(min(ob[2], ix2)) - ix1, int(min(ob[3], iy2)) - iy1
            if ox2 > ox1 and oy2 > oy1:
                cover[oy1:oy2, ox1:ox2] = False
        frac_unhidden = float(cover.mean()) if cover.size else 0.0
        frac = (cx2 - cx1) * (cy2 - cy1) / area * frac_unhidden
        out.append(Visible(t, (cx1, cy1, cx2, cy2), (x1, y1, x2, y2), frac, dist))
    return out
