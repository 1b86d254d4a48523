"""The office's store: sightings, pictures, complaints, units, behind one interface.

:func:`open_store` takes the URL from ``[store] url``:

- ``sqlite:///office.sqlite`` (the default): one file in WAL mode, nothing to install.
  Writers take SQLite's write lock (``BEGIN IMMEDIATE``), so several collectors on one
  machine can share the file.
- ``postgresql://user@host:5432/db``: PostgreSQL with PostGIS. Sightings and complaints
  have a ``geography`` column with a GiST index (kept from lat/lon by a trigger); merging
  looks up neighbours with ``ST_DWithin`` and the map's area filter uses the index. Writers
  that merge take one transaction-level advisory lock, so collectors on several machines
  make the same complaints as one would.

Every write is one transaction, committed before the collector acknowledges the message,
so a collector that dies mid-stream gets the message again and loses nothing. The schema
is versioned (``schema_migrations``); ``migrate`` brings a store up to this code's version
and refuses one that is newer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from office.messages import BadMessage, Event, Picture, UnitReport

log = logging.getLogger("store")

# Any one 64-bit number the office's writers agree on (pg_advisory_xact_lock).
_PG_MERGE_LOCK = 0x7061_7472_6F6C  # "patrol"


class StoreError(Exception):
    """The store cannot be opened or used; the message names the store and the cause."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Filters:
    """The map page's filters, shared by GeoJSON, CSV, heat map and the list."""

    classes: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    since: str | None = None  # ISO date or time: seen at or after
    until: str | None = None  # ISO time: seen before
    bbox: tuple[float, float, float, float] | None = None  # min lon, min lat, max lon, max lat
    vehicle: str | None = None
    ids: tuple[str, ...] = ()
    first_seen_from: str | None = None  # Open311: requested between these times
    first_seen_to: str | None = None
    limit: int = 5000


