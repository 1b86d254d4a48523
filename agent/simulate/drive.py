"""Recorded sample drives: a video, the NMEA a receiver would have logged, and the truth.

``simulate_drive`` writes, into one folder:

- ``video.mp4``   640x360 frames of the forward camera (``size``: another size, the same field
  of view), the first frame at ``start_utc``;
- ``track.nmea``  1 Hz RMC+GGA with receiver-like noise (2-4 m, correlated over tens of
  seconds), and an optional fix-loss window (RMC 'V', GGA quality 0, empty position);
- ``truth.json``  the labelled objects (complaint classes and distractors) with lat/lon,
  and when the camera saw each;
- ``route.json``  the true, noise-free vehicle state at every frame, for geotagging tests;
- ``frames.jsonl`` per frame, the labelled objects in view and their boxes, for scoring a
  detector on the drive.

Seeds: everything random in a drive comes from ``np.random.SeedSequence([seed, 1])``
(spawn key 1). Training scenes must use another stream (see agent/simulate/scene.py), so
no training image is a frame of a test drive.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from agent.geo import LocalFrame
from agent.nmea import format_gga, format_rmc
from agent.records import Fix, iso_utc, parse_iso_utc
from agent.simulate.camera import Camera
from agent.simulate.look import Look, random_look
from agent.simulate.render import Pose, Visible, render_view
from agent.simulate.route import (
    CITY_ORIGIN,
    Motion,
    RouteError,
    drive_along,
    generate_path,
    read_route_file,
    route_motion,
)
from agent.simulate.world import World, build_world

DRIVE_STREAM = 1
"""Spawn key of drive seeds: SeedSequence([seed, DRIVE_STREAM])."""
WIDTH, HEIGHT = 640, 360
DEFAULT_START = datetime(2025, 5, 14, 1, 30, 0, tzinfo=UTC)
"""10:30 Korean time: a fixed default so that a seed alone makes the same files."""
GPS_SIGMA_M = 2.0
"""Per-axis standard deviation of the receiver's position error (about 2.8 m horizontal)."""
GPS_TAU_S = 30.0
"""Correlation time of that error: receivers wander, they do not jump."""
SEEN_MIN_PX = 12.0
SEEN_MIN_VISIBLE = 0.5
"""truth.json's "seen": at least this visible and this many pixels high and wide (640x360;
scaled with the width at another size, so every size sees the same objects)."""
BOX_MIN_PX = 6.0
BOX_MIN_VISIBLE = 0.4
"""frames.jsonl lists boxes like training labels: 40% visible, 6 px at 640x360 (scaled
likewise)."""


@dataclass(frozen=True, slots=True)
class DriveSummary:
    out_dir: Path
    frames: int
    fps: float
    duration_s: float
    distance_m: float
    objects: int
    """Labelled objects in the world (truth.json)."""
    objects_seen: int
    """Of those, how many the camera saw clearly at least once."""
    stops: int
    video_codec: str

    def line(self) -> str:
        return (f"{self.frames} frames ({self.duration_s:.0f} s at {self.fps:g} fps), "
                f"{self.distance_m / 1000:.2f} km, {self.objects} objects "
                f"({self.objects_seen} seen), {self.stops} stops -> {self.out_dir}")


def _trim(path: np.ndarray, length_m: float) -> np.ndarray:
    s = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(path, axis=0).T))])
    return path[: max(2, int(np.searchsorted(s, length_m)) + 1)]


def _drive_look(r: np.random.Generator) -> Look:
    """A look for a whole drive: any weather, but a camera in working order."""
    look = random_look(r)
    return replace(look, jpeg_quality=0, noise=min(look.noise, 1.5), blur_px=min(look.blur_px, 5),
                   fog=min(look.fog, 0.4), gain=max(look.gain, 0.65))


def _open_writer(path: Path, fps: float, size: tuple[int, int] = (WIDTH, HEIGHT)
                 ) -> tuple[cv2.VideoWriter, str]:
    for codec in ("mp4v", "avc1"):  # avc1 needs an H.264 encoder most OpenCV wheels lack
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
        if w.isOpened():
            return w, codec
        w.release()
    raise OSError(f"cannot open a video writer for {path}")


