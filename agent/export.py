"""Events out of (and back into) the outbox as files: JSON Lines, GeoJSON, CSV.

For the technician with a laptop: look at what a unit found, put it on a map
(GeoJSON opens in QGIS or geojson.io), or carry the findings of a unit whose
LTE died from its SD card to a machine that can deliver them
(``events export --with-images`` then ``events import``: the ids are kept, so
the receiver drops anything it already had). The object's crop travels with its
picture (``crop_b64``); records without one, such as exports made before crops
existed, import as events without a crop.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from agent.records import Event, Position, iso_utc, parse_iso_utc
from agent.store import StoredEvent

CSV_FIELDS = ["id", "captured_at", "label", "score", "lat", "lon", "accuracy_m", "state",
              "attempts", "delivered_at", "model", "config_version"]


def to_record(s: StoredEvent, with_image: bool = False) -> dict[str, Any]:
    ev = s.event
    rec: dict[str, Any] = {
        "id": ev.id,
        "captured_at": iso_utc(ev.captured_utc),
        "captured_mono": ev.captured_mono,
        "label": ev.label,
        "score": ev.score,
        "bbox": list(ev.bbox),
        "position": None if ev.position is None else {
            "lat": ev.position.lat, "lon": ev.position.lon,
            "accuracy_m": ev.position.accuracy_m, "source": ev.position.source},
        "model": ev.model,
        "config_version": ev.config_version,
        "attributes": ev.attributes,
        "state": s.state,
        "attempts": s.attempts,
        "delivered_at": iso_utc(s.delivered_utc) if s.delivered_utc else None,
        "image_bytes": len(ev.image_jpeg),
        "image_sha256": s.image_sha256,
        "crop_bytes": None if ev.crop_jpeg is None else len(ev.crop_jpeg),
        "crop_sha256": s.crop_sha256,
    }
    if with_image:
        rec["image_b64"] = base64.b64encode(ev.image_jpeg).decode("ascii")
        if ev.crop_jpeg is not None:
            rec["crop_b64"] = base64.b64encode(ev.crop_jpeg).decode("ascii")
    return rec


def from_record(rec: dict[str, Any]) -> Event:
    """An Event from an exported JSON record; ValueError naming what is missing."""
    if "image_b64" not in rec:
        raise ValueError("no image_b64 (export with --with-images to carry the images)")
    try:
        pos = rec.get("position")
        crop = rec.get("crop_b64")  # absent in exports from before crops: no crop, not an error
        return Event(
            id=str(rec["id"]),
            label=str(rec["label"]),
            score=float(rec["score"]),
            bbox=tuple(float(v) for v in rec["bbox"]),  # type: ignore[arg-type]
            captured_utc=parse_iso_utc(rec["captured_at"]),
            captured_mono=float(rec.get("captured_mono", 0.0)),
            image_jpeg=base64.b64decode(rec["image_b64"], validate=True),
            position=Position(float(pos["lat"]), float(pos["lon"]), pos.get("accuracy_m"),
                              pos.get("source", "gps")) if pos else None,
            model=str(rec.get("model", "")),
            config_version=int(rec.get("config_version", 0)),
            attributes=dict(rec.get("attributes") or {}),
            crop_jpeg=base64.b64decode(crop, validate=True) if crop else None,
        )
    except KeyError as e:
        raise ValueError(f"missing field {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None


def write_jsonl(events: Iterable[StoredEvent], out: io.TextIOBase, with_images: bool) -> int:
    n = 0
    for s in events:
        out.write(json.dumps(to_record(s, with_images), separators=(",", ":")) + "\n")
        n += 1
    return n


def write_geojson(events: Iterable[StoredEvent], out: io.TextIOBase) -> int:
    """A FeatureCollection of the events that have a position (others are counted, not shown)."""
    features = []
    for s in events:
        rec = to_record(s)
        pos = rec.pop("position")
        if pos is None:
            continue
        features.append({"type": "Feature",
                         "geometry": {"type": "Point", "coordinates": [pos["lon"], pos["lat"]]},
                         "properties": {**rec, "accuracy_m": pos["accuracy_m"]}})
    json.dump({"type": "FeatureCollection", "features": features}, out, indent=1)
    out.write("\n")
    return len(features)


def write_csv(events: Iterable[StoredEvent], out: io.TextIOBase) -> int:
    w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    n = 0
    for s in events:
        rec = to_record(s)
        pos = rec.get("position") or {}
        w.writerow({**rec, "lat": pos.get("lat"), "lon": pos.get("lon"),
                    "accuracy_m": pos.get("accuracy_m")})
        n += 1
    return n
