"""Training scenes for the project's detector (models/train uses this module).

    CLASSES = ("garbage", "banner", "construction", "bin", "sign")
    render_training_scene(rng, width=320, height=320, clutter=False)
        -> (BGR uint8 image, [(class, x1, y1, x2, y2)])

With ``clutter=True`` the list also holds the visible road-side clutter (trees, lamps,
poles, cars, pedestrians, bushes) under its own kind name, from ``CLUTTER_KINDS``: not
classes to detect, but places where training should show the detector what is NOT a
finding (hard negatives). The image is the same either way.

Each call builds a small random road-side world around a vehicle and renders it through
the same camera, renderer and sprites as the sample drives (agent/simulate/render.py), so
a detector trained on these scenes sees drive frames the way it saw its training data.
About 60% of scenes are 16:9 camera frames letterboxed into the square with grey
(114, 114, 114) bars, exactly as the detector's preprocessing fits a 640x360 frame; the
rest are 16:9 frames cropped to fill the square (closer looks, objects cut by the edge).

Randomness comes only from the Generator passed in; nothing touches global random state.
Seed streams: drives derive theirs from ``np.random.SeedSequence([seed, 1])`` (spawn key 1,
see agent/simulate/drive.py); training must use a different stream, e.g.
``np.random.default_rng(np.random.SeedSequence([seed, 0]))`` or any other key but 1, so no
training scene is a frame of a test drive.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from agent.simulate.camera import Camera
from agent.simulate.look import random_look
from agent.simulate.render import Pose, Visible, render_view
from agent.simulate.road import Road, Thing, Wall
from agent.simulate.sprites import CLUTTER_KINDS, LABELLED_KINDS, object_size

__all__ = ["CLASSES", "CLUTTER_KINDS", "render_training_recording", "render_training_scene"]

CLASSES: tuple[str, ...] = ("garbage", "banner", "construction", "bin", "sign")
CLASS_WEIGHTS = np.array([0.26, 0.2, 0.2, 0.17, 0.17])
PAD_VALUE = 114
MIN_VISIBLE = 0.4
"""A labelled object less visible than this (frame edge, occlusion) is not labelled."""
MIN_SIDE_PX = 6.0
"""Nor is one whose visible box is thinner than this in the output image."""
LETTERBOX_SHARE = 0.6
CORNER_SHARE = 0.3
"""Share of scenes with a 90-degree street corner ahead (radius 8-15 m, as the drives'
routes turn): kerbs and lane lines sweeping across the view are road, not findings."""

Label = tuple[str, float, float, float, float]


def random_camera(r: np.random.Generator, width: int = 640, height: int = 360) -> Camera:
    """The unit's camera as mounted in one vehicle or another (small spread round the spec)."""
    return Camera(width, height, hfov_deg=float(r.uniform(64, 76)),
                  height_m=float(r.uniform(1.3, 1.8)), tilt_deg=float(r.uniform(1.0, 8.0)),
                  yaw_deg=float(r.normal(0, 2.0)))