def _gps_track(motion: Motion, frame: LocalFrame, start: datetime, duration_s: float,
               r: np.random.Generator, fix_loss: tuple[float, float] | None) -> list[str]:
    """What the receiver logs: one RMC+GGA per UTC second, noisy, maybe with a gap."""
    first = math.ceil(start.microsecond / 1e6) - start.microsecond / 1e6
    ts = np.arange(first, duration_s + 1e-9, 1.0)
    k = math.exp(-1.0 / GPS_TAU_S)
    err = r.normal(0, GPS_SIGMA_M, 2)
    lines: list[str] = []
    for t in ts:
        err = err * k + r.normal(0, GPS_SIGMA_M * math.sqrt(1 - k * k), 2)
        e = float(np.interp(t, motion.t, motion.east)) + err[0]
        n = float(np.interp(t, motion.t, motion.north)) + err[1]
        v = max(0.0, float(np.interp(t, motion.t, motion.speed_mps)) + r.normal(0, 0.08))
        i = int(np.clip(np.searchsorted(motion.t, t), 0, len(motion.t) - 1))
        utc = start + timedelta(seconds=float(t))
        lost = fix_loss is not None and fix_loss[0] <= t < fix_loss[1]
        if lost:
            fix = Fix(utc=utc, lat=None, lon=None, mode=1)
        else:
            lat, lon = frame.to_latlon(e, n)
            course = float(motion.heading_deg[i] + r.normal(0, 1.5)) % 360 if v > 0.5 else None
            fix = Fix(utc=utc, lat=lat, lon=lon, mode=3, speed_mps=v if v > 0.2 else 0.0,
                      track_deg=course, alt_m=38.0 + float(r.normal(0, 1.0)))
        lines.append(format_rmc(fix))
        lines.append(format_gga(fix, satellites=int(r.integers(7, 13)),
                                hdop=float(r.uniform(0.7, 1.3))))
    return lines


def _frame_boxes(i: int, t: float, vis: list[Visible],
                 size: tuple[int, int] = (WIDTH, HEIGHT)) -> str:
    """One line of frames.jsonl: the labelled objects in frame i, boxes as fractions of the
    frame (the detector's convention), for scoring a detector on the drive."""
    width, height = size
    min_px = BOX_MIN_PX * width / WIDTH
    objs = []
    for v in vis:
        x1, y1, x2, y2 = v.box
        if v.visible < BOX_MIN_VISIBLE or min(x2 - x1, y2 - y1) < min_px:
            continue
        objs.append({"id": v.thing.id, "class": v.thing.kind,
                     "box": [round(x1 / width, 4), round(y1 / height, 4), round(x2 / width, 4),
                             round(y2 / height, 4)],
                     "visible": round(v.visible, 2), "distance_m": round(v.distance_m, 1)})
    return json.dumps({"frame": i, "t": round(t, 4), "objects": objs})


def _route_json(motion: Motion, frame: LocalFrame, start: datetime) -> dict[str, object]:
    rows = []
    for t, e, n, h, v in zip(motion.t, motion.east, motion.north, motion.heading_deg,
                             motion.speed_mps, strict=True):
        lat, lon = frame.to_latlon(float(e), float(n))
        rows.append({"t": round(float(t), 4), "lat": round(lat, 8), "lon": round(lon, 8),
                     "heading_deg": round(float(h), 2), "speed_mps": round(float(v), 3)})
    return {"start_utc": iso_utc(start), "frames": rows,
            "stops": [[round(a, 2), round(b, 2)] for a, b in motion.stops]}


