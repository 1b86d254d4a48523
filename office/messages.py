"""What arrives from the fleet, parsed defensively into small records.

Topics follow docs/mqtt.md: ``{root}/{dev}/events``, ``{root}/{dev}/images/{event_id}``
(and ``…/crop``), ``{root}/{dev}/status``, ``{root}/{dev}/telemetry`` and
``{root}/{dev}/config/reported``. Anything else, or a payload that is not what the
contract says, raises :class:`BadMessage` with a short ``reason`` (counted by the
collector) and a ``detail`` for the log. A unit can only speak for itself: an event whose
``device`` is not the topic's is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

EVENT_SCHEMA = 1
DEVICE = r"^[A-Za-z0-9_.-]{1,64}$"
UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


class BadMessage(Exception):
    """A message that breaks the contract. ``reason`` is one of: oversized, not_json,
    wrong_schema, future_schema, device_mismatch, hash_mismatch, unknown_topic."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class _Lenient(BaseModel):
    # Additive changes keep schema 1 (docs/mqtt.md): unknown keys are ignored, not errors.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Position(_Lenient):
    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    accuracy_m: Annotated[float, Field(ge=0)] | None = None
    source: str | None = None


class PictureRef(_Lenient):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    bytes: Annotated[int, Field(ge=0)] | None = None
    held: bool = False


class EventMessage(_Lenient):
    schema_: Annotated[int, Field(alias="schema", ge=1)]
    id: Annotated[str, Field(pattern=UUID)]
    device: Annotated[str, Field(pattern=DEVICE)]
    captured_at: datetime
    label: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")]
    score: Annotated[float, Field(ge=0, le=1)]
    bbox: list[float] | None = None
    position: Position | None = None
    model: str | None = None
    config_version: int | None = None
    image: PictureRef | None = None
    crop: PictureRef | None = None
    attributes: dict[str, Any] = {}


@dataclass(frozen=True)
class Event:
    """A finding as the office keeps it: the parsed fields and the JSON as it came."""

    id: str
    device: str
    captured_at: str  # ISO 8601 UTC with milliseconds and Z: sorts as time
    label: str
    score: float
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    image_sha256: str | None
    crop_sha256: str | None
    raw: str


@dataclass(frozen=True)
class Picture:
    event_id: str
    device: str
    kind: Literal["image", "crop"]
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class UnitReport:
    """A unit's retained status, telemetry or config report (kept as it came)."""

    device: str
    kind: Literal["status", "telemetry", "config_report"]
    data: dict[str, Any]


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(payload: bytes, limit: int) -> Any:
    if len(payload) > limit:
        raise BadMessage("oversized", f"{len(payload)} bytes, over the {limit} byte limit")
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadMessage("not_json", str(e)[:200]) from None


def parse_event(device: str, payload: bytes, limit: int) -> Event:
    data = _json(payload, limit)
    if not isinstance(data, dict):
        raise BadMessage("wrong_schema", "an event must be a JSON object")
    schema = data.get("schema")
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > EVENT_SCHEMA:
        raise BadMessage("future_schema", f"schema {schema}; this office reads {EVENT_SCHEMA}")
    try:
        m = EventMessage.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BadMessage("wrong_schema", f"{where}: {first['msg']}") from None
    if m.device != device:
        raise BadMessage("device_mismatch", f"event of {m.device!r} on {device!r}'s topic")
    p = m.position
    return Event(id=m.id.lower(), device=m.device, captured_at=iso(m.captured_at),
                 label=m.label, score=m.score,
                 lat=p.lat if p else None, lon=p.lon if p else None,
                 accuracy_m=p.accuracy_m if p else None,
                 image_sha256=m.image.sha256 if m.image else None,
                 crop_sha256=m.crop.sha256 if m.crop else None,
                 raw=json.dumps(data, separators=(",", ":"), ensure_ascii=False))


def parse_report(device: str, kind: Literal["status", "telemetry", "config_report"],
                 payload: bytes, limit: int) -> UnitReport:
    data = _json(payload, limit)
    if not isinstance(data, dict):
        raise BadMessage("wrong_schema", f"a {kind} must be a JSON object")
    claimed = data.get("device")
    if claimed is not None and claimed != device:
        raise BadMessage("device_mismatch", f"{kind} of {claimed!r} on {device!r}'s topic")
    return UnitReport(device, kind, data)


Message = Event | Picture | UnitReport | None


def parse(topic: str, payload: bytes, root: str, *, max_json: int, max_image: int) -> Message:
    """Parse one MQTT message; None for what the office does not keep (an empty retained
    payload clearing a topic). Raises :class:`BadMessage`."""
    prefix = root + "/"
    if not topic.startswith(prefix):
        raise BadMessage("unknown_topic", topic[:200])
    parts = topic[len(prefix):].split("/")
    device, rest = parts[0], parts[1:]
    if not _valid_device(device) or device == "fleet":
        raise BadMessage("unknown_topic", topic[:200])
    if rest and rest[0] == "images" and len(rest) in (2, 3):
        if len(rest) == 3 and rest[2] != "crop":
            raise BadMessage("unknown_topic", topic[:200])
        event_id = rest[1].lower()
        if not _valid_uuid(event_id):
            raise BadMessage("unknown_topic", f"{topic[:200]}: not an event id")
        if len(payload) > max_image:
            raise BadMessage("oversized", f"{len(payload)} bytes, over the {max_image} limit")
        if not payload:
            return None
        return Picture(event_id, device, "crop" if len(rest) == 3 else "image", payload)
    if not payload:
        return None  # a retained topic cleared
    match rest:
        case ["events"]:
            return parse_event(device, payload, max_json)
        case ["status"]:
            return parse_report(device, "status", payload, max_json)
        case ["telemetry"]:
            return parse_report(device, "telemetry", payload, max_json)
        case ["config", "reported"]:
            return parse_report(device, "config_report", payload, max_json)
    raise BadMessage("unknown_topic", topic[:200])


def _valid_device(s: str) -> bool:
    return re.fullmatch(DEVICE, s) is not None


def _valid_uuid(s: str) -> bool:
    return re.fullmatch(UUID, s) is not None
