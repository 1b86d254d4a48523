"""Tracks become one finding per object, placed where the object is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest

from agent.config import CameraConfig, EventsConfig
from agent.detector import zoom_in
from agent.events import BestShots, EventBuilder, crop_box, ground_point
from agent.geo import LocalFrame, destination, haversine_m
from agent.gps import FixHistory
from agent.privacy import Redaction, Redactor
from agent.records import Detection, Fix, Frame, Zoom
from agent.simulate.camera import Camera
from agent.tracker import Tracker

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
ORIGIN = (37.6584, 126.8320)
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
        dets.append([Detection("garbage", 0, 0.9, (x1, y1, x2, y2))])
    return h, frames, dets


def zoom(image: np.ndarray, bbox: tuple[float, float, float, float]) -> Zoom:
    """The second look's square, as the default model's detector cuts it."""
    return zoom_in(image, bbox, (320, 320))


def run(builder: EventBuilder, frames: list[Frame], dets: list[list[Detection]]) -> list:
    """Frames through the tracker and the best-shot keeper (as perception runs them) and
    the ended tracks through the builder (as the findings stage does)."""
    tr = Tracker()
    shots = BestShots.for_config(builder.cfg, zoom)
    events = []
    for f, d in zip(frames, dets, strict=True):
        updated, ended = tr.update(f, d)
        shots.observe(f, updated)
        events += builder.finish(shots.end(ended))
    return events + builder.finish(shots.end(tr.flush()))


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


def test_second_lap_is_not_a_second_event(caplog: pytest.LogCaptureFixture) -> None:
    """...and a debug line names the repeat's frames, to find it in the recording."""
    import logging

    caplog.set_level(logging.DEBUG, logger="events")
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    hist, frames, dets = drive_past(obj)
    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, Redactor())
    assert len(run(b, frames, dets)) == 1
    later = T0 + timedelta(minutes=20)
    hist2, frames2, dets2 = drive_past(obj, t0=later)
    b.positions = hist2.position_at
    assert run(b, frames2, dets2) == [] and b.stats.repeats == 1
    seen = [i for i, d in enumerate(dets2) if d]
    assert (f"(frames {seen[0]}-{seen[-1]}, {len(seen)} seen): the same garbage as an earlier "
            "finding") in caplog.text


def test_an_object_only_seen_from_afar_is_not_a_finding() -> None:
    """Seen for 2 s from 70-50 m away (the vehicle turned off before reaching it): every
    view is beyond max_range_m, where a pixel of box bottom is metres, so no finding."""
    obj = destination(*destination(*ORIGIN, 0.0, 70.0), 90.0, 5.0)
    hist, frames, dets = drive_past(obj, seconds=2.0, speed=10.0)
    b = EventBuilder(EventsConfig(max_range_m=35.0), CAM_CFG, hist.position_at, Redactor())
    assert run(b, frames, dets) == [] and b.stats.too_far == 1
    # the same views count once the range allows them
    b = EventBuilder(EventsConfig(max_range_m=80.0), CAM_CFG, hist.position_at, Redactor())
    (ev,) = run(b, frames, dets)
    assert ev.position is not None and ev.position.source == "object"


def test_a_place_that_keeps_its_distance_ahead_is_not_a_finding() -> None:
    """A far object whose few-pixel box the detector draws too tall: its box stays put
    while the vehicle drives 36 m, so it reads as 20 m ahead in every frame. A real object
    at that place would come nearer; this one is not placed and not a finding."""
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    hist, frames, _ = drive_past(obj, seconds=3.0)
    pts = np.array([[4.5, 20.0, 0.0], [5.5, 20.0, 0.0], [4.5, 20.0, 1.2], [5.5, 20.0, 1.2]])
    px, _ = CAM.project(pts)
    box = (*(px.min(axis=0) / (640, 360)), *(px.max(axis=0) / (640, 360)))
    same = [[Detection("banner", 1, 0.95, box)] for _ in frames]
    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, Redactor())
    assert run(b, frames, same) == [] and b.stats.moves_with_vehicle == 1
    # while the vehicle creeps in a queue (under 5 m) the same views do place it
    still = FixHistory(max_age_s=1e9)
    for s in range(5):
        still.add(Fix(T0 + timedelta(seconds=s), *destination(*ORIGIN, 0.0, 1.5 * s), 3, 1.5,
                      0.0, 2.0))
    b = EventBuilder(EventsConfig(), CAM_CFG, still.position_at, Redactor())
    (ev,) = run(b, frames, same)
    assert ev.position is not None and ev.position.source == "object"