def simulate_drive(seed: int, out_dir: Path, route: Path | None = None, duration_s: float = 60,
                   fps: float = 10, start_utc: datetime | None = None,
                   fix_loss: tuple[float, float] | None = None,
                   camera: Camera | None = None,
                   size: tuple[int, int] = (WIDTH, HEIGHT)) -> DriveSummary:
    """Drive through a generated world and record it (see the module docstring).

    ``size`` is the video's (width, height); the camera keeps its horizontal field of view,
    and the truth's pixel thresholds scale with the width, so another size records the same
    drive in more or fewer pixels (its noise and rain differ: they are drawn per pixel).

    Raises RouteError for a route file that cannot be used, ValueError for bad arguments,
    OSError when the output cannot be written.
    """
    if duration_s <= 0 or fps <= 0:
        raise ValueError("duration and fps must be positive")
    width, height = size
    if width < 32 or height < 32 or width % 2 or height % 2:
        raise ValueError("size must be even and at least 32x32 pixels")
    if fix_loss is not None and not fix_loss[0] < fix_loss[1]:
        raise ValueError("fix loss window must be START < END")
    start = (start_utc or DEFAULT_START).astimezone(UTC)
    streams = np.random.SeedSequence([seed, DRIVE_STREAM]).spawn(5)
    r_route, r_world, r_look, r_gps, r_frames = (np.random.default_rng(s) for s in streams)
    n_frames = max(1, round(duration_s * fps))
    times = np.arange(n_frames) / fps
    if route is not None:
        rf = read_route_file(Path(route))
        frame = LocalFrame(float(rf.lat[0]), float(rf.lon[0]))
        path, motion = route_motion(rf, frame, times, r_route)
    else:
        frame = LocalFrame(*CITY_ORIGIN)
        path = generate_path(r_route, max(300.0, duration_s * 60 / 3.6 * 1.2))
        first_stop = float(r_route.uniform(0.25, 0.5)) * duration_s * 9.0
        motion = drive_along(path, r_route, times, first_stop_s=max(40.0, first_stop))
    # the road goes on past where the recording ends; labelled objects stand only along the
    # stretch driven, so truth.json is exactly what the vehicle passed or approached
    world = build_world(_trim(path, float(motion.s[-1]) + 150.0), r_world,
                        objects_until_m=float(motion.s[-1]))
    look = _drive_look(r_look)
    cam = (camera or Camera()).scaled(width, height)
    seen_min_px = SEEN_MIN_PX * width / WIDTH

    out_dir.mkdir(parents=True, exist_ok=True)
    writer, codec = _open_writer(out_dir / "video.mp4", fps, (width, height))
    seen: dict[int, dict[str, float]] = {}
    boxes: list[str] = []
    try:
        for i in range(n_frames):
            pose = Pose(float(motion.east[i]), float(motion.north[i]),
                        float(motion.heading_deg[i]))
            speed_frac = min(1.0, float(motion.speed_mps[i]) / 16.7)
            img, vis = render_view(cam, pose, [world.road], world.walls, world.things, look,
                                   r_frames, speed_frac)
            writer.write(img)
            boxes.append(_frame_boxes(i, float(times[i]), vis, (width, height)))
            for v in vis:
                b = v.box
                if v.visible < SEEN_MIN_VISIBLE or min(b[2] - b[0], b[3] - b[1]) < seen_min_px:
                    continue
                rec = seen.setdefault(v.thing.id, {"first_t": float(times[i]), "frames": 0,
                                                   "max_height_px": 0.0})
                rec["last_t"] = float(times[i])
                rec["frames"] += 1
                rec["max_height_px"] = max(rec["max_height_px"], b[3] - b[1])
    finally:
        writer.release()

    nmea = _gps_track(motion, frame, start, duration_s, r_gps, fix_loss)
    (out_dir / "track.nmea").write_text("\r\n".join(nmea) + "\r\n", newline="")
    (out_dir / "frames.jsonl").write_text("\n".join(boxes) + "\n")
    (out_dir / "route.json").write_text(json.dumps(_route_json(motion, frame, start)) + "\n")
    truth = _truth(seed, start, fps, duration_s, n_frames, world, frame, seen, route)
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    distance = float(motion.s[-1] - motion.s[0])
    return DriveSummary(out_dir, n_frames, fps, n_frames / fps, distance,
                        len(world.labelled), len(seen), len(motion.stops), codec)