def _local_world(r: np.random.Generator) -> tuple[Road, list[Wall], list[Thing]]:
    """A road ahead of a vehicle at the origin heading north, with things beside it."""
    hw = float(r.choice([3.2, 4.0, 5.5, 7.0]) + r.uniform(-0.3, 0.5))
    sw = float(r.uniform(1.8, 5.0))
    offset = float(r.uniform(0.15, 0.85)) * hw  # camera right of the centre line
    road = Road(_centre_line(r, offset), hw, sw,
                str(r.choice(["dashed", "double", "none"], p=[0.5, 0.35, 0.15])))

    def at(y: float, left_m: float) -> tuple[float, float]:
        i = int(np.clip(np.searchsorted(road.s, y + 12.0), 0, len(road.s) - 1))
        p = road.centre[i] + road.normal[i] * left_m
        return float(p[0]), float(p[1])

    walls: list[Wall] = []
    setbacks = {side: hw + sw + float(r.uniform(0.0, 6.0)) for side in (-1, 1)}
    for side in (-1, 1):
        if r.random() < 0.2:
            setbacks[side] = hw + 12.0  # an open lot or a park: no building fronts
            continue
        y = float(r.uniform(-10, 5))
        setback = setbacks[side]
        while y < 190:
            length = float(r.uniform(8, 30))
            a, b = at(y, side * setback), at(y + length, side * setback)
            front = np.linspace(a, b, 6)
            if road.clear(front, sw - 0.1):
                walls.append(Wall(a, b, float(r.uniform(4, 30)), int(r.integers(2**31))))
            y += length + float(r.uniform(0, 10))

    things: list[Thing] = []
    n = int(r.choice(6, p=[0.04, 0.12, 0.22, 0.26, 0.2, 0.16]))
    spots: list[tuple[float, float]] = []
    for i in range(n):
        kind = str(r.choice(CLASSES, p=CLASS_WEIGHTS))
        for _ in range(10):
            y = 4.0 + 36.0 * float(r.random()) ** 1.5 if r.random() < 0.88 else \
                float(r.uniform(2.5, 6))
            side = 1 if r.random() < 0.35 else -1
            # mostly inside the field of view: |x| < y tan(33 deg), edge cuts allowed
            reach = y * 0.65 - hw - side * offset
            room = min(setbacks[side] - hw - 0.4, 6.5, reach)  # never inside a building
            lat = side * (hw + float(r.uniform(0.3, max(0.4, room))))
            e, nn = at(y, lat)
            if road.clear((e, nn), 0.3) and all(math.hypot(e - a, nn - b) > 2.5
                                                for a, b in spots):
                break
        spots.append((e, nn))
        w, h = object_size(kind, r)
        things.append(Thing(kind, e, nn, w, h, int(r.integers(2**31)), i))
    # clutter: rows of trees or lamps, parked cars, people, bushes
    side_row = hw + float(r.uniform(0.4, 1.0))
    for side in (-1, 1):
        if r.random() < 0.6:
            kind = str(r.choice(["tree", "lamp", "pole"]))
            step = float(r.uniform(12, 30))
            y = float(r.uniform(0, step))
            while y < 120:
                w, h = object_size(kind, r)
                e, nn = at(y, side * side_row)
                if road.clear((e, nn), 0.3):
                    things.append(Thing(kind, e, nn, w, h, int(r.integers(2**31))))
                y += step
    for _ in range(int(r.integers(0, 6))):
        kind = str(r.choice(["car", "pedestrian", "bush", "car"]))
        side = 1 if r.random() < 0.4 else -1
        lat = hw - 1.1 if kind == "car" else hw + float(r.uniform(0.5, sw))
        e, nn = at(float(r.uniform(3, 60)), side * lat)
        w, h = object_size(kind, r)
        if kind == "car" or road.clear((e, nn), 0.3):
            things.append(Thing(kind, e, nn, w, h, int(r.integers(2**31))))
    return road, walls, things


def _centre_line(r: np.random.Generator, offset: float) -> np.ndarray:
    """The road's centre line from 12 m behind the camera (which is ``offset`` right of
    it): a long gentle bend, or a straight to a 90-degree corner and a street across."""
    if r.random() < CORNER_SHARE:
        start = float(r.uniform(4.0, 45.0))
        radius = float(r.uniform(8.0, 15.0))
        turn = 1.0 if r.random() < 0.5 else -1.0  # right or left
        ys = np.arange(-12.0, start, 2.0)
        a = np.linspace(0.0, math.pi / 2, 10)
        d = np.concatenate([np.arange(2.0, 40.0, 2.0), np.arange(40.0, 160.0, 6.0)])
        return np.vstack([
            np.column_stack([np.full_like(ys, -offset), ys]),
            np.column_stack([-offset + turn * radius * (1 - np.cos(a)),
                             start + radius * np.sin(a)]),
            np.column_stack([-offset + turn * (radius + d), np.full_like(d, start + radius)])])
    curv = float(r.normal(0, 0.004))
    ys = np.concatenate([np.arange(-12.0, 40.0, 2.0), np.arange(40.0, 200.0, 6.0)])
    return np.column_stack([-offset + 0.5 * curv * ys ** 2, ys])


