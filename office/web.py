"""The map page and the office's interfaces, served by Flask (through waitress).

Routes (docs/office.md has the reference):

- ``/`` the map page (``static/``: Leaflet vendored from npm, no CDN);
- ``/api/config``, ``/api/complaints.geojson``, ``/api/complaints.csv``, ``/api/heat``,
  ``/api/complaints/<id>``, ``/api/fleet``, ``/api/stats``;
- ``/images/<event_id>.jpg`` and ``/images/<event_id>/crop.jpg``;
- ``POST /api/login``, ``/api/logout``, ``/api/complaints/<id>/status|merge|split`` (after
  a login; JSON bodies only, which a form on another site cannot send);
- ``/open311/v2/…`` (``open311.py``).

Every bad input answers a 4xx with ``{"error": "…"}`` naming the problem, never a 500.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, request, send_from_directory, session
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from office.collector import Collector
from office.complaints import WorkflowError, merge, set_status, split
from office.config import STATUSES, OfficeConfig
from office.messages import UUID
from office.store import Filters, Store, StoreError

CLASS_RE = re.compile(r"^[\w.-]{1,64}$")
DEVICE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ID_RE = re.compile(UUID)
# Compared against when the user is unknown, so that a wrong name takes as long as a
# wrong password (no list of user names by timing).
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


def static_dir() -> str:
    return str(resources.files("office").joinpath("static"))


def create_app(cfg: OfficeConfig, store: Store, collector: Collector | None = None) -> Flask:
    app = Flask("office", static_folder=None)
    app.config.update(
        SECRET_KEY=(cfg.http.secret_key.get_secret_value() if cfg.http.secret_key
                    else secrets.token_hex(32)),
        MAX_CONTENT_LENGTH=cfg.limits.max_body_kb * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # Korean stays readable
    app.json.sort_keys = False  # type: ignore[attr-defined]
    users = {u.name: u.password_hash for u in cfg.users}
    csp = content_security_policy(cfg)

    @app.after_request
    def _headers(resp: Response) -> Response:
        # Pictures come from the field: never let a browser take one for a page or script.
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Content-Security-Policy"] = csp
        resp.headers["Referrer-Policy"] = "same-origin"
        return resp

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(e)), e.status

    @app.errorhandler(WorkflowError)
    def _workflow(e: WorkflowError) -> tuple[Response, int]:
        return jsonify(error=str(e)), e.status

    @app.errorhandler(StoreError)
    def _store(e: StoreError) -> tuple[Response, int]:
        # The database is restarting or gone: the page says so and tries again later.
        return jsonify(error=f"the store is unavailable: {e}"), 503

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException) -> tuple[Response, int]:
        return jsonify(error=e.description or e.name), e.code or 500

    @app.get("/")
    def index() -> Response:
        return send_from_directory(static_dir(), "index.html")

    @app.get("/static/<path:path>")
    def static(path: str) -> Response:
        return send_from_directory(static_dir(), path)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(ok=True, collector=collector.connected if collector else None)

    @app.get("/api/config")
    def config() -> Response:
        tiles = cfg.map.tiles
        return jsonify(center=list(cfg.map.center), zoom=cfg.map.zoom,
                       tiles={"url": tiles.url, "attribution": tiles.attribution}
                       if tiles else None,
                       classes=_classes(cfg), statuses=list(STATUSES), user=session.get("user"))

    @app.get("/api/complaints.geojson")
    def geojson() -> Response:
        rows = store.complaints(filters_from(request.args))
        return jsonify(type="FeatureCollection", features=[feature(r) for r in rows])

    @app.get("/api/complaints.csv")
    def complaints_csv() -> Response:
        rows = store.complaints(filters_from(request.args))
        return Response(to_csv(rows, request.host_url), mimetype="text/csv", headers={
            "Content-Disposition": "attachment; filename=complaints.csv"})

    @app.get("/api/heat")
    def heat() -> Response:
        rows = store.complaints(filters_from(request.args))
        return jsonify([[r["lat"], r["lon"], r["sightings"] or 1] for r in rows])

    @app.get("/api/complaints/<cid>")
    def complaint(cid: str) -> Response:
        c = store.complaint(_id(cid))
        if c is None:
            raise BadRequest(f"no complaint {cid}", 404)
        return jsonify(detail(c))

    @app.get("/api/fleet")
    def fleet() -> Response:
        return jsonify(fleet_view(store, cfg))

    @app.get("/api/stats")
    def stats() -> Response:
        return jsonify(store=store.counts(), bad_messages=store.bad_counts(),
                       collector=collector.stats() if collector else None)

    @app.get("/images/<event_id>.jpg")
    def image(event_id: str) -> Response:
        return _picture(store, event_id, "image")

    @app.get("/images/<event_id>/crop.jpg")
    def crop(event_id: str) -> Response:
        return _picture(store, event_id, "crop")

    @app.post("/api/login")
    def login() -> Response:
        body = _json_body()
        name, password = body.get("user"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise BadRequest("user and password are required strings")
        ok = check_password_hash(users.get(name, _DUMMY_HASH), password)
        if not ok or name not in users:
            raise BadRequest("wrong user name or password", 401)
        session.clear()
        session["user"] = name
        return jsonify(user=name)

    @app.post("/api/logout")
    def logout() -> Response:
        session.clear()
        return jsonify(user=None)

    @app.post("/api/complaints/<cid>/status")
    def change_status(cid: str) -> Response:
        who, body = _officer(), _json_body()
        status = body.get("status")
        if not isinstance(status, str):
            raise BadRequest(f"status is required: one of {', '.join(STATUSES)}")
        dup = body.get("duplicate_of")
        set_status(store, _id(cid), status, who, _note(body),
                   _id(dup) if isinstance(dup, str) else None)
        return jsonify(detail(store.complaint(_id(cid)) or {}))

    @app.post("/api/complaints/<cid>/merge")
    def merge_into(cid: str) -> Response:
        who, body = _officer(), _json_body()
        into = body.get("into")
        if not isinstance(into, str):
            raise BadRequest("into is required: the original complaint's id")
        merge(store, _id(cid), _id(into), who, _note(body))
        return jsonify(detail(store.complaint(_id(into)) or {}))

    @app.post("/api/complaints/<cid>/split")
    def split_out(cid: str) -> Response:
        who, body = _officer(), _json_body()
        ids = body.get("sightings")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest("sightings is required: a list of event ids")
        new_id = split(store, _id(cid), [_id(i) for i in ids], who, _note(body))
        return jsonify(detail(store.complaint(new_id) or {}))

    from office.open311 import blueprint
    app.register_blueprint(blueprint(cfg, store), url_prefix="/open311/v2")
    return app


def content_security_policy(cfg: OfficeConfig) -> str:
    """Scripts and data from the office alone; pictures also from the tile server."""
    tiles = ""
    if cfg.map.tiles:
        parts = urlsplit(cfg.map.tiles.url.replace("{s}", "a"))
        host = parts.netloc.split(".", 1)[1] if "{s}" in cfg.map.tiles.url else parts.netloc
        tiles = f" {parts.scheme}://{'*.' if '{s}' in cfg.map.tiles.url else ''}{host}"
    return ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob:{tiles}; connect-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'self'")


# --- request parsing ----------------------------------------------------------------------

def _json_body() -> dict[str, Any]:
    if not request.is_json:
        raise BadRequest("send JSON (Content-Type: application/json)", 415)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _officer() -> str:
    who = session.get("user")
    if not who:
        raise BadRequest("log in first", 401)
    return str(who)


def _note(body: dict[str, Any]) -> str:
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > 2000:
        raise BadRequest("note must be text of at most 2000 characters")
    return note


def _id(value: str) -> str:
    if not ID_RE.match(value):
        raise BadRequest(f"{value[:80]!r} is not a complaint or event id")
    return value.lower()


def _classes(cfg: OfficeConfig) -> list[str]:
    extra = [c for c in ("bin", "sign") if c not in cfg.complaints.classes]
    return [*cfg.complaints.classes, *extra]


def _list(args: Any, key: str) -> tuple[str, ...]:
    raw = args.get(key, "")
    return tuple(v for v in (s.strip() for s in raw.split(",")) if v)


def _day(value: str, key: str, end: bool) -> str:
    try:
        if len(value) == 10:
            d = datetime.fromisoformat(value).replace(tzinfo=UTC)
            return _iso(d + timedelta(days=1) if end else d)
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return _iso(t if t.tzinfo else t.replace(tzinfo=UTC))
    except ValueError:
        raise BadRequest(f"{key}={value[:40]!r}: not a date (YYYY-MM-DD) or ISO time") from None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def filters_from(args: Any) -> Filters:
    """The page's filters from query parameters; a bad one is a 400 naming it."""
    classes = _list(args, "class")
    for c in classes:
        if not CLASS_RE.match(c):
            raise BadRequest(f"class={c[:40]!r}: not a class name")
    statuses = _list(args, "status")
    for s in statuses:
        if s not in STATUSES:
            raise BadRequest(f"status={s[:40]!r}: one of {', '.join(STATUSES)}")
    bbox = None
    if args.get("bbox"):
        try:
            w, s, e, n = (float(v) for v in args["bbox"].split(","))
        except ValueError:
            raise BadRequest("bbox: four numbers, min lon,min lat,max lon,max lat") from None
        if not (-180 <= w <= e <= 180 and -90 <= s <= n <= 90):
            raise BadRequest("bbox: min lon,min lat,max lon,max lat within the world, "
                             "min before max")
        bbox = (w, s, e, n)
    vehicle = args.get("vehicle") or None
    if vehicle and not DEVICE_RE.match(vehicle):
        raise BadRequest(f"vehicle={vehicle[:40]!r}: not a device id")
    limit = args.get("limit", "5000")
    if not limit.isdigit() or not 1 <= int(limit) <= 5000:
        raise BadRequest("limit: a whole number from 1 to 5000")
    since = _day(args["from"], "from", end=False) if args.get("from") else None
    until = _day(args["to"], "to", end=True) if args.get("to") else None
    return Filters(classes=classes, statuses=statuses, since=since, until=until, bbox=bbox,
                   vehicle=vehicle, limit=int(limit))