def test_a_track_not_found_again_on_a_closer_look_is_not_a_finding(
        caplog: pytest.LogCaptureFixture) -> None:
    """The second look is asked about the track's best views, and a track it does not
    confirm is dropped without a trace but a debug line naming its frames (to find it in
    the recording): the same object confirmed on a later pass is still a finding (not
    suppressed as seen before)."""
    import logging

    from agent.events import shot_quality

    caplog.set_level(logging.DEBUG, logger="events")

    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    hist, frames, dets = drive_past(obj)
    cfg = EventsConfig(redact=False)
    asked: list[tuple[float, ...]] = []

    def doubtful(z: Zoom, label: str) -> float:
        assert label == "garbage" and z.image.shape[0] == z.image.shape[1] <= 360
        asked.append(z.seen)
        return cfg.confirm_score - 0.1

    b = EventBuilder(cfg, CAM_CFG, hist.position_at, None, second_look=doubtful)
    assert run(b, frames, dets) == [] and b.stats.unconfirmed == 1
    seen = [i for i, d in enumerate(dets) if d]
    assert (f"(frames {seen[0]}-{seen[-1]}, {len(seen)} seen): garbage not found again on a "
            "closer look") in caplog.text
    quality = sorted(((shot_quality(f.image, d[0]), d[0].bbox)
                      for f, d in zip(frames, dets, strict=True) if d), reverse=True)
    best_views = [zoom(np.zeros((360, 640, 3), np.uint8), bb).seen
                  for _, bb in quality[:cfg.confirm_views]]
    assert sorted(asked) == sorted(best_views)

    hist2, frames2, dets2 = drive_past(obj, t0=T0 + timedelta(minutes=20))
    b.positions = hist2.position_at
    b.second_look = lambda z, label: 0.95
    events = run(b, frames2, dets2)
    assert len(events) == 1 and b.stats.repeats == 0
    assert events[0].attributes["second_look"] == 0.95


def test_with_confirm_score_0_there_is_no_second_look() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    hist, frames, dets = drive_past(obj)

    def never(z: Zoom, label: str) -> float:
        raise AssertionError("second look asked although turned off")

    b = EventBuilder(EventsConfig(redact=False, confirm_score=0), CAM_CFG, hist.position_at,
                     None, second_look=never)
    events = run(b, frames, dets)
    assert len(events) == 1 and events[0].attributes["second_look"] is None


def test_a_live_track_holds_one_whole_frame_and_zooms_of_its_other_views() -> None:
    """A frame is 2.7 MB at 1280x720: each live track keeps its best view's whole (the
    picture's), and of its other best views only the square the second look sees, copied
    out of the frame so that the frame can go."""
    obj = destination(*destination(*ORIGIN, 0.0, 40.0), 90.0, 5.0)
    _, frames, dets = drive_past(obj)
    tr, shots = Tracker(), BestShots.for_config(EventsConfig(confirm_views=3), zoom)
    done = []
    for f, d in zip(frames, dets, strict=True):
        updated, ended = tr.update(f, d)
        shots.observe(f, updated)
        done += shots.end(ended)
        held = shots._shots[updated[0].id] if updated else []
        if len(held) > 1:
            assert held[0].frame is not None and all(s.frame is None for s in held[1:])
            for s in held[1:]:
                assert s.zoom is not None and s.zoom.image.base is None  # its own copy
                assert s.zoom.image.nbytes < f.image.nbytes / 2
    (ended,) = done + shots.end(tr.flush())
    assert [s.quality for s in ended.shots] == sorted((s.quality for s in ended.shots),
                                                     reverse=True)
    assert len(ended.shots) == 3 and ended.shots[0].frame is not None
    # the best view's square is a view into its frame, not a copy
    assert ended.shots[0].zoom is not None
    assert np.shares_memory(ended.shots[0].zoom.image, ended.shots[0].frame.image)


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
    shots = BestShots.for_config(b.cfg)
    shots.observe(f0, updated)
    assert b.finish(shots.end(tr.flush())) == [] and b.stats.too_short == 1



