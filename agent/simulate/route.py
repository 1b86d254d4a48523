"""Where the simulated vehicle drives: a street route and how it moves along it in time.

A route is generated from a seed (straight blocks, 90-degree corners, gentle bends, speeds of
20-60 km/h, red-light stops) or read from a GPX or NMEA file. Either way the result is the
vehicle's true path in local east/north metres and its state at every video frame.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from agent.geo import LocalFrame
from agent.nmea import read_nmea
from agent.records import parse_iso_utc

CITY_ORIGIN = (37.6584, 126.8320)
"""Goyang City Hall (Deogyang-gu, Goyang-si, Gyeonggi-do), the city the agent is for: where
generated routes start. Only the lat/lon placement; the generated world is in local metres."""
STEP_M = 2.0
"""Spacing of route points (the road's polyline resolution)."""
ACCEL = 1.5
BRAKE = 2.0
LATERAL_ACCEL = 2.5
"""Comfortable lateral acceleration in corners (m/s^2): sets corner speeds."""


class RouteError(ValueError):
    """A route file that cannot be used (unreadable, no points, no movement)."""


@dataclass(frozen=True, slots=True)
class Motion:
    """The vehicle's true state at each frame time."""

    t: np.ndarray
    east: np.ndarray
    north: np.ndarray
    heading_deg: np.ndarray
    speed_mps: np.ndarray
    s: np.ndarray
    """Distance driven along the path (m)."""
    stops: list[tuple[float, float]]
    """(start, end) seconds of each standstill of a second or more."""


def _resample(path: np.ndarray, step: float = STEP_M) -> np.ndarray:
    seg = np.hypot(*np.diff(path, axis=0).T)
    keep = np.concatenate([[True], seg > 0.05])
    path = path[keep]
    if len(path) < 2:
        raise RouteError("route has fewer than two distinct points")
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    if s[-1] < 5.0:
        raise RouteError(f"route is only {s[-1]:.1f} m long")
    q = np.arange(0.0, s[-1], step)
    if s[-1] - q[-1] > 1e-6:
        q = np.append(q, s[-1])
    return np.column_stack([np.interp(q, s, path[:, 0]), np.interp(q, s, path[:, 1])])


def generate_path(r: np.random.Generator, length_m: float) -> np.ndarray:
    """City streets: blocks of 80-300 m, 90-degree corners (radius 8-15 m), gentle bends."""
    pts = [np.zeros(2)]
    heading = float(r.choice([0.0, 90.0, 180.0, 270.0]) + r.normal(0, 4))
    total = 0.0

    def forward(dist: float, turn_deg: float) -> None:
        nonlocal heading, total
        n = max(1, int(dist / 1.0))
        dh = turn_deg / n
        for _ in range(n):
            heading += dh
            h = math.radians(heading)
            pts.append(pts[-1] + np.array([math.sin(h), math.cos(h)]) * (dist / n))
        total += dist

    while total < length_m:
        forward(float(r.uniform(80, 300)), 0.0)
        v = r.random()
        if v < 0.65:  # a corner
            radius = float(r.uniform(8, 15))
            turn = 90.0 if r.random() < 0.5 else -90.0
            forward(abs(math.radians(turn)) * radius, turn)
        elif v < 0.9:  # a gentle bend
            turn = float(r.uniform(10, 35)) * (1 if r.random() < 0.5 else -1)
            forward(float(r.uniform(50, 120)), turn)
    return _resample(np.array(pts))


def _curvature_speed(path: np.ndarray) -> np.ndarray:
    """Highest comfortable speed at each point from the path's curvature."""
    d = np.diff(path, axis=0)
    ang = np.unwrap(np.arctan2(d[:, 0], d[:, 1]))
    step = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
    k = np.abs(np.diff(ang)) / step[1:]
    k = np.concatenate([[0.0], k, [0.0]])
    k = np.convolve(k, np.ones(5) / 5, mode="same")  # a corner is a few points long
    return np.sqrt(LATERAL_ACCEL / np.maximum(k, 1e-6))


def drive_along(path: np.ndarray, r: np.random.Generator, times: np.ndarray,
                first_stop_s: float | None = None) -> Motion:
    """A driver on `path`: cruising at 30-60 km/h, slowing to about 20 km/h for corners,
    stopping at red lights for 3-10 s, never leaving the path's end; the recording starts
    under way. Sampled at `times` (s from start)."""
    s_path = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    length = float(s_path[-1])
    vcurve = _curvature_speed(path)
    stops: list[tuple[float, float]] = []  # (position m, dwell s)
    pos = first_stop_s if first_stop_s is not None else float(r.uniform(120, 400))
    while pos < length - 10:
        stops.append((pos, float(r.uniform(3, 10))))
        pos += float(r.uniform(250, 600))
    dt = 0.05
    t_end = float(times[-1]) if len(times) else 0.0
    n = math.ceil(t_end / dt) + 2
    ts = np.arange(n) * dt
    ss = np.zeros(n)
    vs = np.zeros(n)
    s, v, wait = 0.0, 0.0, 0.0
    cruise = float(r.uniform(30, 60)) / 3.6
    next_change = float(r.uniform(80, 250))
    accel = ACCEL * float(r.uniform(0.8, 1.2))
    v = cruise  # the recording starts with the vehicle already under way
    standing: list[tuple[float, float]] = []
    stand_start: float | None = None
    for i in range(n):
        ss[i], vs[i] = s, v
        if s >= next_change:
            cruise = float(r.uniform(30, 60)) / 3.6
            next_change = s + float(r.uniform(80, 250))
        if wait > 0:
            wait -= dt
            if wait <= 0:
                stops.pop(0)
            v = 0.0
        else:
            j0 = int(np.searchsorted(s_path, s))
            j1 = int(np.searchsorted(s_path, s + 120.0))
            ahead = np.maximum(s_path[j0:j1] - s, 0.0)
            limit = cruise
            if j1 > j0:
                limit = min(limit, float(np.min(np.sqrt(vcurve[j0:j1] ** 2
                                                        + 2 * BRAKE * ahead))))
            to_end = length - s
            limit = min(limit, math.sqrt(2 * BRAKE * max(0.0, to_end - 1.0)))
            if stops:
                gap = stops[0][0] - s
                limit = min(limit, math.sqrt(2 * BRAKE * max(0.0, gap)))
                if gap < 1.0 and v < 1.0:
                    v, wait = 0.0, stops[0][1]
            v = min(v + accel * dt, limit) if limit > v else max(limit, v - 3.0 * dt)
            v = max(v, 0.0)
            s = min(length, s + v * dt)
        if v < 0.05 and stand_start is None:
            stand_start = ts[i]
        elif v >= 0.05 and stand_start is not None:
            if ts[i] - stand_start >= 1.0:
                standing.append((float(stand_start), float(ts[i])))
            stand_start = None
    if stand_start is not None and ts[-1] - stand_start >= 1.0:
        standing.append((float(stand_start), float(ts[-1])))
    s_t = np.interp(times, ts, ss)
    v_t = np.interp(times, ts, vs)
    return _motion_from_s(path, s_path, times, s_t, v_t, standing)


def _motion_from_s(path: np.ndarray, s_path: np.ndarray, times: np.ndarray, s_t: np.ndarray,
                   v_t: np.ndarray, stops: list[tuple[float, float]]) -> Motion:
    e = np.interp(s_t, s_path, path[:, 0])
    nn = np.interp(s_t, s_path, path[:, 1])
    d = np.diff(path, axis=0)
    seg_heading = np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0
    idx = np.clip(np.searchsorted(s_path, s_t, side="right") - 1, 0, len(d) - 1)
    return Motion(times, e, nn, seg_heading[idx], v_t, s_t, stops)


def timed_motion(path_t: np.ndarray, path: np.ndarray, times: np.ndarray) -> Motion:
    """Follow a recorded track's own timing (GPX with times, NMEA): position by time."""
    t = np.clip(times, path_t[0], path_t[-1])
    e = np.interp(t, path_t, path[:, 0])
    nn = np.interp(t, path_t, path[:, 1])
    s_rec = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    s_t = np.interp(t, path_t, s_rec)
    v = np.gradient(s_t, times) if len(times) > 1 else np.zeros_like(times)
    dense = _resample(path)
    s_dense = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
    d = np.diff(dense, axis=0)
    seg_heading = np.degrees(np.arctan2(d[:, 0], d[:, 1])) % 360.0
    idx = np.clip(np.searchsorted(s_dense, s_t, side="right") - 1, 0, len(d) - 1)
    stops: list[tuple[float, float]] = []
    still = v < 0.05
    i = 0
    while i < len(t):
        if still[i]:
            j = i
            while j + 1 < len(t) and still[j + 1]:
                j += 1
            if times[j] - times[i] >= 1.0:
                stops.append((float(times[i]), float(times[j])))
            i = j + 1
        else:
            i += 1
    return Motion(times, e, nn, seg_heading[idx], v, s_t, stops)


@dataclass(frozen=True, slots=True)
class RouteFile:
    """Points of a route file: lat/lon, and times (s from the first) when all have one."""

    lat: np.ndarray
    lon: np.ndarray
    t: np.ndarray | None


def read_gpx(path: Path) -> RouteFile:
    """Track points (trkpt), else route points (rtept), of a GPX file, in file order."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        raise RouteError(f"cannot read GPX {path}: {e}") from None
    pts = [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "trkpt"] or \
          [el for el in root.iter() if el.tag.rsplit("}", 1)[-1] == "rtept"]
    lat, lon, times = [], [], []
    for el in pts:
        try:
            la, lo = float(el.attrib["lat"]), float(el.attrib["lon"])
        except (KeyError, ValueError):
            continue
        if not (-90 <= la <= 90 and -180 <= lo <= 180):
            continue
        lat.append(la)
        lon.append(lo)
        tt = next((c.text for c in el if c.tag.rsplit("}", 1)[-1] == "time"), None)
        try:
            times.append(parse_iso_utc(tt.strip()) if tt else None)
        except ValueError:
            times.append(None)
    if not lat:
        raise RouteError(f"GPX {path} has no track or route points")
    return RouteFile(np.array(lat), np.array(lon), _relative_times(times))


def _relative_times(times: list[datetime | None]) -> np.ndarray | None:
    if not times or any(t is None for t in times):
        return None
    t0 = times[0]
    assert t0 is not None
    rel = np.array([(t - t0).total_seconds() for t in times if t is not None])
    if len(rel) < 2 or np.any(np.diff(rel) < 0) or rel[-1] <= 0:
        return None
    return rel


def read_route_file(path: Path) -> RouteFile:
    """A GPX or NMEA route file (by extension; NMEA for .nmea/.log/.txt)."""
    if not path.is_file():
        raise RouteError(f"route file {path} does not exist")
    if path.suffix.lower() == ".gpx":
        return read_gpx(path)
    try:
        fixes = [f for f in read_nmea(path) if f.usable]
    except OSError as e:
        raise RouteError(f"cannot read route {path}: {e.strerror}") from None
    if not fixes:
        raise RouteError(f"NMEA route {path} has no usable fixes")
    lat = np.array([f.lat for f in fixes], dtype=np.float64)
    lon = np.array([f.lon for f in fixes], dtype=np.float64)
    return RouteFile(lat, lon, _relative_times([f.utc for f in fixes]))


def route_motion(route: RouteFile, frame: LocalFrame, times: np.ndarray,
                 r: np.random.Generator) -> tuple[np.ndarray, Motion]:
    """The path (east/north, resampled) and the motion along a route read from a file."""
    en = np.array([frame.to_en(a, b) for a, b in zip(route.lat, route.lon, strict=True)])
    path = _resample(en)
    if route.t is not None:
        return path, timed_motion(route.t, en, times)
    return path, drive_along(path, r, times)
