"""Tracks become one finding per object, placed where the object is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent.config import CameraConfig, EventsConfig
from agent.events import EventBuilder, ground_point
from agent.geo import LocalFrame, destination, haversine_m
from agent.gps import FixHistory
from agent.privacy import Redactor
from agent.records import Detection, Fix, Frame
from agent.simulate.camera import Camera
from agent.tracker import Tracker

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
ORIGIN = (37.5665, 126.9780)
CAM = Camera(640, 360)
CAM_CFG = CameraConfig()  # the same mounting as the simulator's camera


def test_camera_defaults_match_the_simulated_camera() -> None:
    assert (CAM_CFG.hfov_deg, CAM_CFG.mount_height_m, CAM_CFG.tilt_deg) == (
        CAM.hfov_deg, CAM.height_m, CAM.tilt_deg)


@pytest.mark.parametrize("right,ahead", [(4.0, 10.0), (-6.0, 25.0), (7.5, 40.0), (0.0, 6.0)])
def test_ground_point_inverts_the_projection(right: float, ahead: float) -> None:
    (u, v), = CAM.project(np.array([[right, ahead, 0.0]]))[0]
    bbox = (u / 640 - 0.02, v / 360 - 0.1, u / 640 + 0.02, v / 360)
    got = ground_point(bbox, 360 / 640, CAM_CFG)
    assert got is not None
    assert got[0] == pytest.approx(right, abs=0.05 * ahead)
    assert got[1] == pytest.approx(ahead, rel=0.03)


def test_above_the_horizon_is_not_on_the_ground() -> None:
    assert ground_point((0.45, 0.0, 0.55, 0.1), 360 / 640, CAM_CFG) is None


def drive_past(obj: tuple[float, float], seconds: float = 6.0, fps: float = 10.0,
               t0: datetime = T0, speed: float = 12.0) -> tuple[FixHistory, list[Frame],
                                                                 list[list[Detection]]]:
    """A vehicle driving north past an object; the object's box in each frame."""
    h = FixHistory(max_age_s=1e9)
    for s in range(int(seconds) + 2):
        lat, lon = destination(*ORIGIN, 0.0, speed * s)
        h.add(Fix(t0 + timedelta(seconds=s), lat, lon, 3, speed, 0.0, 2.0))
    local = LocalFrame(*ORIGIN)
    ox, oy = local.to_en(*obj)
    frames, dets = [], []
    rng = np.random.default_rng(0)
    for i in range(int(seconds * fps)):
        t = i / fps
        img = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
        frames.append(Frame(img, t0 + timedelta(seconds=t), 1000 + t, i))
        ahead = oy - speed * t
        if ahead < 3.0:
            dets.append([])
            continue
        pts = np.array([[ox - 0.5, ahead, 0.0], [ox + 0.5, ahead, 0.0], [ox - 0.5, ahead, 1.2],
                        [ox + 0.5, ahead, 1.2]])
        px, _ = CAM.project(pts)
        x1, y1 = px.min(axis=0) / (640, 360)
        x2, y2 = px.max(axis=0) / (640, 360)
        if x2 > 1.0 or x1 < 0:
            dets.append([])
            continue
        dets.append([Detection("garbage", 0, 0.8, (x1, y1, x2, y2))])
    return h, frames, dets


def run(builder: EventBuilder, frames: list[Frame], dets: list[list[Detection]]) -> list:
    tr = Tracker()
    events = []
    for f, d in zip(frames, dets, strict=True):
        updated, ended = tr.update(f, d)
        builder.observe(f, updated)
        events += builder.finish(ended)
    return events + builder.finish(tr.flush())


def test_one_event_at_the_objects_place_not_the_vehicles() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 50.0), 90.0, 6.0)  # 50 m on, 6 m right
    hist, frames, dets = drive_past(obj)
    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, Redactor(), "m", 3)
    events = run(b, frames, dets)
    assert len(events) == 1
    ev = events[0]
    assert ev.label == "garbage" and ev.position is not None
    assert ev.position.source == "object"
    assert haversine_m(ev.position.lat, ev.position.lon, *obj) < 1.5
    assert ev.attributes["redaction"]["ran"] is True
    assert ev.image_jpeg[:2] == b"\xff\xd8"
    # the picture is the frame of the best shot, and the event carries its time
    assert T0 <= ev.captured_utc <= T0 + timedelta(seconds=6)


def test_second_lap_is_not_a_second_event() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    hist, frames, dets = drive_past(obj)
    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, Redactor())
    assert len(run(b, frames, dets)) == 1
    later = T0 + timedelta(minutes=20)
    hist2, frames2, dets2 = drive_past(obj, t0=later)
    b.positions = hist2.position_at
    assert run(b, frames2, dets2) == [] and b.suppressed == 1


def test_without_gps_the_event_has_no_invented_position() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    _, frames, dets = drive_past(obj)
    b = EventBuilder(EventsConfig(), CAM_CFG, lambda t: None, Redactor())
    (ev,) = run(b, frames, dets)
    assert ev.position is None and ev.attributes["position_method"] == "no-fix"


def test_flickers_are_not_findings() -> None:
    b = EventBuilder(EventsConfig(min_frames=3, redact=False), CAM_CFG, lambda t: None, None)
    tr = Tracker()
    img = np.zeros((360, 640, 3), np.uint8)
    f0 = Frame(img, T0, 0.0, 0)
    updated, _ = tr.update(f0, [Detection("banner", 1, 0.9, (0.6, 0.4, 0.7, 0.5))])
    b.observe(f0, updated)
    assert b.finish(tr.flush()) == [] and b.dropped == 1
