"""Open311 GeoReport v2, read side: complaints as service requests for city systems.

``services.json`` lists the complaint classes as services; ``requests.json`` and
``requests/{id}.json`` give complaints with the standard's field names
(https://wiki.open311.org/GeoReport_v2). Status is ``open`` (new, confirmed, dispatched)
or ``closed`` (resolved, rejected, duplicate), with the office's status and last note in
``status_notes``. As the standard says, with neither ``start_date`` nor ``end_date`` the
last 90 days are given, at most 1000 requests. Errors are the standard's
``[{"code", "description"}]``. Only JSON is served (``.xml`` answers 400).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request

from office.config import OPEN_STATUSES, OfficeConfig
from office.messages import UUID
from office.store import Filters, Store

SERVICES = {
    "garbage": ("Illegal dumping", "불법 투기 쓰레기",
                "Garbage dumped at the road side, seen by a patrol vehicle's camera."),
    "banner": ("Illegal banner", "불법 현수막",
               "A banner or placard put up without permission."),
    "construction": ("Unauthorised construction", "무허가 공사",
                     "A construction site without a permit on record."),
}
_CLOSED = ("resolved", "rejected", "duplicate")


class Open311Error(Exception):
    def __init__(self, code: int, description: str) -> None:
        self.code = code
        super().__init__(description)


def blueprint(cfg: OfficeConfig, store: Store) -> Blueprint:
    bp = Blueprint("open311", __name__)

    @bp.errorhandler(Open311Error)
    def _error(e: Open311Error) -> tuple[Response, int]:
        return jsonify([{"code": e.code, "description": str(e)}]), e.code

    @bp.before_request
    def _jurisdiction() -> None:
        j = request.args.get("jurisdiction_id")
        if j is not None and j != cfg.complaints.jurisdiction:
            raise Open311Error(404, f"jurisdiction_id {j[:60]!r} is not served here; "
                               f"this is {cfg.complaints.jurisdiction}")

    @bp.get("/services.<fmt>")
    def services(fmt: str) -> Response:
        _json_only(fmt)
        return jsonify([service(c) for c in cfg.complaints.classes])

    @bp.get("/requests.<fmt>")
    def requests_(fmt: str) -> Response:
        _json_only(fmt)
        rows = store.complaints(_filters(cfg))
        return jsonify([service_request(r, request.host_url, cfg) for r in rows])

    @bp.get("/requests/<rid>.<fmt>")
    def one(rid: str, fmt: str) -> Response:
        _json_only(fmt)
        if not re.fullmatch(UUID, rid):
            raise Open311Error(400, f"{rid[:60]!r} is not a service_request_id")
        rows = store.complaints(Filters(ids=(rid.lower(),), statuses=(*OPEN_STATUSES,
                                                                      *_CLOSED)))
        if not rows:
            raise Open311Error(404, f"no service request {rid}")
        return jsonify([service_request(rows[0], request.host_url, cfg)])

    return bp


def _json_only(fmt: str) -> None:
    if fmt != "json":
        raise Open311Error(400, f"format {fmt[:20]!r} is not served; use .json")


def _time(value: str, key: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Open311Error(400, f"{key}: {value[:40]!r} is not a W3C datetime") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _filters(cfg: OfficeConfig) -> Filters:
    args = request.args
    ids = tuple(i.strip().lower() for i in args.get("service_request_id", "").split(",")
                if i.strip())
    for i in ids:
        if not re.fullmatch(UUID, i):
            raise Open311Error(400, f"service_request_id: {i[:60]!r} is not one of ours")
    codes = tuple(c for c in args.get("service_code", "").split(",") if c)
    for c in codes:
        if c not in cfg.complaints.classes:
            raise Open311Error(400, f"service_code {c[:40]!r}: one of "
                               f"{', '.join(cfg.complaints.classes)}")
    status = args.get("status")
    if status not in (None, "open", "closed"):
        raise Open311Error(400, "status: open or closed")
    statuses = {None: (*OPEN_STATUSES, *_CLOSED), "open": OPEN_STATUSES,
                "closed": _CLOSED}[status]
    start = _time(args["start_date"], "start_date") if args.get("start_date") else None
    end = _time(args["end_date"], "end_date") if args.get("end_date") else None
    if not ids and start is None and end is None:
        start = datetime.now(UTC) - timedelta(days=90)
    if start and end and end < start:
        raise Open311Error(400, "end_date is before start_date")
    # requested_datetime is first_seen: a request made between start and end.
    return Filters(classes=codes or tuple(cfg.complaints.classes), statuses=statuses,
                   ids=ids, first_seen_from=_iso(start) if start else None,
                   first_seen_to=_iso(end) if end else None, limit=1000)


def service(code: str) -> dict[str, Any]:
    en, ko, description = SERVICES.get(code, (code, code, ""))
    return {"service_code": code, "service_name": f"{en} ({ko})", "description": description,
            "metadata": False, "type": "realtime", "keywords": code, "group": "street"}


def service_request(r: dict[str, Any], base_url: str, cfg: OfficeConfig) -> dict[str, Any]:
    vehicles = ", ".join(r["vehicles"])
    notes = r["status"] + (f": {r['last_note']}" if r.get("last_note") else "")
    if r["duplicate_of"]:
        notes = f"duplicate of {r['duplicate_of']}"
    return {
        "service_request_id": r["id"],
        "status": "open" if r["status"] in OPEN_STATUSES else "closed",
        "status_notes": notes,
        "service_name": service(r["label"])["service_name"],
        "service_code": r["label"],
        "description": f"{r['label']} seen {r['sightings']} time(s) by {vehicles} between "
                       f"{r['first_seen']} and {r['last_seen']} (best score "
                       f"{r['score']:.2f})",
        "agency_responsible": cfg.complaints.agency,
        "service_notice": "",
        "requested_datetime": r["first_seen"],
        "updated_datetime": r["updated_at"],
        "expected_datetime": None,
        "address": "",
        "address_id": "",
        "zipcode": "",
        "lat": r["lat"],
        "long": r["lon"],
        "media_url": (base_url.rstrip("/") + f"/images/{r['best_event']}.jpg"
                      if r["has_image"] else ""),
    }