@pytest.mark.parametrize("bbox,size,expected", [
    # 96 px wide: 24 px of margin each side; 36 px high + 2 x 9 px = 54: grown to 64
    ((0.4, 0.4, 0.55, 0.5), (640, 360), (232, 130, 376, 194)),
    # a far, 6 x 7 px object: 64 px each way around its centre
    ((0.5, 0.5, 0.51, 0.52), (640, 360), (291, 151, 355, 215)),
    # a small object in the corner: 64 px slid inside the image, not cut by its edge
    ((0.0, 0.97, 0.01, 1.0), (640, 360), (0, 296, 64, 360)),
    # a big object at the edge: its margin is clipped to the image
    ((0.8, 0.2, 1.0, 0.7), (640, 360), (480, 27, 640, 297)),
    # an image smaller than the minimum: all of it
    ((0.4, 0.4, 0.5, 0.5), (48, 40), (0, 0, 48, 40)),
])
def test_crop_box(bbox: tuple[float, float, float, float], size: tuple[int, int],
                  expected: tuple[int, int, int, int]) -> None:
    assert crop_box(bbox, *size) == expected



def smooth_frames(frames: list[Frame]) -> list[Frame]:
    """The same frames with smooth random pictures: blobs that a JPEG keeps (pixel noise
    it does not), so a crop can be compared with the region it was cut from."""
    rng = np.random.default_rng(1)
    out = []
    for f in frames:
        coarse = rng.integers(0, 255, (360 // 20 + 1, 640 // 20 + 1, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (640, 360), interpolation=cv2.INTER_CUBIC)
        out.append(Frame(img, f.captured_utc, f.captured_mono, f.index))
    return out


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img.astype(float)


MAGENTA = (255, 0, 255)


def test_the_crop_is_the_objects_region_of_the_redacted_picture() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 50.0), 90.0, 6.0)
    hist, frames, dets = drive_past(obj)
    frames = smooth_frames(frames)
    boxes = {id(f.image): d[0].bbox for f, d in zip(frames, dets, strict=True) if d}

    class CentreRedactor(Redactor):
        """Paints the middle of the object's box magenta: a mark no frame has, so a
        crop that shows it was cut after redaction."""

        def redact(self, image: np.ndarray, extra_boxes: list = ()) -> tuple:  # type: ignore[override]
            x1, y1, x2, y2 = boxes[id(image)]
            h, w = image.shape[:2]
            out = image.copy()
            out[int((3 * y1 + y2) / 4 * h):int((y1 + 3 * y2) / 4 * h),
                int((3 * x1 + x2) / 4 * w):int((x1 + 3 * x2) / 4 * w)] = MAGENTA
            return out, Redaction(0, 0, 1, "block")

    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, CentreRedactor())
    (ev,) = run(b, frames, dets)
    assert ev.crop_jpeg is not None and ev.crop_jpeg[:2] == b"\xff\xd8"
    crop = decode(ev.crop_jpeg)
    x0, y0, x1, y1 = crop_box(ev.bbox, 640, 360)
    assert crop.shape == (y1 - y0, x1 - x0, 3)
    assert ev.attributes["crop_px"] == [x0, y0, x1, y1]  # the receiver can place it
    # the object's box and a quarter of it on each side (not cut by the image here)
    bw, bh = (ev.bbox[2] - ev.bbox[0]) * 640, (ev.bbox[3] - ev.bbox[1]) * 360
    assert crop.shape[1] == pytest.approx(max(64, 1.5 * bw), abs=2)
    assert crop.shape[0] == pytest.approx(max(64, 1.5 * bh), abs=2)
    assert x0 <= ev.bbox[0] * 640 and ev.bbox[2] * 640 <= x1
    assert y0 <= ev.bbox[1] * 360 and ev.bbox[3] * 360 <= y1

    # Its centre is the redaction's mark, which the frame itself does not have.
    ch, cw = crop.shape[:2]
    mid = (slice(ch // 2 - 4, ch // 2 + 4), slice(cw // 2 - 4, cw // 2 + 4))
    assert np.abs(crop[mid] - MAGENTA).mean() < 20
    frame = frames[ev.attributes["frame_index"]].image
    assert np.abs(frame[y0:y1, x0:x1][mid] - np.array(MAGENTA)).mean() > 60

    # It is that region of the picture the event carries, not a neighbouring one.
    full = decode(ev.image_jpeg)
    assert np.abs(crop - full[y0:y1, x0:x1]).mean() < 6
    assert np.abs(crop - full[y0:y1, x0 - 40:x1 - 40]).mean() > 20


def test_without_redaction_the_crop_is_cut_from_the_frame() -> None:
    obj = destination(*destination(*ORIGIN, 0.0, 30.0), 90.0, -4.0)
    hist, frames, dets = drive_past(obj)
    frames = smooth_frames(frames)
    b = EventBuilder(EventsConfig(redact=False), CAM_CFG, hist.position_at, None)
    (ev,) = run(b, frames, dets)
    assert ev.crop_jpeg is not None
    crop = decode(ev.crop_jpeg)
    x0, y0, x1, y1 = crop_box(ev.bbox, 640, 360)
    frame = frames[ev.attributes["frame_index"]].image.astype(float)
    assert crop.shape == frame[y0:y1, x0:x1].shape
    assert np.abs(crop - frame[y0:y1, x0:x1]).mean() < 6
    assert np.abs(crop - frame[y0:y1, x0 + 40:x1 + 40]).mean() > 20


@pytest.mark.parametrize("mount", [dict(roll_deg=2.0), dict(roll_deg=-3.0, tilt_deg=7.0),
                                   dict(roll_deg=1.5, heading_offset_deg=4.0, hfov_deg=60.0,
                                        mount_height_m=1.9)])
@pytest.mark.parametrize(("right", "ahead"), [(4.0, 12.0), (-3.0, 25.0), (6.0, 8.0)])
def test_ground_point_inverts_a_rolled_cameras_projection(mount: dict, right: float,
                                                          ahead: float) -> None:
    """A camera mounted askew (turned about its axis, too): the point on the ground the
    simulator's camera draws comes back from its pixel, given the same mounting."""
    cfg = CameraConfig(**mount)
    cam = Camera(640, 360, hfov_deg=cfg.hfov_deg, height_m=cfg.mount_height_m,
                 tilt_deg=cfg.tilt_deg, yaw_deg=cfg.heading_offset_deg, roll_deg=cfg.roll_deg)
    (px,), _ = cam.project(np.array([[right, ahead, 0.0]]))
    box = (px[0] / 640 - 0.01, px[1] / 360 - 0.05, px[0] / 640 + 0.01, px[1] / 360)
    gp = ground_point(box, 360 / 640, cfg)
    assert gp is not None
    assert gp[0] == pytest.approx(right, abs=0.02) and gp[1] == pytest.approx(ahead, rel=0.003)


def test_a_finding_whose_picture_cannot_be_redacted_goes_without_it() -> None:
    """The privacy step failing on a picture keeps the finding (its place and time) and
    never lets the picture out, nor its crop."""
    class Broken(Redactor):
        def redact(self, image, extra_boxes=()):  # type: ignore[no-untyped-def]
            raise RuntimeError("face model failed")

    obj = destination(*destination(*ORIGIN, 0.0, 50.0), 90.0, 6.0)
    hist, frames, dets = drive_past(obj)
    b = EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, Broken())
    events = run(b, frames, dets)
    assert len(events) == 1 and events[0].position is not None
    assert events[0].image_jpeg == b"" and events[0].crop_jpeg is None
    assert events[0].attributes["redaction"] == {"ran": False, "failed": "face model failed"}
    assert b.stats.unredactable == 1
