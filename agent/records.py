"""The small immutable records that stages pass to each other.

Stages never reach into each other's objects; they hand over one of these.
Later stages (frames, fixes, detections, tracks) add their records here.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import uuid6

EVENT_SCHEMA_VERSION = 1
"""Version of the event JSON published on ``{root}/{dev}/events``. Raised only for a
change that breaks a reader; added keys (``crop`` was one) keep it (docs/mqtt.md)."""


def new_event_id() -> str:
    """A device-made, time-ordered id (UUIDv7): receivers drop duplicates by it,
    and sorting by it is sorting by creation time."""
    return str(uuid6.uuid7())


class EventIds:
    """Event ids (UUIDv7) that never go backwards, whatever the system clock does.

    A UUIDv7 carries the system clock's milliseconds, and the outbox delivers its backlog
    in id order. A Pi without a real-time clock may boot in 1970 or far ahead, and NTP or
    GPS then steps its clock: an id made after a step back would sort before older ones.
    Seeded with the newest id in the outbox, each id made here is above every id before
    it (one more than the last, when the clock says otherwise).
    """

    def __init__(self, newest: str | None = None) -> None:
        self._last = uuid.UUID(newest).int if newest else 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        made = uuid6.uuid7().int
        with self._lock:
            self._last = made if made > self._last else self._last + 1
            return str(uuid.UUID(int=self._last))


@dataclass(frozen=True, slots=True)
class Frame:
    """One camera frame and when it was captured (the time of anything found in it)."""

    image: np.ndarray = field(repr=False)
    """BGR, uint8, HxWx3 (OpenCV's layout)."""
    captured_utc: datetime
    captured_mono: float
    """time.monotonic() at capture, or the file's own timeline for a recording."""
    index: int
    """Frame number from the source's start (gaps mean frames were dropped)."""
    source: str = ""
    read_mono: float = field(default_factory=time.monotonic)
    """time.monotonic() when this process got the frame (a recording's frames too): where
    the latency of what is found in it starts."""


Box = tuple[float, float, float, float]
"""x1, y1, x2, y2 as fractions of the frame's width and height (0..1)."""


@dataclass(frozen=True, slots=True)
class Zoom:
    """What a second look sees of one view: the square of the frame around the object
    (:func:`agent.detector.zoom_in`) and the object's box within it (fractions of the
    square). Small enough to keep where the whole frame is not."""

    image: np.ndarray = field(repr=False)
    seen: Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes: 1 the same box, 0 apart."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Detection:
    """One object the detector found in one frame."""

    label: str
    class_id: int
    score: float
    bbox: Box


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS fix as the receiver reported it."""

    utc: datetime
    lat: float | None
    lon: float | None
    mode: int
    """0 unknown, 1 no fix, 2 2D, 3 3D (gpsd's TPV mode)."""
    speed_mps: float | None = None
    track_deg: float | None = None
    """Course over ground, degrees clockwise from true north."""
    eph_m: float | None = None
    epv_m: float | None = None
    alt_m: float | None = None

    @property
    def usable(self) -> bool:
        return self.mode >= 2 and self.lat is not None and self.lon is not None


@dataclass(frozen=True, slots=True)
class Position:
    lat: float
    lon: float
    accuracy_m: float | None = None
    source: str = "gps"
    """How the position was found: 'object' (projected), 'vehicle', 'gps' …"""


@dataclass(frozen=True, slots=True)
class ControlMessage:
    """A message the unit received on one of its control topics (agent/control.py)."""

    topic: str
    payload: bytes = field(repr=False)
    retained: bool = False
    correlation_data: bytes | None = None
    """MQTT 5: echoed on the answer, so that the asker can match it."""


@dataclass(frozen=True, slots=True)
class PastFinding:
    """What the dedup memory needs of a finding already made (see events.RecentFindings)."""

    label: str
    lat: float | None
    lon: float | None
    captured_utc: datetime


@dataclass(frozen=True, slots=True)
class Event:
    """One finding: a civil-complaint element seen by the camera, with its picture."""

    label: str
    score: float
    bbox: tuple[float, float, float, float]
    """x1, y1, x2, y2 as fractions of the image width and height."""
    captured_utc: datetime
    captured_mono: float
    """time.monotonic() of the frame's capture (this boot), for ordering and lag."""
    image_jpeg: bytes = field(repr=False)
    """The redacted picture; empty once evicted from the outbox to keep it within its
    quota (``store.quota_mb``): the finding is then delivered without it."""
    position: Position | None = None
    model: str = ""
    config_version: int = 0
    id: str = field(default_factory=new_event_id)
    attributes: dict[str, object] = field(default_factory=dict)
    """Stage-specific extras (frame count, track length …), carried into the JSON."""
    crop_jpeg: bytes | None = field(default=None, repr=False)
    """The object's region of the same redacted picture, for a reviewer who should not
    have to find it in the full frame; None for events made before crops existed.
    Last, so that adding it moved no other field."""

    def __post_init__(self) -> None:
        if self.captured_utc.tzinfo is None:
            raise ValueError("Event.captured_utc must be timezone-aware (UTC)")
        if self.image_jpeg and not self.image_jpeg.startswith(b"\xff\xd8"):
            raise ValueError("Event.image_jpeg is not a JPEG (no SOI marker)")
        if self.crop_jpeg is not None and not self.crop_jpeg.startswith(b"\xff\xd8"):
            raise ValueError("Event.crop_jpeg is not a JPEG (no SOI marker)")

    def replace(self, **changes: object) -> Event:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Picture:
    """A finding's redacted picture and crop, made after its record was committed: the
    record is durable within milliseconds of the track's end, while the privacy step
    takes longer (see findings.py). Until it is attached the finding is not sent."""

    event_id: str
    image_jpeg: bytes = field(repr=False)
    """Empty when the picture could not be redacted or encoded: sent without one."""
    crop_jpeg: bytes | None = field(default=None, repr=False)
    attributes: dict[str, object] = field(default_factory=dict)
    """Added to the finding's attributes (``redaction``, ``crop_px``)."""

    @classmethod
    def withheld(cls, event_id: str, why: str) -> Picture:
        """No picture for this finding, and ``attributes.redaction`` says why."""
        return cls(event_id, b"", None, {"redaction": {"ran": False, "failed": why[:200]}})


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_utc(ts: datetime) -> str:
    """UTC, millisecond precision, 'Z': sorts as text in time order."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
