"""Tracks → events: one finding per real object, with its best picture and its place.

While a track is alive, every new observation is scored as a picture (detector
score, sharpness, size, not cut by the frame edge) and the best few views are
kept (:class:`BestShots`, ``events.confirm_views`` of them, on the perception
thread): the best one's whole frame, the picture's, and of each of the others
only the square its second look sees. When the track ends it is handed on with
them as an :class:`EndedTrack`, and :class:`EventBuilder` (on the findings thread,
see findings.py) makes it an event if it was seen often and confidently enough:

* its class is the track's majority vote;
* its place is the *object's*: for each observation, the vehicle's position
  and heading at that frame's capture time (interpolated GPS) and the camera's
  mounting turn the box's bearing and ground contact into a point on the
  ground; the median of those points is the position, their spread and the
  GPS error its accuracy. When the ground contact cannot be seen (box cut by
  the bottom edge, too far) the vehicle's position is used, flagged;
* it is confirmed by a second look: the detector looks again at the track's
  best few views, zoomed in on the object (``events.confirm_score``); seen
  with several times the pixels, most false alarms are not found again;
* the same class found within ``dedup_distance_m`` of an earlier finding in
  the last ``dedup_window_h`` hours is the same object seen again, not a new
  event (a second lap, a stop at a red light). That memory
  (:class:`RecentFindings`) starts from the store's findings of the window, so
  an ignition cycle does not report again what was just reported;
* its image is the best frame with faces and licence plates blurred: it is
  redacted here (:meth:`EventBuilder.picture`), before the store ever sees it; the
  finding's record may be stored first and the picture attached after (findings.py),
  and it is not sent until then. Its crop (the object's box
  with a margin, see :func:`crop_box`) is cut from that redacted image, so the
  crop can never show what the full picture hides.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import cv2
import numpy as np

from agent.config import CameraConfig, EventsConfig
from agent.geo import LocalFrame, destination, haversine_m
from agent.gps import FrameClock, GeoTag, recording_time
from agent.privacy import Redactor
from agent.records import (
    Box,
    Detection,
    Event,
    Frame,
    PastFinding,
    Picture,
    Position,
    Zoom,
    new_event_id,
)
from agent.tracker import Track

log = logging.getLogger("events")

Positions = Callable[[datetime], GeoTag | None]
SecondLook = Callable[[Zoom, str], float]
"""(the square around a view's object, class) -> the score of that class found there
(:meth:`agent.detector.Detector.look`)."""
ZoomIn = Callable[[np.ndarray, Box], Zoom]
"""(frame, box) -> the square a second look sees (:meth:`agent.detector.Detector.zoom`)."""

# The crop's margin around the object's box (a fraction of the box on each side)
# shows the object's surroundings (kerb, wall, pole), which a reviewer needs to
# judge it; the minimum keeps a far-away object's crop big enough to look at.
CROP_MARGIN = 0.25
CROP_MIN_PX = 64
# Fewer placed views than this cannot show whether a place moves with the vehicle.
MIN_DRIFT_VIEWS = 4


@dataclass(frozen=True, slots=True)
class BestShot:
    """One of a track's best views. Only the best keeps its ``frame`` (the finding's
    picture is made of it); the others keep only ``zoom``, the square their second look
    sees: a whole frame is 2.7 MB at 1280x720, and every live track would hold
    ``events.confirm_views`` of them."""

    quality: float
    detection: Detection
    frame: Frame | None
    """The whole frame while this is the track's best view, else None."""
    zoom: Zoom | None = None
    """What the second look sees (None without one)."""


def _frames(tr: Track) -> str:
    """Which frames a track spans, for a log line that must be matched to a recording."""
    return f"frames {tr.observations[0].index}-{tr.last.index}, {tr.frames} seen"


def _without_frame(shot: BestShot) -> BestShot:
    """``shot`` keeping only its own copy of its zoom (the frame, if no one else holds
    it, is freed)."""
    if shot.frame is None:
        return shot
    z = shot.zoom
    return BestShot(shot.quality, shot.detection, None,
                    None if z is None else Zoom(z.image.copy(), z.seen))