def _truth(seed: int, start: datetime, fps: float, duration_s: float, frames: int,
           world: World, frame: LocalFrame, seen: dict[int, dict[str, float]],
           route: Path | None) -> dict[str, object]:
    objects = []
    for t in world.labelled:
        lat, lon = frame.to_latlon(t.east, t.north)
        obj: dict[str, object] = {"id": t.id, "class": t.kind, "lat": round(lat, 8),
                                  "lon": round(lon, 8), "width_m": round(t.width_m, 2),
                                  "height_m": round(t.height_m, 2)}
        if t.id in seen:
            s = seen[t.id]
            obj["seen"] = {"first_t": round(s["first_t"], 2), "last_t": round(s["last_t"], 2),
                           "frames": int(s["frames"]),
                           "max_height_px": round(s["max_height_px"], 1)}
        objects.append(obj)
    return {"seed": seed, "seed_stream": f"SeedSequence([seed, {DRIVE_STREAM}])",
            "start_utc": iso_utc(start), "fps": fps, "duration_s": duration_s,
            "frames": frames, "route": str(route) if route else "generated",
            "objects": objects}


# --- command line ---------------------------------------------------------------------

def _fix_loss_arg(text: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected START:END seconds, e.g. 20:35") from None
    if not 0 <= a < b:
        raise argparse.ArgumentTypeError("expected 0 <= START < END")
    return a, b


def _start_arg(text: str) -> datetime:
    try:
        ts = parse_iso_utc(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected an ISO time, e.g. 2025-05-14T01:30:00Z") \
            from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (``--size``), e.g. 960x540."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected WIDTHxHEIGHT, e.g. 960x540") from None
    return w, h


def cmd_simulate_drive(args: argparse.Namespace) -> int:
    d = Camera()
    camera = Camera(hfov_deg=args.hfov or d.hfov_deg, height_m=args.mount_height or d.height_m,
                    tilt_deg=d.tilt_deg if args.tilt is None else args.tilt,
                    yaw_deg=args.yaw or 0.0, roll_deg=args.roll or 0.0)
    try:
        summary = simulate_drive(args.seed, Path(args.out), Path(args.route) if args.route
                                 else None, args.duration, args.fps, args.start, args.fix_loss,
                                 camera, args.size)
    except (RouteError, ValueError) as e:
        print(f"patrol-agent: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"patrol-agent: cannot write the drive: {e}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``simulate-drive`` to the ``patrol-agent`` command."""
    p = subparsers.add_parser("simulate-drive",
                              help="record a simulated drive: video, NMEA track, ground truth")
    p.add_argument("--seed", type=int, required=True, help="the world and drive seed")
    p.add_argument("--out", required=True, help="folder to write video.mp4, track.nmea, ...")
    p.add_argument("--route", help="GPX or NMEA file to drive along (default: generated)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--fps", type=float, default=10.0, help="video frame rate (default 10)")
    p.add_argument("--size", type=parse_size, default=(WIDTH, HEIGHT), metavar="WxH",
                   help=f"video size, the same field of view (default {WIDTH}x{HEIGHT})")
    p.add_argument("--start", type=_start_arg, help="UTC time of the first frame (ISO 8601)")
    p.add_argument("--fix-loss", type=_fix_loss_arg, metavar="START:END",
                   help="seconds from the start without a GPS fix (a tunnel)")
    cam = p.add_argument_group("the camera's mounting (default: as camera.* defaults)")
    cam.add_argument("--hfov", type=float, help="horizontal field of view, degrees")
    cam.add_argument("--mount-height", type=float, help="height above the road, metres")
    cam.add_argument("--tilt", type=float, help="down tilt, degrees")
    cam.add_argument("--yaw", type=float, help="turned right of the vehicle's axis, degrees")
    cam.add_argument("--roll", type=float, help="turned counter-clockwise about its axis "
                     "(seen from behind), degrees")
    p.set_defaults(func=cmd_simulate_drive)


def main(argv: list[str] | None = None) -> int:
    """``python -m agent.simulate.drive --seed N --out DIR ...``: the same as
    ``patrol-agent simulate-drive``, for machines where the package is not installed."""
    p = argparse.ArgumentParser(prog="python -m agent.simulate.drive")
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(["simulate-drive", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