@dataclass
class Tx:
    """One transaction: ``q`` runs SQL written with ``?`` placeholders on either engine."""

    cur: Any
    engine: str
    stats: dict[str, int] = field(default_factory=dict)

    def q(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        if self.engine == "postgresql":
            sql = sql.replace("?", "%s")
        self.cur.execute(sql, tuple(params))
        if self.cur.description is None:
            return []
        return [dict(r) for r in self.cur.fetchall()]

    def near_sightings(self, label: str, lat: float, lon: float, metres: float
                       ) -> list[dict[str, Any]]:
        """Located sightings of ``label`` within ``metres`` (the candidates for merging)."""
        if self.engine == "postgresql":
            return self.q(
                "SELECT event_id, complaint_id, lat, lon FROM sightings WHERE label = ? "
                "AND complaint_id IS NOT NULL AND ST_DWithin(geog, "
                "ST_SetSRID(ST_MakePoint(?, ?), 4326)::geography, ?)",
                (label, lon, lat, metres))
        from office.geo import box_around, distance_m
        s, w, n, e = box_around(lat, lon, metres)
        rows = self.q(
            "SELECT event_id, complaint_id, lat, lon FROM sightings WHERE label = ? "
            "AND lat BETWEEN ? AND ? AND lon BETWEEN ? AND ? AND complaint_id IS NOT NULL",
            (label, s, n, w, e))
        return [r for r in rows if distance_m(lat, lon, r["lat"], r["lon"]) <= metres]


class Store:
    """The interface both engines share; :func:`open_store` picks one by URL."""

    engine = ""

    def __init__(self, url: str, merge_m: float = 15.0) -> None:
        self.url = url
        self.merge_m = merge_m
        self._local = threading.local()

    # --- engine specifics ---------------------------------------------------------

    def _connect(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def _begin(self, conn: Any) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def bbox_sql(self, bbox: tuple[float, float, float, float]) -> tuple[str, list[float]]:
        w, s, e, n = bbox
        return "c.lat BETWEEN ? AND ? AND c.lon BETWEEN ? AND ?", [s, n, w, e]

    def _run_migration(self, conn: Any, version: int, name: str, sql: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """The URL without a password, for logs."""
        head, sep, tail = self.url.partition("@")
        if sep and ":" in head.split("//", 1)[-1]:
            user = head.split("//", 1)[-1].split(":", 1)[0]
            return f"{head.split('//', 1)[0]}//{user}:***@{tail}"
        return self.url

    # --- connections and transactions -----------------------------------------------

    def conn(self) -> Any:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            self._local.conn = c
        return c

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        conn = self.conn()
        with self._begin(conn) as cur:
            yield Tx(cur, self.engine)

    def read(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[dict[str, Any]]:
        with self.tx() as t:
            return t.q(sql, params)

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    # --- migrations ---------------------------------------------------------------

    def migrate(self) -> int:
        """Apply what this code's migrations add; return the schema version in force."""
        files = sorted(
            (f for f in resources.files("office").joinpath("migrations", self.engine).iterdir()
             if f.name.endswith(".sql")), key=lambda f: f.name)
        known = {int(f.name.split("_", 1)[0]): f for f in files}
        conn = self.conn()
        with self._begin(conn) as cur:
            t = Tx(cur, self.engine)
            t.q("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        current = self.schema_version()
        newest = max(known)
        if current > newest:
            raise StoreError(f"{self.describe()}: schema version {current} is newer than this "
                             f"patrol-office knows ({newest}); upgrade patrol-office")
        for version in sorted(v for v in known if v > current):
            f = known[version]
            log.info("store: applying migration %s", f.name)
            self._run_migration(conn, version, f.name, f.read_text(encoding="utf-8"))
        return self.schema_version()

    def schema_version(self) -> int:
        rows = self.read("SELECT MAX(version) AS v FROM schema_migrations")
        return int(rows[0]["v"] or 0)

    # --- the collector's writes -----------------------------------------------------

    def add_event(self, e: Event) -> bool:
        """Keep a finding and put it into a complaint; False if it was already here."""
        from office.complaints import place_sighting
        with self.tx() as t:
            inserted = t.q(
                "INSERT INTO sightings (event_id, device, captured_at, received_at, label, "
                "score, lat, lon, accuracy_m, image_sha256, crop_sha256, event_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                (e.id, e.device, e.captured_at, now_iso(), e.label, e.score, e.lat, e.lon,
                 e.accuracy_m, e.image_sha256, e.crop_sha256, e.raw))
            if not inserted:
                return False
            # Pictures that came first are checked now that their hash is known.
            for p in t.q("SELECT kind, sha256 FROM pictures WHERE event_id = ?", (e.id,)):
                want = e.image_sha256 if p["kind"] == "image" else e.crop_sha256
                if want == p["sha256"]:
                    t.q("UPDATE pictures SET verified = 1 WHERE event_id = ? AND kind = ?",
                        (e.id, p["kind"]))
                else:
                    t.q("DELETE FROM pictures WHERE event_id = ? AND kind = ?",
                        (e.id, p["kind"]))
                    t.stats["hash_mismatch"] = t.stats.get("hash_mismatch", 0) + 1
            if e.lat is not None and e.lon is not None:
                place_sighting(t, e, self.merge_m)
            self._touch_unit(t, e.device, e.captured_at, e.lat, e.lon)
            mismatches = t.stats.get("hash_mismatch", 0)
        if mismatches:
            raise BadMessage("hash_mismatch",
                             f"a picture of event {e.id} that came first does not match its "
                             "sha256; it was dropped, the event kept")
        return True

    def add_picture(self, p: Picture) -> str:
        """Keep a picture: 'stored', 'waiting' (its event is not here yet) or 'duplicate'.
        Raises :class:`BadMessage` (hash_mismatch) when it is not what its event says."""
        with self.tx() as t:
            rows = t.q("SELECT device, image_sha256, crop_sha256 FROM sightings "
                       "WHERE event_id = ?", (p.event_id,))
            verified = 0
            if rows:
                want = rows[0]["image_sha256" if p.kind == "image" else "crop_sha256"]
                if rows[0]["device"] != p.device:
                    raise BadMessage("device_mismatch",
                                     f"{p.kind} of {rows[0]['device']}'s event from {p.device}")
                if want != p.sha256:
                    raise BadMessage("hash_mismatch",
                                     f"{p.kind} of event {p.event_id}: sha256 {p.sha256[:12]}… "
                                     f"but the event says {str(want)[:12]}…")
                verified = 1
            added = t.q(
                "INSERT INTO pictures (event_id, kind, device, sha256, data, received_at, "
                "verified) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id, kind) DO NOTHING RETURNING event_id",
                (p.event_id, p.kind, p.device, p.sha256, p.data, now_iso(), verified))
        if not added:
            return "duplicate"
        return "stored" if verified else "waiting"

    def add_report(self, r: UnitReport) -> None:
        """A unit's status, telemetry or config report: the newest replaces the one before."""
        column = {"status": "status_json", "telemetry": "telemetry_json",
                  "config_report": "config_json"}[r.kind]
        at = now_iso()
        with self.tx() as t:
            self._touch_unit(t, r.device, None, None, None)
            t.q(f"UPDATE units SET {column} = ? WHERE device = ?",  # column: one of three
                (json.dumps(r.data, ensure_ascii=False), r.device))
            if r.kind == "telemetry":
                t.q("UPDATE units SET telemetry_at = ? WHERE device = ?", (at, r.device))
                pos = (r.data.get("gps") or {}).get("position") if isinstance(
                    r.data.get("gps"), dict) else None
                if isinstance(pos, dict) and _is_coord(pos.get("lat"), pos.get("lon")):
                    t.q("UPDATE units SET lat = ?, lon = ?, position_at = ? WHERE device = ?",
                        (pos["lat"], pos["lon"], str(r.data.get("at") or at), r.device))

    def _touch_unit(self, t: Tx, device: str, at: str | None, lat: float | None,
                    lon: float | None) -> None:
        t.q("INSERT INTO units (device, last_seen) VALUES (?, ?) ON CONFLICT (device) "
            "DO UPDATE SET last_seen = excluded.last_seen", (device, now_iso()))
        if at is not None and lat is not None:
            # A finding's place is the unit's place then; newer than what is kept wins.
            t.q("UPDATE units SET lat = ?, lon = ?, position_at = ? WHERE device = ? "
                "AND (position_at IS NULL OR position_at < ?)", (lat, lon, at, device, at))

    def count_bad(self, reason: str, topic: str, detail: str) -> None:
        with self.tx() as t:
            t.q("INSERT INTO bad_messages (reason, count, last_at, last_topic, last_detail) "
                "VALUES (?, 1, ?, ?, ?) ON CONFLICT (reason) DO UPDATE SET "
                "count = bad_messages.count + 1, last_at = excluded.last_at, "
                "last_topic = excluded.last_topic, last_detail = excluded.last_detail",
                (reason, now_iso(), topic[:300], detail[:500]))

    # --- the office's reads -------------------------------------------------------

    def complaints(self, f: Filters) -> list[dict[str, Any]]:
        where, params = ["1 = 1"], []

        def add(sql: str, *values: Any) -> None:
            where.append(sql)
            params.extend(values)

        def among(column: str, values: Sequence[str]) -> None:
            add(f"{column} IN ({','.join('?' * len(values))})", *values)

        if f.classes:
            among("c.label", f.classes)
        if f.statuses:
            among("c.status", f.statuses)
        else:  # a duplicate is a pointer to its original, not a place to act on
            add("c.status <> 'duplicate'")
        if f.ids:
            among("c.id", f.ids)
        for value, sql in ((f.since, "c.last_seen >= ?"), (f.until, "c.first_seen < ?"),
                           (f.first_seen_from, "c.first_seen >= ?"),
                           (f.first_seen_to, "c.first_seen <= ?"),
                           (f.vehicle, "EXISTS (SELECT 1 FROM sightings s WHERE "
                                       "s.complaint_id = c.id AND s.device = ?)")):
            if value:
                add(sql, value)
        if f.bbox:
            sql, p = self.bbox_sql(f.bbox)
            add(sql, *p)
        rows = self.read(
            "SELECT c.*, (SELECT COUNT(*) FROM pictures p WHERE p.event_id = c.best_event "
            "AND p.kind = 'image') AS has_image, (SELECT COUNT(*) FROM pictures p WHERE "
            "p.event_id = c.best_event AND p.kind = 'crop') AS has_crop, (SELECT note FROM "
            "complaint_history h WHERE h.complaint_id = c.id ORDER BY h.n DESC LIMIT 1) "
            f"AS last_note FROM complaints c WHERE {' AND '.join(where)} "
            "ORDER BY c.last_seen DESC, c.id LIMIT ?", [*params, f.limit])
        return [_complaint_row(r) for r in rows]

    def complaint(self, complaint_id: str) -> dict[str, Any] | None:
        found = self.complaints(Filters(ids=(complaint_id,), statuses=_ALL_STATUSES))
        if not found:
            return None
        c = found[0]
        c["sightings_list"] = self.read(
            "SELECT s.event_id, s.device, s.captured_at, s.score, s.lat, s.lon, s.accuracy_m, "
            "(SELECT COUNT(*) FROM pictures p WHERE p.event_id = s.event_id AND p.kind = "
            "'image') AS has_image, (SELECT COUNT(*) FROM pictures p WHERE p.event_id = "
            "s.event_id AND p.kind = 'crop') AS has_crop FROM sightings s "
            "WHERE s.complaint_id = ? ORDER BY s.captured_at, s.event_id", (complaint_id,))
        c["history"] = self.read(
            "SELECT status, by_user AS by, at, note FROM complaint_history "
            "WHERE complaint_id = ? ORDER BY n", (complaint_id,))
        return c

    def picture(self, event_id: str, kind: str) -> bytes | None:
        rows = self.read("SELECT data FROM pictures WHERE event_id = ? AND kind = ?",
                         (event_id, kind))
        return bytes(rows[0]["data"]) if rows else None

    def units(self) -> list[dict[str, Any]]:
        rows = self.read("SELECT * FROM units ORDER BY device")
        for r in rows:
            for k in ("status_json", "telemetry_json", "config_json"):
                r[k] = json.loads(r[k]) if r[k] else None
        return rows

    def bad_counts(self) -> dict[str, int]:
        return {r["reason"]: int(r["count"])
                for r in self.read("SELECT reason, count FROM bad_messages ORDER BY reason")}

    def counts(self) -> dict[str, int]:
        r = self.read("SELECT (SELECT COUNT(*) FROM sightings) AS sightings, "
                      "(SELECT COUNT(*) FROM pictures) AS pictures, "
                      "(SELECT COUNT(*) FROM complaints) AS complaints, "
                      "(SELECT COUNT(*) FROM units) AS units")[0]
        return {k: int(v) for k, v in r.items()}


_ALL_STATUSES = ("new", "confirmed", "dispatched", "resolved", "rejected", "duplicate")


def _is_coord(lat: Any, lon: Any) -> bool:
    return (isinstance(lat, int | float) and isinstance(lon, int | float)
            and -90 <= lat <= 90 and -180 <= lon <= 180)


def _complaint_row(r: dict[str, Any]) -> dict[str, Any]:
    r["vehicles"] = json.loads(r["vehicles"])
    r["has_image"] = bool(r["has_image"])
    r["has_crop"] = bool(r["has_crop"])
    r.pop("geog", None)
    return r


class SqliteStore(Store):
    engine = "sqlite"

    def __init__(self, url: str, merge_m: float = 15.0) -> None:
        super().__init__(url, merge_m)
        self.path = Path(url.removeprefix("sqlite:///"))
        if not self.path.parent.is_dir():
            raise StoreError(f"{url}: the folder {self.path.parent} does not exist")

    def _connect(self) -> sqlite3.Connection:
        try:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                check_same_thread=False)
            c.row_factory = sqlite3.Row
            c.execute("PRAGMA journal_mode=WAL")
            # FULL: a message is acknowledged after its commit; that commit must survive.
            c.execute("PRAGMA synchronous=FULL")
            c.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as e:
            raise StoreError(f"{self.url}: {e}") from None
        return c

    @contextmanager
    def _begin(self, conn: sqlite3.Connection) -> Iterator[Any]:
        # IMMEDIATE: take the write lock first, so a merge sees every committed sighting.
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"{self.url}: {e}") from None
        try:
            yield conn.cursor()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _run_migration(self, conn: sqlite3.Connection, version: int, name: str,
                       sql: str) -> None:
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{sql}\nINSERT INTO schema_migrations VALUES "
            f"({version}, '{name}', '{now_iso()}');\nCOMMIT;")


class PostgresStore(Store):
    engine = "postgresql"

    def _connect(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row
        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=10)
        except psycopg.Error as e:
            raise StoreError(f"{self.describe()}: {str(e).strip().splitlines()[0]}") from None

    @contextmanager
    def _begin(self, conn: Any) -> Iterator[Any]:
        import psycopg
        try:
            with conn.transaction(), conn.cursor() as cur:
                # One writer merges at a time across every collector (see the module doc).
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MERGE_LOCK,))
                yield cur
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            self._local.conn = None  # a dead connection is made again next time
            raise StoreError(f"{self.describe()}: {str(e).strip().splitlines()[0]}") from None

    def bbox_sql(self, bbox: tuple[float, float, float, float]) -> tuple[str, list[float]]:
        return "ST_Intersects(c.geog, ST_MakeEnvelope(?, ?, ?, ?, 4326)::geography)", list(bbox)

    def _run_migration(self, conn: Any, version: int, name: str, sql: str) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_MERGE_LOCK,))
            cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (version,))
            if cur.fetchone():
                return  # another collector applied it while this one waited
            cur.execute(sql.encode())
            cur.execute("INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                        (version, name, now_iso()))


def open_store(url: str, merge_m: float = 15.0) -> Store:
    """The store at ``url``, migrated to this code's schema."""
    cls: type[Store] = SqliteStore if url.startswith("sqlite:") else PostgresStore
    store = cls(url.replace("postgres://", "postgresql://", 1), merge_m)
    try:
        store.migrate()
    except sqlite3.Error as e:
        raise StoreError(f"{url}: {e}") from None
    return store