def shot_quality(image: np.ndarray, det: Detection) -> float:
    """How good a picture of the object this frame is (higher is better)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = det.bbox
    xa, ya = max(0, int(x1 * w)), max(0, int(y1 * h))
    xb, yb = min(w, int(x2 * w) + 1), min(h, int(y2 * h) + 1)
    if xb - xa < 3 or yb - ya < 3:
        return 0.0
    crop = cv2.cvtColor(image[ya:yb, xa:xb], cv2.COLOR_BGR2GRAY)
    sharp = min(1.0, float(cv2.Laplacian(crop, cv2.CV_64F).var()) / 300.0)
    size = min(1.0, math.sqrt((x2 - x1) * (y2 - y1)) / 0.25)
    edge = 0.3 if (x1 < 0.005 or y1 < 0.005 or x2 > 0.995 or y2 > 0.995) else 1.0
    return det.score * (0.3 + 0.7 * sharp) * (0.2 + 0.8 * size) * edge


def _crop_span(lo: float, hi: float, size: int, margin: float, min_px: int) -> tuple[int, int]:
    """One axis of :func:`crop_box`: pixel bounds [a, b) within 0..size."""
    lo, hi = sorted((lo * size, hi * size))
    ext = (hi - lo) * margin
    a, b = math.floor(lo - ext), math.ceil(hi + ext)
    a, b = max(0, a), min(size, b)
    # Too small (a far object, or a box cut by the image edge): grow to the
    # minimum around its centre, slid inside the image rather than cut by it.
    need = min(min_px, size)
    if b - a < need:
        centre = min(max((lo + hi) / 2, need / 2), size - need / 2)
        a = max(0, min(size - need, math.floor(centre - need / 2)))
        b = a + need
    return a, b


def crop_box(bbox: tuple[float, float, float, float], width: int, height: int,
             margin: float = CROP_MARGIN, min_px: int = CROP_MIN_PX
             ) -> tuple[int, int, int, int]:
    """The pixel box (x0, y0, x1, y1; x1, y1 exclusive) of an object's crop:
    ``bbox`` (fractions) grown by ``margin`` of its size on each side, at least
    ``min_px`` each way where the image is that big, and always inside the image."""
    x0, x1 = _crop_span(bbox[0], bbox[2], width, margin, min_px)
    y0, y1 = _crop_span(bbox[1], bbox[3], height, margin, min_px)
    return x0, y0, x1, y1


def ground_point(bbox: tuple[float, float, float, float], aspect: float, cam: CameraConfig
                 ) -> tuple[float, float] | None:
    """Where the bottom centre of a box meets the ground, in metres (right, ahead) of
    the camera; None when that ray does not reach the ground (above the horizon)."""
    u = (bbox[0] + bbox[2]) / 2 - 0.5  # fraction of the width from the centre
    v = (bbox[3] - 0.5) * aspect  # same units (widths) below the centre
    if cam.roll_deg:  # undo the camera's turn about its axis
        roll = math.radians(cam.roll_deg)
        u, v = u * math.cos(roll) + v * math.sin(roll), -u * math.sin(roll) + v * math.cos(roll)
    f = 0.5 / math.tan(math.radians(cam.hfov_deg) / 2)
    tilt = math.radians(cam.tilt_deg)
    # The ray in camera coordinates (x right, y down, z forward), into the vehicle frame.
    x, y, z = u, v, f
    fwd = z * math.cos(tilt) - y * math.sin(tilt)
    down = z * math.sin(tilt) + y * math.cos(tilt)
    if down <= 1e-6:
        return None
    k = cam.mount_height_m / down
    right, ahead = x * k, fwd * k
    yaw = math.radians(cam.heading_offset_deg)
    return (right * math.cos(yaw) + ahead * math.sin(yaw),
            -right * math.sin(yaw) + ahead * math.cos(yaw))


@dataclass
class EventStats:
    """What became of the tracks the event stage was given, one counter per rule."""

    findings: int = 0
    too_short: int = 0
    """Seen in fewer than ``events.min_frames`` frames."""
    weak: int = 0
    """Best score below ``events.min_score``."""
    too_far: int = 0
    """Only ever seen beyond ``events.max_range_m``."""
    moves_with_vehicle: int = 0
    """Its place kept its distance ahead of the vehicle (``events.max_drift``)."""
    unconfirmed: int = 0
    """Not found again on the zoomed-in second look (``events.confirm_score``)."""
    repeats: int = 0
    """The same object as a recent finding (``events.dedup_*``)."""
    unencodable: int = 0
    """Findings kept without their picture: it could not be encoded."""
    unredactable: int = 0
    """Findings kept without their picture: the privacy step failed on it."""

    @property
    def dropped(self) -> int:
        """Tracks that were not findings for any reason but being a repeat."""
        return (self.too_short + self.weak + self.too_far + self.moves_with_vehicle
                + self.unconfirmed)


class RecentFindings:
    """The findings of the last ``window`` that a new one may be a repeat of.

    Seeded with the store's (:meth:`agent.store.Store.findings_since`), so the memory
    outlives the process. A finding without a position can only be told apart from
    one made seconds before (a flicker), since "near" means nothing without a place.
    """

    def __init__(self, distance_m: float, window: timedelta,
                 seed: Iterable[PastFinding] = ()) -> None:
        self.distance_m = distance_m
        self.window = window
        self._recent: list[PastFinding] = list(seed)

    def __len__(self) -> int:
        return len(self._recent)

    def repeat_of(self, label: str, pos: Position | None, when: datetime
                  ) -> PastFinding | None:
        """The earlier finding this one repeats; if none, it is remembered as a finding."""
        self._recent = [r for r in self._recent if when - r.captured_utc <= self.window]
        for r in self._recent:
            if r.label != label:
                continue
            if pos is not None and r.lat is not None and r.lon is not None:
                if haversine_m(r.lat, r.lon, pos.lat, pos.lon) <= self.distance_m:
                    return r
            elif pos is None and r.lat is None and \
                    abs(when - r.captured_utc) <= timedelta(seconds=10):
                return r
        self._recent.append(PastFinding(label, pos.lat if pos else None,
                                        pos.lon if pos else None, when))
        return None


@dataclass(frozen=True, slots=True)
class EndedTrack:
    """A track the tracker has ended (it changes no more) and its best views, best first."""

    track: Track
    shots: tuple[BestShot, ...]


class BestShots:
    """The best few views of each live track (perception's thread): the picture of a
    finding and the views its second look is asked about. Each track holds one whole
    frame at most, its best view's; a view that is not, or no longer, the best keeps
    a copy of its second look's square and lets its frame go."""

    def __init__(self, keep: int, zoom: ZoomIn | None = None) -> None:
        """``zoom``: the second look's square of a view (None: no second look)."""
        self.keep = keep
        self.zoom = zoom
        self._shots: dict[int, list[BestShot]] = {}  # track id -> its best shots, best first

    @classmethod
    def for_config(cls, cfg: EventsConfig, zoom: ZoomIn | None = None) -> BestShots:
        """As many as the second look asks about (one without a second look)."""
        return cls(cfg.confirm_views if cfg.confirm_score > 0 else 1, zoom)

    def observe(self, frame: Frame, updated: list[Track]) -> None:
        for tr in updated:
            obs = tr.last
            if obs.index != frame.index:
                continue
            q = shot_quality(frame.image, obs.detection)
            shots = self._shots.get(tr.id, [])
            if len(shots) < self.keep or q > shots[-1].quality:
                z = None if self.zoom is None else self.zoom(frame.image, obs.detection.bbox)
                shots = sorted([*shots, BestShot(q, obs.detection, frame, z)],
                               key=lambda s: -s.quality)[:self.keep]
                self._shots[tr.id] = [shots[0], *map(_without_frame, shots[1:])]

    def end(self, tracks: list[Track]) -> list[EndedTrack]:
        """Hand ended tracks on with their shots (and forget them here)."""
        return [EndedTrack(tr, tuple(self._shots.pop(tr.id, ()))) for tr in tracks]


class EventBuilder:
    """Turns ended tracks into events (see the module docstring for the rules).

    ``frame_time`` maps a frame's capture stamps to GPS time (a live camera's through
    the clock check; a recording's are already), and ``time_source`` says where that
    time came from (``attributes.time_source``: 'gps', 'ntp', 'unverified' or
    'recording'); ``recent`` is the dedup memory; ``ids`` makes event ids.
    """

    def __init__(self, cfg: EventsConfig, camera: CameraConfig, positions: Positions,
                 redactor: Redactor | None, model: str = "", config_version: int = 0,
                 frame_time: FrameClock = recording_time,
                 second_look: SecondLook | None = None,
                 recent: RecentFindings | None = None,
                 time_source: Callable[[], str] = lambda: "recording",
                 ids: Callable[[], str] = new_event_id) -> None:
        if cfg.redact and redactor is None:
            raise ValueError("events.redact is on but no redactor was given")
        self.cfg = cfg
        self.camera = camera
        self.positions = positions
        self.redactor = redactor if cfg.redact else None
        self.model = model
        self.config_version = config_version
        self.frame_time = frame_time
        self.time_source = time_source
        self.ids = ids
        # None (no detector at hand, as in unit tests of the rest) means no second look.
        self.second_look = second_look if cfg.confirm_score > 0 else None
        self.recent = recent or RecentFindings(cfg.dedup_distance_m,
                                               timedelta(hours=cfg.dedup_window_h))
        self.stats = EventStats()

    def finish(self, ended: list[EndedTrack]) -> list[Event]:
        """The findings of these tracks, each with its redacted picture (:meth:`decide`,
        then :meth:`picture`, on one thread)."""
        out = []
        for ev, shot in self.decide(ended):
            pic = self.picture(ev, shot)
            out.append(ev.replace(image_jpeg=pic.image_jpeg, crop_jpeg=pic.crop_jpeg,
                                  attributes={**ev.attributes, **pic.attributes}))
        return out

    def decide(self, ended: list[EndedTrack]) -> list[tuple[Event, BestShot]]:
        """Which of these tracks are findings: each as an event without its picture yet,
        with the view its picture is to be made of (:meth:`picture`)."""
        out = []
        for e in ended:
            decided = self._event(e.track, list(e.shots))
            if decided is not None:
                self.stats.findings += 1
                out.append(decided)
        return out

    # --- one track ----------------------------------------------------------

    def _event(self, tr: Track, shots: list[BestShot]) -> tuple[Event, BestShot] | None:
        top = max(o.detection.score for o in tr.observations)
        if tr.frames < self.cfg.min_frames or not shots:
            self.stats.too_short += 1
            return None
        if top < self.cfg.min_score:
            self.stats.weak += 1
            return None
        best = shots[0]
        if best.frame is None:  # BestShots keeps the best one's frame; never the case
            raise ValueError(f"track {tr.id}: its best view has no frame")
        label = tr.label
        h, w = best.frame.image.shape[:2]
        position, where = self._position(tr, h / w)
        if where == "too-far":
            self.stats.too_far += 1
            log.debug("track %d (%s): %s only seen beyond %.0f m; not a finding", tr.id,
                      _frames(tr), label, self.cfg.max_range_m)
            return None
        if where == "moves-with-vehicle":
            self.stats.moves_with_vehicle += 1
            log.debug("track %d (%s): %s kept its distance ahead as the vehicle drove on; "
                      "not a finding", tr.id, _frames(tr), label)
            return None
        confirmed = self._confirm(tr, label, shots)
        if confirmed is not None and confirmed < self.cfg.confirm_score:
            self.stats.unconfirmed += 1
            log.debug("track %d (%s): %s not found again on a closer look (%.2f < %.2f); "
                      "not a finding", tr.id, _frames(tr), label, confirmed,
                      self.cfg.confirm_score)
            return None
        when = self.frame_time(best.frame.captured_utc, best.frame.captured_mono)
        if (earlier := self.recent.repeat_of(label, position, when)) is not None:
            self.stats.repeats += 1
            log.debug("track %d (%s): the same %s as an earlier finding", tr.id, _frames(tr),
                      label)
            ago = (when - earlier.captured_utc).total_seconds()
            if position is not None and earlier.lat is not None and earlier.lon is not None:
                away = haversine_m(earlier.lat, earlier.lon, position.lat, position.lon)
                log.info("%s seen again %.0f m from the one reported %.0f s ago; not "
                         "reported again", label, away, ago)
            else:
                log.info("%s seen again %.0f s after the last one, neither placed by GPS "
                         "(a flicker); not reported again", label, ago)
            return None
        first, last = tr.observations[0], tr.observations[-1]
        # Where the vehicle was when the picture was taken: what the office needs to check
        # the object's placement, and the frame's own geotag (flagged if extrapolated).
        tag = self.positions(when)
        vehicle = None if tag is None else {
            "lat": round(tag.lat, 7), "lon": round(tag.lon, 7),
            "heading_deg": None if tag.heading_deg is None else round(tag.heading_deg, 1),
            "speed_mps": None if tag.speed_mps is None else round(tag.speed_mps, 2),
            "accuracy_m": round(tag.accuracy_m, 1), "extrapolated": tag.extrapolated}
        attrs: dict[str, object] = {
            "frames": tr.frames,
            "first_seen": self.frame_time(first.captured_utc, first.captured_mono).isoformat(),
            "duration_s": round(last.captured_mono - first.captured_mono, 2),
            "frame_index": best.frame.index,
            "position_method": where,
            # where captured_at came from: a finding made before the clock could be
            # trusted ('unverified') may carry 1970 or a time far off
            "time_source": self.time_source(),
            "second_look": None if confirmed is None else round(confirmed, 2),
            "vehicle": vehicle,
        }
        ev = Event(id=self.ids(), label=label, score=float(best.detection.score),
                   bbox=best.detection.bbox,
                   captured_utc=when, captured_mono=best.frame.captured_mono,
                   image_jpeg=b"", position=position, model=self.model,
                   config_version=self.config_version, attributes=attrs)
        return ev, best

    # --- its picture ----------------------------------------------------------

    def picture(self, ev: Event, shot: BestShot) -> Picture:
        """The finding's picture: ``shot``'s frame with faces and plates blurred, and the
        object's crop cut from that. Empty when it cannot be redacted (the picture must
        not leave) or encoded; the finding is kept and sent without one."""
        if shot.frame is None:
            return Picture.withheld(ev.id, "its view's frame was not kept")
        image = shot.frame.image
        h, w = image.shape[:2]
        redaction: dict[str, object] = {"ran": False}
        if self.redactor is not None:
            try:
                image, rep = self.redactor.redact(image)
                redaction = rep.as_dict()
            except Exception as e:  # noqa: BLE001 (whatever failed, the picture must not leave)
                self.stats.unredactable += 1
                log.error("finding %s: the privacy step failed on its picture (%s); the "
                          "finding is kept without a picture", ev.id, e)
                return Picture.withheld(ev.id, str(e))
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality]
        ok, jpeg = cv2.imencode(".jpg", image, quality)
        if not ok:
            self.stats.unencodable += 1
            log.error("finding %s: could not encode its picture; the finding is kept "
                      "without one", ev.id)
            return Picture(ev.id, b"", None, {"redaction": redaction})
        # From the redacted image, never the frame: the crop must hide what the picture hides.
        x0, y0, x1, y1 = crop_box(shot.detection.bbox, w, h)
        ok, crop_buf = cv2.imencode(".jpg", image[y0:y1, x0:x1], quality)
        attrs: dict[str, object] = {"redaction": redaction}
        if ok:
            attrs["crop_px"] = [x0, y0, x1, y1]  # where the crop sits in the picture
        else:
            # The full picture is the finding; a missing crop only costs the reviewer a zoom.
            log.warning("finding %s: could not encode its crop; kept without", ev.id)
        return Picture(ev.id, jpeg.tobytes(), crop_buf.tobytes() if ok else None, attrs)

    def _confirm(self, tr: Track, label: str, shots: list[BestShot]) -> float | None:
        """The best score of the second look over the track's kept views (they stop at
        the first that passes); None when there is no second look."""
        if self.second_look is None:
            return None
        best = 0.0
        for shot in shots:
            if shot.zoom is None:
                continue
            try:
                best = max(best, self.second_look(shot.zoom, label))
            except ValueError as e:  # a frame the detector cannot take: the look is lost
                log.warning("track %d: second look failed: %s", tr.id, e)
            if best >= self.cfg.confirm_score:
                break
        return best

    def _position(self, tr: Track, aspect: float) -> tuple[Position | None, str]:
        points: list[tuple[float, float, float]] = []  # (distance, lat, lon)
        vehicle: list[GeoTag] = []
        seen_from: list[tuple[float, float]] = []  # vehicle lat/lon of each point
        far = 0
        for o in tr.observations:
            tag = self.positions(self.frame_time(o.captured_utc, o.captured_mono))
            if tag is None:
                continue
            vehicle.append(tag)
            if tag.heading_deg is None or o.detection.bbox[3] > 0.99:
                continue  # no heading, or the object's foot is below the frame
            gp = ground_point(o.detection.bbox, aspect, self.camera)
            if gp is None:
                continue
            right, ahead = gp
            dist = math.hypot(right, ahead)
            if dist > self.cfg.max_range_m:
                far += 1
                continue
            brg = tag.heading_deg + math.degrees(math.atan2(right, ahead))
            points.append((dist, *destination(tag.lat, tag.lon, brg, dist)))
            seen_from.append((tag.lat, tag.lon))
        if self._moves_with_vehicle(points, seen_from):
            # A place that keeps its distance ahead as the vehicle drives on is no place
            # on the ground: a far object whose few-pixel box came out too tall.
            return None, "moves-with-vehicle"
        if points:
            # A ground point's error grows with the square of its distance (a pixel of box
            # bottom is metres far away), so only the nearest views place the object; the
            # median of those shrugs off outliers.
            points.sort()
            points = points[:max(3, len(points) // 3)]
            lat = statistics.median(p[1] for p in points)
            lon = statistics.median(p[2] for p in points)
            frame = LocalFrame(lat, lon)
            spread = statistics.median(math.hypot(*frame.to_en(p[1], p[2])) for p in points)
            gps = statistics.median(t.accuracy_m for t in vehicle)
            return Position(lat, lon, round(math.hypot(gps, spread) + 1.0, 1), "object"), "object"
        if far:
            # Only ever seen beyond range: placed tens of metres wrong, and an object beside
            # the route is seen again from close by, so this view is not a finding.
            return None, "too-far"
        if vehicle:
            t = vehicle[len(vehicle) // 2]
            # Within camera range of the vehicle, but where exactly is unknown.
            return Position(t.lat, t.lon, round(t.accuracy_m + 10.0, 1), "vehicle"), "vehicle"
        return None, "no-fix"

    def _moves_with_vehicle(self, points: list[tuple[float, float, float]],
                            seen_from: list[tuple[float, float]]) -> bool:
        """Whether the track's ground points travel along with the vehicle: between the
        first and the last third of the views, the point moved more than
        ``events.max_drift`` of the vehicle's own travel (at least 5 m of it). A real
        object stands still; a far one placed short stays the same distance ahead."""
        n = len(points)
        if n < MIN_DRIFT_VIEWS:
            return False
        k = n // 3
        frame = LocalFrame(*seen_from[0])

        def mid(pts: list[tuple[float, float]]) -> tuple[float, float]:
            en = [frame.to_en(la, lo) for la, lo in pts]
            return statistics.median(x for x, _ in en), statistics.median(y for _, y in en)
        g0, g1 = mid([p[1:] for p in points[:k]]), mid([p[1:] for p in points[-k:]])
        v0, v1 = mid(seen_from[:k]), mid(seen_from[-k:])
        travel = math.hypot(v1[0] - v0[0], v1[1] - v0[1])
        if travel < 5.0:
            return False
        return math.hypot(g1[0] - g0[0], g1[1] - g0[1]) > self.cfg.max_drift * travel
