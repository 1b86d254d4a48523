"""The simulated world: training scenes, recorded drives, routes, and the geodesy under them.

Real files throughout: drives are written to temp folders, videos read back with OpenCV,
tracks parsed with agent.nmea.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agent.geo import LocalFrame, destination, haversine_m, initial_bearing_deg
from agent.nmea import read_nmea
from agent.simulate import CLASSES, CLUTTER_KINDS, render_training_scene
from agent.simulate.drive import add_parser, simulate_drive
from agent.simulate.road import distance_to_polyline
from agent.simulate.route import RouteError, drive_along, generate_path, read_gpx
from agent.simulate.scene import _local_world
from agent.simulate.world import COMPLAINT, DISTRACTOR, build_world
from tests.world import video_frames

START = datetime(2025, 6, 2, 3, 0, 0, tzinfo=UTC)


# --- geo ------------------------------------------------------------------------------

@pytest.mark.parametrize("bearing", [0.0, 45.0, 90.0, 181.0, 300.0])
@pytest.mark.parametrize("dist", [1.0, 37.0, 1500.0])
def test_destination_round_trip(bearing: float, dist: float) -> None:
    lat, lon = destination(37.6584, 126.832, bearing, dist)
    assert haversine_m(37.6584, 126.832, lat, lon) == pytest.approx(dist, rel=1e-9, abs=1e-6)
    back = initial_bearing_deg(37.6584, 126.832, lat, lon)
    assert abs((back - bearing + 180.0) % 360.0 - 180.0) < 1e-6


def test_local_frame_round_trip_and_scale() -> None:
    f = LocalFrame(37.6584, 126.832)
    lat, lon = f.to_latlon(300.0, -400.0)
    assert f.to_en(lat, lon) == pytest.approx((300.0, -400.0))
    assert haversine_m(37.6584, 126.832, lat, lon) == pytest.approx(500.0, rel=1e-3)


# --- training scenes ------------------------------------------------------------------

def test_training_scene_is_deterministic_per_seed() -> None:
    a_img, a_lab = render_training_scene(np.random.default_rng(11))
    b_img, b_lab = render_training_scene(np.random.default_rng(11))
    assert np.array_equal(a_img, b_img) and a_lab == b_lab
    c_img, _ = render_training_scene(np.random.default_rng(12))
    assert not np.array_equal(a_img, c_img)


def test_training_scenes_boxes_and_letterbox() -> None:
    rng = np.random.default_rng(np.random.SeedSequence([5, 0]))
    counts, letterboxed, sizes = [], 0, []
    for _ in range(60):
        img, labels = render_training_scene(rng)
        assert img.shape == (320, 320, 3) and img.dtype == np.uint8
        if (img[:20] == 114).all() and (img[-20:] == 114).all():
            letterboxed += 1
            top = int(np.argmax((img != 114).any(axis=(1, 2))))
            assert 60 <= top <= 80  # 16:9 content is 180 rows of 320
        counts.append(len(labels))
        for name, x1, y1, x2, y2 in labels:
            assert name in CLASSES
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
            assert x2 - x1 >= 6 and y2 - y1 >= 6
            sizes.append(max(x2 - x1, y2 - y1))
    assert 15 <= letterboxed <= 50
    assert 0 in counts and max(counts) >= 3
    assert 0.8 <= float(np.mean(counts)) <= 4
    assert 10 <= float(np.median(sizes)) <= 150


def test_training_scene_other_size() -> None:
    img, labels = render_training_scene(np.random.default_rng(3), width=256, height=192)
    assert img.shape == (192, 256, 3)
    for _, x1, y1, x2, y2 in labels:
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 192


def test_training_scene_clutter_boxes_for_hard_negatives() -> None:
    """Asking for clutter adds the boxes of trees, cars, people, bushes to the same picture
    and leaves the labels of the classes alone (training centres negative crops on them)."""
    seen: set[str] = set()
    for seed in range(40):
        img, labels = render_training_scene(np.random.default_rng(seed))
        c_img, c_labels = render_training_scene(np.random.default_rng(seed), clutter=True)
        assert np.array_equal(img, c_img)
        assert [la for la in c_labels if la[0] in CLASSES] == labels
        for name, x1, y1, x2, y2 in c_labels:
            assert name in CLASSES or name in CLUTTER_KINDS
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 320
            seen.add(name)
    assert {"tree", "car", "bush", "pedestrian"} <= seen, seen


def test_training_scenes_turn_street_corners_with_nothing_standing_on_the_road() -> None:
    """About a third of training worlds have a 90-degree corner ahead, as the drives' routes
    do (the detector must learn that kerbs and lane lines sweeping across the view are
    road). Past a corner, the inside offsets cross the road: no object, clutter (parked cars
    apart) or building front may end up standing on it."""
    corners = 0
    n = 300
    for k in range(n):
        road, walls, things = _local_world(np.random.default_rng(np.random.SeedSequence([k, 2])))
        seg = np.diff(road.centre, axis=0)
        turn = np.degrees(np.arctan2(seg[-1, 0], seg[-1, 1]) - np.arctan2(seg[0, 0], seg[0, 1]))
        corners += abs(turn) > 80
        standing = np.array([[t.east, t.north] for t in things if t.kind != "car"])
        if len(standing):
            assert distance_to_polyline(standing, road.centre).min() >= road.half_width, k
        for w in walls:
            front = np.linspace(w.a, w.b, 6)
            assert distance_to_polyline(front, road.centre).min() >= road.half_width, k
    assert 0.2 <= corners / n <= 0.4


# --- world and route ------------------------------------------------------------------

def test_world_objects_beside_the_road() -> None:
    r = np.random.default_rng(7)
    path = generate_path(r, 3000)
    world = build_world(path, r)
    objs = world.labelled
    assert len(objs) >= 25  # about one per 60-100 m
    pts = np.array([[t.east, t.north] for t in objs])
    d = distance_to_polyline(pts, path)
    assert d.min() >= 3.0 - 1e-6 and d.max() <= 8.0 + 1e-6
    gaps = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    assert gaps[np.triu_indices(len(pts), 1)].min() >= 25.0
    share = np.mean([t.kind in COMPLAINT for t in objs])
    assert 0.5 <= share <= 0.9
    assert {t.kind for t in objs} <= set(COMPLAINT + DISTRACTOR)


def test_generated_drive_stops_at_a_red_light() -> None:
    r = np.random.default_rng(4)
    path = generate_path(r, 1200)
    times = np.arange(0, 60, 0.1)
    m = drive_along(path, r, times, first_stop_s=150.0)
    assert m.stops and all(3.0 <= b - a <= 11.0 for a, b in m.stops)
    assert m.speed_mps.max() <= 60 / 3.6 + 0.01
    assert np.all(np.diff(m.s) >= -1e-9)


# --- drives ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    a = tmp_path_factory.mktemp("drive_a")
    b = tmp_path_factory.mktemp("drive_b")
    simulate_drive(21, a, duration_s=8, fps=5, start_utc=START, fix_loss=(5, 7))
    simulate_drive(21, b, duration_s=8, fps=5, start_utc=START, fix_loss=(5, 7))
    return a, b


def test_drive_files(drives: tuple[Path, Path]) -> None:
    d = drives[0]
    for name in ("video.mp4", "track.nmea", "truth.json", "route.json", "frames.jsonl"):
        assert (d / name).stat().st_size > 0
    frames = video_frames(d / "video.mp4")
    assert len(frames) == 40
    assert frames[0].shape == (360, 640, 3)
    truth = json.loads((d / "truth.json").read_text())
    assert truth["seed"] == 21 and truth["fps"] == 5
    assert truth["start_utc"] == "2025-06-02T03:00:00.000Z"
    route = json.loads((d / "route.json").read_text())
    assert len(route["frames"]) == 40 and route["frames"][0]["t"] == 0
    rows = [json.loads(x) for x in (d / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(40))
    ids = {o["id"] for o in truth["objects"]}
    for r in rows:
        for o in r["objects"]:
            assert o["id"] in ids and 0 <= o["box"][0] < o["box"][2] <= 1


def test_drive_track_follows_the_route(drives: tuple[Path, Path]) -> None:
    d = drives[0]
    fixes = read_nmea(d / "track.nmea")
    route = json.loads((d / "route.json").read_text())["frames"]
    assert len(fixes) == 9  # 0..8 s at 1 Hz
    assert fixes[0].utc == START
    by_t = {round(f["t"], 3): f for f in route}
    lost = []
    for fx in fixes:
        t = (fx.utc - START).total_seconds()
        if not fx.usable:
            lost.append(t)
            continue
        if t in by_t:
            ref = by_t[t]
            assert fx.lat is not None and fx.lon is not None
            assert haversine_m(fx.lat, fx.lon, ref["lat"], ref["lon"]) < 10.0
    assert lost == [5.0, 6.0]


def test_drive_truth_objects_beside_the_route(drives: tuple[Path, Path]) -> None:
    d = drives[0]
    truth = json.loads((d / "truth.json").read_text())
    assert truth["objects"]
    route = json.loads((d / "route.json").read_text())["frames"]
    frame = LocalFrame(route[0]["lat"], route[0]["lon"])
    track = np.array([frame.to_en(f["lat"], f["lon"]) for f in route])
    for obj in truth["objects"]:
        assert obj["class"] in CLASSES
        p = np.array([frame.to_en(obj["lat"], obj["lon"])])
        assert 3.0 - 0.05 <= distance_to_polyline(p, track)[0] <= 8.0 + 0.05


def test_same_seed_same_drive(drives: tuple[Path, Path]) -> None:
    a, b = drives
    assert (a / "truth.json").read_text() == (b / "truth.json").read_text()
    assert (a / "track.nmea").read_text() == (b / "track.nmea").read_text()
    assert np.array_equal(video_frames(a / "video.mp4")[0], video_frames(b / "video.mp4")[0])


def _gpx(path: Path, points: list[tuple[float, float]], times: bool = False) -> Path:
    pts = []
    for i, (la, lo) in enumerate(points):
        t = f"<time>2025-06-02T03:00:{i * 10:02d}Z</time>" if times else ""
        pts.append(f'<trkpt lat="{la:.7f}" lon="{lo:.7f}">{t}</trkpt>')
    path.write_text('<?xml version="1.0"?><gpx version="1.1" '
                    'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>'
                    + "".join(pts) + "</trkseg></trk></gpx>")
    return path


def test_drive_follows_a_gpx_route(tmp_path: Path) -> None:
    corner = destination(37.55, 126.99, 0.0, 150.0)
    end = destination(*corner, 90.0, 150.0)
    gpx = _gpx(tmp_path / "r.gpx", [(37.55, 126.99), corner, end])
    out = tmp_path / "drive"
    s = simulate_drive(5, out, route=gpx, duration_s=6, fps=5)
    assert s.frames == 30
    route = json.loads((out / "route.json").read_text())["frames"]
    frame = LocalFrame(37.55, 126.99)
    line = np.array([frame.to_en(*p) for p in [(37.55, 126.99), corner, end]])
    pos = np.array([frame.to_en(f["lat"], f["lon"]) for f in route])
    assert distance_to_polyline(pos, line).max() < 0.5
    assert route[0]["heading_deg"] == pytest.approx(0.0, abs=1.0)


def test_drive_keeps_a_timed_gpx_route_timing(tmp_path: Path) -> None:
    north = [destination(37.55, 126.99, 0.0, 100.0 * i) for i in range(3)]  # 10 m/s
    gpx = _gpx(tmp_path / "t.gpx", north, times=True)
    simulate_drive(5, tmp_path / "d", route=gpx, duration_s=5, fps=2)
    route = json.loads((tmp_path / "d" / "route.json").read_text())["frames"]
    for f in route:
        assert haversine_m(37.55, 126.99, f["lat"], f["lon"]) == pytest.approx(10 * f["t"],
                                                                              abs=0.05)


def test_gpx_without_points_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RouteError):
        read_gpx(_gpx(tmp_path / "empty.gpx", []))


def _cli(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="patrol-agent")
    add_parser(p.add_subparsers(dest="command"))
    args = p.parse_args(argv)
    return int(args.func(args))


def test_cli_bad_route_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = _gpx(tmp_path / "empty.gpx", [])
    assert _cli(["simulate-drive", "--seed", "1", "--out", str(tmp_path / "o"),
                 "--route", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no track or route points" in err and "Traceback" not in err
    assert _cli(["simulate-drive", "--seed", "1", "--out", str(tmp_path / "o"),
                 "--route", str(tmp_path / "missing.gpx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.gpx"
    bad.write_text("<gpx><trk>")
    assert _cli(["simulate-drive", "--seed", "1", "--out", str(tmp_path / "o"),
                 "--route", str(bad)]) == 2


def test_cli_writes_a_drive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli(["simulate-drive", "--seed", "2", "--out", str(tmp_path / "o"),
                 "--duration", "2", "--fps", "5", "--start", "2025-06-02T03:00:00Z",
                 "--fix-loss", "0:1"]) == 0
    line = capsys.readouterr().out
    assert "10 frames" in line and "km" in line and "objects" in line
    fixes = read_nmea(tmp_path / "o" / "track.nmea")
    assert not fixes[0].usable and fixes[-1].usable


def test_drive_follows_an_nmea_route(tmp_path: Path) -> None:
    from datetime import timedelta

    from agent.nmea import format_gga, format_rmc
    from agent.records import Fix

    lines = ["# a receiver log driving east at 8 m/s"]
    for i in range(12):
        lat, lon = destination(37.65, 126.83, 90.0, 8.0 * i)
        fx = Fix(utc=START + timedelta(seconds=i), lat=lat, lon=lon, mode=3, speed_mps=8.0,
                 track_deg=90.0)
        lines += [format_rmc(fx), format_gga(fx)]
    log = tmp_path / "route.nmea"
    log.write_text("\r\n".join(lines) + "\r\n")
    simulate_drive(8, tmp_path / "d", route=log, duration_s=4, fps=5)
    route = json.loads((tmp_path / "d" / "route.json").read_text())["frames"]
    for f in route:
        assert haversine_m(37.65, 126.83, f["lat"], f["lon"]) == pytest.approx(8 * f["t"],
                                                                              abs=0.05)
        assert f["heading_deg"] == pytest.approx(90.0, abs=0.5)