def render_training_scene(rng: np.random.Generator, width: int = 320, height: int = 320,
                          clutter: bool = False) -> tuple[np.ndarray, list[Label]]:
    """One random road-side scene: a BGR uint8 (height, width, 3) image and its labels.

    Labels are (class, x1, y1, x2, y2) in pixels of the returned image, clipped to the
    frame (and to the picture area inside letterbox bars); objects less than 40% visible or
    thinner than 6 px are left out (they are still drawn). Deterministic for a given
    Generator state. ``clutter`` adds the clutter's boxes, by the same rules.
    """
    kinds = LABELLED_KINDS + CLUTTER_KINDS if clutter else LABELLED_KINDS
    road, walls, things = _local_world(rng)
    look = random_look(rng)
    pose = Pose(0.0, 0.0, float(rng.normal(0, 3.0)))
    speed = float(rng.uniform(0.0, 1.0))
    if rng.random() < LETTERBOX_SHARE:
        cam = random_camera(rng, 640, 360)
        frame, vis = render_view(cam, pose, [road], walls, things, look, rng, speed,
                                 kinds=kinds)
        scale = min(width / cam.width, height / cam.height)
        nw, nh = max(1, round(cam.width * scale)), max(1, round(cam.height * scale))
        px, py = (width - nw) // 2, (height - nh) // 2
        out = np.full((height, width, 3), PAD_VALUE, np.uint8)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        out[py:py + nh, px:px + nw] = cv2.resize(frame, (nw, nh), interpolation=interp)
        sx, sy, ox, oy = nw / cam.width, nh / cam.height, float(px), float(py)
        lim = (ox, oy, ox + nw, oy + nh)
    else:
        rw = max(width, math.ceil(height * 16 / 9))
        rh = max(height, math.ceil(rw * 9 / 16))
        cam = random_camera(rng, rw, rh)
        frame, vis = render_view(cam, pose, [road], walls, things, look, rng, speed,
                                 kinds=kinds)
        cx = int(rng.integers(0, rw - width + 1))
        cy = int(rng.integers(0, rh - height + 1))
        out = np.ascontiguousarray(frame[cy:cy + height, cx:cx + width])
        sx, sy, ox, oy = 1.0, 1.0, -float(cx), -float(cy)
        lim = (0.0, 0.0, float(width), float(height))
    return out, _labels(vis, sx, sy, ox, oy, lim)


def render_training_recording(rng: np.random.Generator, frames: int, width: int = 640,
                              height: int = 360, step_m: float = 2.0, clutter: bool = False
                              ) -> list[tuple[np.ndarray, list[Label]]]:
    """A short recording: ``frames`` camera frames (BGR, ``width`` x ``height``) taken every
    ``step_m`` metres as a vehicle drives up one random road-side world, with their labels
    (same rules as :func:`render_training_scene`).

    Consecutive frames show the same objects from a little nearer, as a patrol camera's
    frames do; a data set split by image would put near-copies on both sides of the split,
    which is why models/train splits by recording.
    """
    kinds = LABELLED_KINDS + CLUTTER_KINDS if clutter else LABELLED_KINDS
    road, walls, things = _local_world(rng)
    look = random_look(rng)
    cam = random_camera(rng, width, height)
    heading = float(rng.normal(0, 3.0))
    speed = float(rng.uniform(0.3, 1.0))
    out = []
    for k in range(frames):
        pose = Pose(0.0, k * step_m, heading)
        frame, vis = render_view(cam, pose, [road], walls, things, look, rng, speed,
                                 kinds=kinds)
        lim = (0.0, 0.0, float(width), float(height))
        out.append((frame, _labels(vis, 1.0, 1.0, 0.0, 0.0, lim)))
    return out


def _labels(vis: list[Visible], sx: float, sy: float, ox: float, oy: float,
            lim: tuple[float, float, float, float]) -> list[Label]:
    """Labels of the visible objects, mapped into the output image (scale, offset) and
    clipped to ``lim``; too thin or too hidden objects are left out."""
    labels: list[Label] = []
    for v in vis:
        fx1, fy1, fx2, fy2 = v.full_box
        x1, y1 = fx1 * sx + ox, fy1 * sy + oy
        x2, y2 = fx2 * sx + ox, fy2 * sy + oy
        cx1, cy1 = max(x1, lim[0]), max(y1, lim[1])
        cx2, cy2 = min(x2, lim[2]), min(y2, lim[3])
        if cx2 - cx1 < MIN_SIDE_PX or cy2 - cy1 < MIN_SIDE_PX:
            continue
        in_view = (cx2 - cx1) * (cy2 - cy1) / max(1e-6, (x2 - x1) * (y2 - y1))
        # v.visible already counts the camera frame's edge; the crop may cut more
        frame_share = ((v.box[2] - v.box[0]) * (v.box[3] - v.box[1])
                       / max(1e-6, (fx2 - fx1) * (fy2 - fy1)))
        hidden = v.visible / max(frame_share, 1e-6)
        if in_view * hidden < MIN_VISIBLE:
            continue
        labels.append((v.thing.kind, float(cx1), float(cy1), float(cx2), float(cy2)))
    return labels
