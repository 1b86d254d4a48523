"""The SQLite outbox: an event exists once it is committed here.

From the moment :meth:`Store.add` returns, the event and its JPEGs (the full
redacted picture and, since schema 2, the object's crop) are on the SD card and
will reach the broker at least once, whatever happens to the network, the
broker, the process or the power. The uplink reads pending rows oldest
first and marks them delivered only when the broker has acknowledged them.
The agent's own findings come in two commits: the record at once, its redacted
picture later (:class:`~agent.records.Picture`; docs/store.md); a finding is not
pending until its picture is in, or released as never coming.

Durability (see docs/store.md for the reasoning):

* WAL journal: readers (the uplink, the CLI) never block the writer, and a
  crash or power cut leaves the database consistent.
* ``synchronous=FULL`` on the connection that adds events: every commit fsyncs
  the WAL, so a committed event survives ``kill -9`` *and* a power cut. Events
  are rare (a few a minute), so one fsync per event costs nothing that matters.
* ``synchronous=NORMAL`` is allowed for the uplink's bookkeeping connection:
  losing a "delivered" mark on a power cut only means the event is sent once
  more, which the at-least-once contract already allows.

Each thread opens its own :class:`Store`; SQLite connections are not shared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

from agent.records import Event, PastFinding, Picture, Position, iso_utc, parse_iso_utc

SCHEMA_VERSION = 6

log = logging.getLogger("store")

Synchronous = Literal["FULL", "NORMAL"]


class StoreError(Exception):
    """The outbox cannot be opened or used; the message says why."""


def _migrate_1(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE events (
            id TEXT PRIMARY KEY,
            captured_utc TEXT NOT NULL,
            captured_mono REAL NOT NULL,
            label TEXT NOT NULL,
            score REAL NOT NULL,
            bbox TEXT NOT NULL,
            lat REAL,
            lon REAL,
            position_accuracy_m REAL,
            position_source TEXT,
            model TEXT NOT NULL DEFAULT '',
            config_version INTEGER NOT NULL DEFAULT 0,
            attributes TEXT NOT NULL DEFAULT '{}',
            created_utc TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered')),
            attempts INTEGER NOT NULL DEFAULT 0,
            last_attempt_utc TEXT,
            delivered_utc TEXT
        )""")
    db.execute("CREATE INDEX events_state_id ON events (state, id)")
    db.execute("CREATE INDEX events_state_created ON events (state, created_utc)")
    db.execute("CREATE INDEX events_delivered ON events (delivered_utc) WHERE state = 'delivered'")
    db.execute("""
        CREATE TABLE images (
            event_id TEXT PRIMARY KEY REFERENCES events (id) ON DELETE CASCADE,
            jpeg BLOB NOT NULL,
            sha256 TEXT NOT NULL
        )""")


def _migrate_2(db: sqlite_utils.Database) -> None:
    # The object's crop lives beside its full picture, so it shares the image's
    # lifetime (ON DELETE CASCADE, pruning) and is written in the same transaction.
    # NULL: events stored before crops existed have none and are delivered without.
    # Its hash is stored, like the image's, so what is published is the hash taken
    # at commit time: a blob damaged on the SD card later shows up at the receiver.
    db.execute("ALTER TABLE images ADD COLUMN crop BLOB")
    db.execute("ALTER TABLE images ADD COLUMN crop_sha256 TEXT")


def _migrate_3(db: sqlite_utils.Database) -> None:
    # When a picture was evicted to keep the outbox within its quota (store.quota_mb):
    # its blobs are emptied and the record stays, to be delivered without them.
    db.execute("ALTER TABLE images ADD COLUMN evicted_utc TEXT")


def _migrate_4(db: sqlite_utils.Database) -> None:
    # A metered link (link.* in the config): a finding may be delivered while its full
    # picture is held back for a cheaper link or the office's request (1 while it waits).
    # Bytes sent per day and month are kept here so that a restart does not reset them.
    db.execute("ALTER TABLE images ADD COLUMN held INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX images_held ON images (event_id) WHERE held = 1")
    db.execute("CREATE TABLE link_usage (period TEXT PRIMARY KEY, bytes INTEGER NOT NULL)")