# --- responses ------------------------------------------------------------------------------

def image_urls(event_id: str, has_image: bool, has_crop: bool) -> dict[str, str | None]:
    return {"image_url": f"/images/{event_id}.jpg" if has_image else None,
            "crop_url": f"/images/{event_id}/crop.jpg" if has_crop else None}


def properties(r: dict[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "class": r["label"], "status": r["status"], "score": r["score"],
            "first_seen": r["first_seen"], "last_seen": r["last_seen"],
            "sightings": r["sightings"], "vehicles": r["vehicles"],
            **image_urls(r["best_event"], r["has_image"], r["has_crop"]),
            "duplicate_of": r["duplicate_of"], "follows": r["follows"],
            "updated_at": r["updated_at"]}


def feature(r: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "id": r["id"],
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": properties(r)}


def detail(c: dict[str, Any]) -> dict[str, Any]:
    if not c:
        return {}
    out = properties(c) | {"lat": c["lat"], "lon": c["lon"], "history": c["history"]}
    out["sightings_list"] = [
        {k: s[k] for k in ("event_id", "device", "captured_at", "score", "lat", "lon",
                           "accuracy_m")} | image_urls(s["event_id"], bool(s["has_image"]),
                                                       bool(s["has_crop"]))
        for s in c["sightings_list"]]
    return out


CSV_COLUMNS = ("id", "class", "status", "lat", "lon", "first_seen", "last_seen", "sightings",
               "vehicles", "score", "duplicate_of", "follows", "updated_at", "image_url")


def to_csv(rows: list[dict[str, Any]], base_url: str) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        p = properties(r) | {"lat": r["lat"], "lon": r["lon"]}
        p["vehicles"] = " ".join(p["vehicles"])
        if p["image_url"]:
            p["image_url"] = base_url.rstrip("/") + p["image_url"]
        w.writerow([_cell(p[k]) for k in CSV_COLUMNS])
    return out.getvalue()


def _cell(v: Any) -> Any:
    # A spreadsheet runs a cell that starts like a formula; device ids come from the field.
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return "" if v is None else v


def fleet_view(store: Store, cfg: OfficeConfig) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for u in store.units():
        status = u["status_json"] or {}
        last = datetime.fromisoformat(u["last_seen"].replace("Z", "+00:00"))
        fresh = (now - last).total_seconds() <= cfg.fleet.offline_after_s
        tele = u["telemetry_json"]
        out.append({
            "device": u["device"],
            "online": status.get("state") == "online" and fresh,
            "state": status.get("state"),
            "last_seen": u["last_seen"],
            "position": {"lat": u["lat"], "lon": u["lon"], "at": u["position_at"]}
            if u["lat"] is not None else None,
            "telemetry": tele,
            "config_version": status.get("config_version",
                                         (tele or {}).get("config_version")),
            "config_hash": status.get("config_hash"),
            "agent_version": status.get("agent_version"),
            "model": status.get("model"),
            "config_report": u["config_json"],
        })
    return out


def _picture(store: Store, event_id: str, kind: str) -> Response:
    data = store.picture(_id(event_id), kind)
    if data is None:
        abort(404, description=f"no {kind} for event {event_id}")
    return Response(data, mimetype="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})