def _migrate_5(db: sqlite_utils.Database) -> None:
    # A unit starting on a week's backlog reads the findings of the last dedup window
    # (recent_findings): by capture time, without scanning every row (patrol-agent bench).
    db.execute("CREATE INDEX events_captured ON events (captured_utc)")


def _migrate_6(db: sqlite_utils.Database) -> None:
    # A finding's record is committed as soon as it is decided, its redacted picture some
    # time later (Picture): 1 while it is being made. Such a finding is not sent yet.
    db.execute("ALTER TABLE images ADD COLUMN picture_pending INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX images_picture_pending ON images (event_id) "
               "WHERE picture_pending = 1")


# Forward migrations: MIGRATIONS[n] takes a database at schema n to n + 1.
# Append only; never edit a released step.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_migrate_1, _migrate_2,
                                                               _migrate_3, _migrate_4,
                                                               _migrate_5, _migrate_6]
assert len(MIGRATIONS) == SCHEMA_VERSION


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as the outbox holds it: the event plus its delivery state."""

    event: Event
    state: str
    attempts: int
    created_utc: datetime
    last_attempt_utc: datetime | None
    delivered_utc: datetime | None
    image_sha256: str
    crop_sha256: str | None = None
    """None exactly when the event has no crop."""
    evicted_utc: datetime | None = None
    """When its pictures were evicted to keep the outbox within its quota."""


@dataclass
class Eviction:
    """What :meth:`Store.enforce_quota` removed, and by how much the outbox is still over."""

    delivered: int = 0
    """Delivered findings deleted, with their pictures (those delivered longest ago first)."""
    images: int = 0
    """Undelivered findings whose pictures were emptied (oldest first); the records stay."""
    over_bytes: int = 0


class Store:
    """One connection to the outbox. Not to be shared between threads."""

    def __init__(self, path: str | Path, synchronous: Synchronous = "FULL",
                 busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.unreadable: set[str] = set()
        """Ids of events whose rows cannot be read back (damaged on the card): skipped."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open store {self.path}: {e}") from None
        self.db = sqlite_utils.Database(conn)
        try:
            self._setup(synchronous)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"store {self.path} is unusable: {e}") from None

    def _setup(self, synchronous: Synchronous) -> None:
        db = self.db
        # auto_vacuum must be chosen before the first table exists; it lets
        # prune() give space back to the SD card without a full VACUUM. Only then:
        # on an existing outbox it changes nothing but waits for the write lock, and
        # another process holding that lock must not keep the agent from starting.
        if db.execute("PRAGMA user_version").fetchone()[0] == 0:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"store {self.path}: cannot switch to WAL (got {mode})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _migrate(self) -> None:
        db = self.db
        current = db.execute("PRAGMA user_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {current}, this agent knows up to "
                f"{SCHEMA_VERSION}: upgrade the agent, do not delete the store")
        while current < SCHEMA_VERSION:
            # IMMEDIATE: two processes opening a new store must not both migrate.
            db.execute("BEGIN IMMEDIATE")
            try:
                now = db.execute("PRAGMA user_version").fetchone()[0]
                if now == current:
                    MIGRATIONS[current](db)
                    db.execute(f"PRAGMA user_version = {current + 1}")
                db.execute("COMMIT")
            except BaseException:
                db.rollback()
                raise
            current = db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction. IMMEDIATE takes the write lock up front, so two
        writers queue on the busy timeout instead of one failing at once with
        "database is locked" when a read would have to turn into a write."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.rollback()
            raise
        self.db.execute("COMMIT")

    def add(self, event: Event) -> None:
        """Commit one event with its JPEG (and crop), atomically and durably."""
        self.add_many([event])

    def add_many(self, events: list[Event], pictures: list[Picture] | None = None,
                 pictures_to_follow: frozenset[str] | set[str] = frozenset()) -> None:
        """Commit several events, and pictures of events committed before, in one
        transaction (one fsync for all). An event whose id is in ``pictures_to_follow`` is
        committed without its picture, which :class:`Picture` brings later; until then
        it is not :meth:`pending` (not sent)."""
        now = iso_utc(datetime.now(UTC))
        with self._write():
            for ev in events:
                self.db["events"].insert(_event_row(ev, now))
                crop = ev.crop_jpeg
                self.db["images"].insert({
                    "event_id": ev.id,
                    "jpeg": ev.image_jpeg,
                    "sha256": hashlib.sha256(ev.image_jpeg).hexdigest(),
                    "crop": crop,
                    "crop_sha256": hashlib.sha256(crop).hexdigest() if crop is not None else None,
                    "picture_pending": int(ev.id in pictures_to_follow),
                })
            for pic in pictures or ():
                self._attach(pic)

    def _attach(self, pic: Picture) -> None:
        crop = pic.crop_jpeg
        done = self.db.execute(
            "UPDATE images SET jpeg = ?, sha256 = ?, crop = ?, crop_sha256 = ?, "
            "picture_pending = 0 WHERE event_id = ? AND picture_pending = 1",
            [pic.image_jpeg, hashlib.sha256(pic.image_jpeg).hexdigest(), crop,
             hashlib.sha256(crop).hexdigest() if crop is not None else None, pic.event_id])
        if done.rowcount != 1:
            log.warning("finding %s has no picture waiting in the outbox (released at a "
                        "start, or deleted); its picture is dropped", pic.event_id)
            return
        if pic.attributes:
            row = self.db.execute("SELECT attributes FROM events WHERE id = ?",
                                  [pic.event_id]).fetchone()
            attrs = {**json.loads(row[0]), **pic.attributes}
            self.db.execute("UPDATE events SET attributes = ? WHERE id = ?",
                            [json.dumps(attrs, sort_keys=True, default=str), pic.event_id])

    def release_pictures(self, reason: str) -> list[str]:
        """Findings whose pictures were still being made when the agent stopped (a crash,
        a power cut): no process will bring them now. They are sent without a picture,
        their ``redaction`` saying why; their ids are returned. Only when no other
        agent writes this outbox (at the writer's start)."""
        if not self.pictures_pending():
            return []  # the usual case: no write, no wait for another process's lock
        with self._write():
            ids = [r[0] for r in self.db.execute(
                "SELECT event_id FROM images WHERE picture_pending = 1").fetchall()]
            for i in ids:
                self._attach(Picture.withheld(i, reason))
        return ids

    def mark_attempted(self, ids: list[str]) -> None:
        if not ids:
            return
        now = iso_utc(datetime.now(UTC))
        with self._write():
            self.db.conn.executemany(
                "UPDATE events SET attempts = attempts + 1, last_attempt_utc = ? WHERE id = ?",
                [(now, i) for i in ids])

    def mark_delivered(self, ids: list[str], images_held: set[str] | frozenset[str] = frozenset()
                       ) -> None:
        """Only for ids whose messages the broker has acknowledged; ``images_held``: those
        delivered without their full picture, which waits (:meth:`held_images`)."""
        if not ids:
            return
        now = iso_utc(datetime.now(UTC))
        with self._write():
            self.db.conn.executemany(
                "UPDATE events SET state = 'delivered', delivered_utc = ? "
                "WHERE id = ? AND state = 'pending'",
                [(now, i) for i in ids])
            held = [(i,) for i in ids if i in images_held]
            if held:
                self.db.conn.executemany(
                    "UPDATE images SET held = 1 WHERE event_id = ? AND evicted_utc IS NULL",
                    held)

    def held_images(self, limit: int, exclude: set[str] | frozenset[str] = frozenset()
                    ) -> list[tuple[str, bytes, str]]:
        """Full pictures held back from delivered findings, oldest first:
        (event id, JPEG, sha256)."""
        rows = self.db.execute(
            "SELECT event_id, jpeg, sha256 FROM images WHERE held = 1 AND evicted_utc IS NULL "
            "ORDER BY event_id LIMIT ?", [limit + len(exclude)]).fetchall()
        return [(i, bytes(j), h) for i, j, h in rows if i not in exclude][:limit]

    def held_image_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM images WHERE held = 1 "
                               "AND evicted_utc IS NULL").fetchone()[0]

    def mark_images_sent(self, ids: list[str]) -> None:
        """Held pictures the broker has acknowledged."""
        if ids:
            with self._write():
                self.db.conn.executemany("UPDATE images SET held = 0 WHERE event_id = ?",
                                         [(i,) for i in ids])

    def add_link_usage(self, periods: list[str], nbytes: int) -> None:
        """Count bytes sent against each period ('day:2026-11-30', 'month:2026-11')."""
        with self._write():
            self.db.conn.executemany(
                "INSERT INTO link_usage (period, bytes) VALUES (?, ?) "
                "ON CONFLICT (period) DO UPDATE SET bytes = bytes + excluded.bytes",
                [(p, nbytes) for p in periods])

    def link_usage(self, period: str) -> int:
        row = self.db.execute("SELECT bytes FROM link_usage WHERE period = ?",
                              [period]).fetchone()
        return int(row[0]) if row else 0

    def size_bytes(self) -> int:
        """What the outbox takes on the card: the database and its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal"))
                   if p.exists())

    def enforce_quota(self, quota_bytes: int, undelivered_images: bool = True,
                      batch: int = 20) -> Eviction:
        """Bring the outbox within ``quota_bytes``: first delete the delivered findings
        delivered longest ago; then, if ``undelivered_images``, empty the pictures of
        the oldest undelivered findings (their records stay and are delivered without
        them). An undelivered record is never deleted: if only those are left, the outbox
        stays over its quota and ``over_bytes`` says by how much."""
        out = Eviction()
        while self.size_bytes() > quota_bytes:
            with self._write():
                ids = [r[0] for r in self.db.execute(
                    "SELECT id FROM events WHERE state = 'delivered' "
                    "ORDER BY delivered_utc, id LIMIT ?", [batch])]
                if ids:
                    self.db.conn.executemany("DELETE FROM events WHERE id = ?",
                                             [(i,) for i in ids])
            out.delivered += len(ids)
            if not ids and undelivered_images:
                now = iso_utc(datetime.now(UTC))
                with self._write():
                    ids = [r[0] for r in self.db.execute(
                        "SELECT e.id FROM events e JOIN images i ON i.event_id = e.id "
                        "WHERE e.state = 'pending' AND i.evicted_utc IS NULL "
                        "AND i.picture_pending = 0 "  # nothing to evict yet
                        "ORDER BY e.id LIMIT ?", [batch])]
                    self.db.conn.executemany(
                        "UPDATE images SET jpeg = X'', crop = NULL, crop_sha256 = NULL, "
                        "evicted_utc = ? WHERE event_id = ?", [(now, i) for i in ids])
                out.images += len(ids)
            if not ids:
                break
            self._shrink()
        out.over_bytes = max(0, self.size_bytes() - quota_bytes)
        return out

    def _shrink(self) -> None:
        """Give freed pages back to the card (auto_vacuum) and fold the log into the file."""
        self._vacuum()
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _vacuum(self) -> None:
        """Give the free pages back to the card. Through executescript: sqlite3's execute
        steps this pragma once, and each step frees a single page."""
        self.db.conn.executescript("PRAGMA incremental_vacuum;")

    def purge_delivered(self) -> int:
        """Delete every delivered event and its pictures now (the office has them)."""
        with self._write():
            n = self.db.execute("DELETE FROM events WHERE state = 'delivered'").rowcount
        if n:
            self._shrink()
        return n

    def prune(self, retention: timedelta, now: datetime | None = None) -> int:
        """Delete delivered events (and images) older than ``retention``; pending are kept."""
        cutoff = iso_utc((now or datetime.now(UTC)) - retention)
        with self._write():
            # A finding whose picture is still held back stays until the picture goes.
            cur = self.db.execute(
                "DELETE FROM events WHERE state = 'delivered' AND delivered_utc < ? AND id "
                "NOT IN (SELECT event_id FROM images WHERE held = 1)", [cutoff])
            n = cur.rowcount
        if n:
            self._vacuum()
        return n

    # --- reading -----------------------------------------------------------

    def pending(self, limit: int, exclude: set[str] | frozenset[str] = frozenset(),
                created_since: datetime | None = None) -> list[StoredEvent]:
        """Pending events oldest first, skipping ``exclude`` (the in-flight set);
        with ``created_since``, only those committed at or after that time."""
        where, params = "WHERE e.state = 'pending' AND i.picture_pending = 0", []
        if created_since is not None:
            where += " AND e.created_utc >= ?"
            params.append(iso_utc(created_since))
        # exclude is small (at most the in-flight window, and the rare unreadable row):
        # over-fetch by its size and filter.
        skip = len(exclude) + len(self.unreadable)
        rows = self._select(f"{where} ORDER BY e.id LIMIT ?", [*params, limit + skip])
        return [r for r in rows if r.event.id not in exclude][:limit]

    def get(self, event_id: str) -> StoredEvent | None:
        rows = self._select("WHERE e.id = ?", [event_id])
        return rows[0] if rows else None

    def find(self, prefix: str) -> list[StoredEvent]:
        """Events whose id starts with ``prefix`` (ids are long to type)."""
        return self._select("WHERE e.id LIKE ? ORDER BY e.id LIMIT 10", [prefix + "%"])

    def iter_events(self, state: str | None = None, since: datetime | None = None,
                    label: str | None = None, limit: int | None = None,
                    newest_first: bool = False) -> Iterator[StoredEvent]:
        where, params = [], []
        if state:
            where.append("e.state = ?")
            params.append(state)
        if since:
            where.append("e.captured_utc >= ?")
            params.append(iso_utc(since))
        if label:
            where.append("e.label = ?")
            params.append(label)
        sql = ("WHERE " + " AND ".join(where)) if where else ""
        sql += " ORDER BY e.id " + ("DESC" if newest_first else "ASC")
        if limit:
            sql += f" LIMIT {int(limit)}"
        yield from self._select(sql, params)

    def counts(self) -> dict[str, int]:
        out = {"pending": 0, "delivered": 0}
        for state, n in self.db.execute("SELECT state, count(*) FROM events GROUP BY state"):
            out[state] = n
        return out

    def newest_id(self) -> str | None:
        """The largest event id in the outbox (new ids are made above it)."""
        return self.db.execute("SELECT max(id) FROM events").fetchone()[0]

    def recent_findings(self, window: timedelta) -> list[PastFinding]:
        """Label, place and time of the events captured within ``window`` of the newest
        one, oldest first, without their pictures: what the dedup memory starts from.
        Measured from the newest event, not from the system clock, which on a Pi that
        has not seen GPS or NTP yet can be anywhere (and replays are of the past)."""
        newest = self.db.execute("SELECT max(captured_utc) FROM events").fetchone()[0]
        if newest is None:
            return []
        rows = self.db.execute(
            "SELECT label, lat, lon, captured_utc FROM events WHERE captured_utc >= ? "
            "ORDER BY captured_utc", [iso_utc(parse_iso_utc(newest) - window)]).fetchall()
        return [PastFinding(label, lat, lon, parse_iso_utc(t)) for label, lat, lon, t in rows]

    def backlog(self) -> tuple[int, int, datetime | None]:
        """Undelivered findings: how many, their pictures' bytes, and when the oldest was
        committed (by this machine's clock)."""
        n, size, oldest = self.db.execute(
            "SELECT count(*), coalesce(sum(length(i.jpeg) + coalesce(length(i.crop), 0)), 0), "
            "min(e.created_utc) FROM events e JOIN images i ON i.event_id = e.id "
            "WHERE e.state = 'pending'").fetchone()
        return n, size, parse_iso_utc(oldest) if oldest else None

    def pictures_pending(self) -> int:
        """Findings committed whose pictures are still being made."""
        return self.db.execute("SELECT count(*) FROM images WHERE picture_pending = 1"
                               ).fetchone()[0]

    def oldest_pending_utc(self) -> datetime | None:
        row = self.db.execute(
            "SELECT min(captured_utc) FROM events WHERE state = 'pending'").fetchone()
        return parse_iso_utc(row[0]) if row and row[0] else None

    def _columns(self) -> list[str]:
        return [c.name for c in self.db["events"].columns] + ["jpeg", "sha256", "crop",
                                                              "crop_sha256", "evicted_utc"]

    def _select(self, where: str, params: list[Any]) -> list[StoredEvent]:
        cols = self._columns()
        rows = self.db.execute(
            "SELECT e.*, i.jpeg, i.sha256, i.crop, i.crop_sha256, i.evicted_utc "
            "FROM events e JOIN images i ON i.event_id = e.id "
            + where, params).fetchall()
        out = []
        for r in rows:
            row = dict(zip(cols, r, strict=True))
            try:
                out.append(_stored(row))
            except (ValueError, TypeError, KeyError) as e:
                # A row damaged on the card must not stop every event behind it: it is
                # named once, kept as it is (for a technician), and skipped.
                if row["id"] not in self.unreadable:
                    self.unreadable.add(row["id"])
                    log.error("event %s in the outbox %s cannot be read back (%s): it is "
                              "kept there, and skipped", row["id"], self.path, e)
        return out


def _event_row(ev: Event, created: str) -> dict[str, Any]:
    pos = ev.position
    return {
        "id": ev.id,
        "captured_utc": iso_utc(ev.captured_utc),
        "captured_mono": ev.captured_mono,
        "label": ev.label,
        "score": float(ev.score),
        "bbox": json.dumps([round(float(v), 5) for v in ev.bbox]),
        "lat": pos.lat if pos else None,
        "lon": pos.lon if pos else None,
        "position_accuracy_m": pos.accuracy_m if pos else None,
        "position_source": pos.source if pos else None,
        "model": ev.model,
        "config_version": ev.config_version,
        "attributes": json.dumps(ev.attributes, sort_keys=True, default=str),
        "created_utc": created,
    }


def _stored(d: dict[str, Any]) -> StoredEvent:
    pos = None
    if d["lat"] is not None and d["lon"] is not None:
        pos = Position(d["lat"], d["lon"], d["position_accuracy_m"], d["position_source"] or "gps")
    ev = Event(
        id=d["id"],
        label=d["label"],
        score=d["score"],
        bbox=tuple(json.loads(d["bbox"])),
        captured_utc=parse_iso_utc(d["captured_utc"]),
        captured_mono=d["captured_mono"],
        image_jpeg=d["jpeg"],
        position=pos,
        model=d["model"],
        config_version=d["config_version"],
        attributes=json.loads(d["attributes"]),
        crop_jpeg=d["crop"],
    )
    return StoredEvent(
        event=ev,
        state=d["state"],
        attempts=d["attempts"],
        created_utc=parse_iso_utc(d["created_utc"]),
        last_attempt_utc=parse_iso_utc(d["last_attempt_utc"]) if d["last_attempt_utc"] else None,
        delivered_utc=parse_iso_utc(d["delivered_utc"]) if d["delivered_utc"] else None,
        image_sha256=d["sha256"],
        crop_sha256=d["crop_sha256"],
        evicted_utc=parse_iso_utc(d["evicted_utc"]) if d["evicted_utc"] else None,
    )
