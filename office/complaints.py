"""Sightings → complaints, and the office's status workflow.

**One object, one complaint.** A located sighting joins every complaint of its class that
has a sighting within ``merge_m`` (15 m), from any vehicle and any day (Mapillary's map
features: many detections, one feature with first and last seen). When it is near two or
more, they are one object seen from both sides: the others are merged into the original,
the one seen first (FixMyStreet's choice among duplicates), and become ``duplicate`` records
that point to it, so that a city system that already read their id can follow it. Left to
itself this is single-linkage clustering, whose groups depend only on the set of sightings,
never on the order they arrive in; writers merge one at a time (store.py), so two
collectors writing at once make the same complaints as one.

**After ``resolved``, a new complaint.** A sighting taken after a complaint was resolved
starts a new complaint that ``follows`` the resolved one, instead of reopening it: the crew
that cleared the place did its job and its record stays true; what was dumped again is new
work with its own first-seen time, and a place that keeps coming back shows as a chain of
complaints (and on the heat map). A sighting taken *before* the resolution (a unit that was
out of coverage for days) still joins the resolved complaint. A ``rejected`` complaint
(a false alarm) keeps its sightings quietly: the same bush seen again is not new work.

**The office's hand wins.** Once an officer has acted on a complaint (any status but
``new``), automatic merges never fold it into another; a sighting near two such complaints
joins the nearer. A complaint split by the office is kept apart from the one it came from.
"""

from __future__ import annotations

import json
from typing import Any

from office.config import STATUSES
from office.geo import distance_m
from office.messages import Event
from office.store import Store, Tx, now_iso

SYSTEM = "system"


class WorkflowError(Exception):
    """An office action that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


def place_sighting(t: Tx, e: Event, merge_m: float) -> str:
    """Put the (just inserted) located sighting ``e`` into a complaint; return its id."""
    assert e.lat is not None and e.lon is not None
    near = [r for r in t.near_sightings(e.label, e.lat, e.lon, merge_m)
            if r["event_id"] != e.id]
    nearest: dict[str, float] = {}
    for r in near:
        d = distance_m(e.lat, e.lon, r["lat"], r["lon"])
        cid = r["complaint_id"]
        nearest[cid] = min(d, nearest.get(cid, d))
    found = _complaints(t, list(nearest))
    eligible, resolved_before = [], []
    for c in found:
        if c["status"] == "resolved" and (c["resolved_at"] or "") <= e.captured_at:
            resolved_before.append(c)
        else:
            eligible.append(c)
    if not eligible:
        follows = min(resolved_before, key=lambda c: (nearest[c["id"]], c["id"]))["id"] \
            if resolved_before else None
        _create(t, e.id, e, follows)
        return e.id
    touched = [c for c in eligible if c["status"] != "new"]
    if touched:
        target = min(touched, key=lambda c: (nearest[c["id"]], c["first_seen"], c["id"]))
    else:
        target = min(eligible, key=lambda c: (c["first_seen"], c["id"]))
    t.q("UPDATE sightings SET complaint_id = ? WHERE event_id = ?", (target["id"], e.id))
    apart = _kept_apart(t, target["id"])
    for c in eligible:
        if c["id"] != target["id"] and c["status"] == "new" and c["id"] not in apart:
            _fold(t, c["id"], target["id"], SYSTEM,
                  f"the same object: sighting {e.id} is within {merge_m:g} m of both")
    recompute(t, target["id"])
    return target["id"]


def _complaints(t: Tx, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    return t.q(f"SELECT id, status, first_seen, resolved_at FROM complaints WHERE id IN "
               f"({','.join('?' * len(ids))})", ids)


def _kept_apart(t: Tx, cid: str) -> set[str]:
    rows = t.q("SELECT a, b FROM kept_apart WHERE a = ? OR b = ?", (cid, cid))
    return {r["b"] if r["a"] == cid else r["a"] for r in rows}


def _create(t: Tx, cid: str, e: Event, follows: str | None) -> None:
    at = now_iso()
    t.q("INSERT INTO complaints (id, label, status, lat, lon, first_seen, last_seen, "
        "sightings, score, best_event, vehicles, follows, created_at, updated_at) "
        "VALUES (?, ?, 'new', ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
        (cid, e.label, e.lat, e.lon, e.captured_at, e.captured_at, e.score, e.id,
         json.dumps([e.device]), follows, at, at))
    t.q("UPDATE sightings SET complaint_id = ? WHERE event_id = ?", (cid, e.id))
    note = f"first sighting by {e.device}" + (f"; this place's complaint {follows} was "
                                               "resolved before it" if follows else "")
    _history(t, cid, "new", SYSTEM, note)


def _history(t: Tx, cid: str, status: str, by: str, note: str) -> None:
    t.q("INSERT INTO complaint_history (complaint_id, status, by_user, at, note) "
        "VALUES (?, ?, ?, ?, ?)", (cid, status, by, now_iso(), note))


def _fold(t: Tx, src: str, into: str, by: str, note: str) -> None:
    """Move ``src``'s sightings into ``into``; ``src`` stays as a duplicate pointing there."""
    t.q("UPDATE sightings SET complaint_id = ? WHERE complaint_id = ?", (into, src))
    t.q("UPDATE complaints SET status = 'duplicate', duplicate_of = ?, sightings = 0, "
        "updated_at = ? WHERE id = ?", (into, now_iso(), src))
    # Whatever pointed at src now points at its original.
    t.q("UPDATE complaints SET duplicate_of = ? WHERE duplicate_of = ?", (into, src))
    _history(t, src, "duplicate", by, f"merged into {into}: {note}" if note else
             f"merged into {into}")
    _history(t, into, _status(t, into), by, f"{src} merged into this complaint"
             + (f": {note}" if note else ""))


def _status(t: Tx, cid: str) -> str:
    return t.q("SELECT status FROM complaints WHERE id = ?", (cid,))[0]["status"]


def recompute(t: Tx, cid: str) -> None:
    """A complaint's place, times, vehicles and best picture, from all its sightings (in a
    fixed order, so that the same sightings give exactly the same figures)."""
    rows = t.q("SELECT event_id, device, captured_at, score, lat, lon FROM sightings "
               "WHERE complaint_id = ? ORDER BY event_id", (cid,))
    if not rows:
        return
    n = len(rows)
    best = max(rows, key=lambda r: (r["score"], r["event_id"]))
    t.q("UPDATE complaints SET lat = ?, lon = ?, first_seen = ?, last_seen = ?, "
        "sightings = ?, score = ?, best_event = ?, vehicles = ?, updated_at = ? WHERE id = ?",
        (sum(r["lat"] for r in rows) / n, sum(r["lon"] for r in rows) / n,
         min(r["captured_at"] for r in rows), max(r["captured_at"] for r in rows), n,
         best["score"], best["event_id"], json.dumps(sorted({r["device"] for r in rows})),
         now_iso(), cid))


# --- the office's actions --------------------------------------------------------------

def set_status(store: Store, cid: str, status: str, by: str, note: str = "",
               duplicate_of: str | None = None) -> None:
    """Move a complaint through the workflow; ``duplicate`` needs the original's id."""
    if status not in STATUSES:
        raise WorkflowError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    if status == "duplicate":
        if not duplicate_of:
            raise WorkflowError("a duplicate needs duplicate_of: the original's id")
        merge(store, cid, duplicate_of, by, note)
        return
    with store.tx() as t:
        c = _one(t, cid)
        if c["status"] == "duplicate":
            raise WorkflowError(f"{cid} is a duplicate of {c['duplicate_of']}; act on that one",
                                409)
        t.q("UPDATE complaints SET status = ?, resolved_at = ?, updated_at = ? WHERE id = ?",
            (status, now_iso() if status == "resolved" else None, now_iso(), cid))
        _history(t, cid, status, by, note)


def merge(store: Store, src: str, into: str, by: str, note: str = "") -> None:
    """The office's merge: ``src`` is the same object as ``into`` (the original)."""
    if src == into:
        raise WorkflowError("a complaint cannot be merged into itself")
    with store.tx() as t:
        a, b = _one(t, src), _one(t, into)
        if a["label"] != b["label"]:
            raise WorkflowError(f"{src} is {a['label']} and {into} is {b['label']}: "
                                "only the same class merges")
        for c in (a, b):
            if c["status"] == "duplicate":
                raise WorkflowError(f"{c['id']} is already a duplicate of "
                                    f"{c['duplicate_of']}", 409)
        t.q("DELETE FROM kept_apart WHERE (a = ? AND b = ?) OR (a = ? AND b = ?)",
            (src, into, into, src))
        _fold(t, src, into, by, note)
        recompute(t, into)


def split(store: Store, cid: str, event_ids: list[str], by: str, note: str = "") -> str:
    """Take ``event_ids`` out of complaint ``cid`` into a new complaint (a wrong merge);
    the two are kept apart from then on. Returns the new complaint's id."""
    with store.tx() as t:
        c = _one(t, cid)
        if c["status"] == "duplicate":
            raise WorkflowError(f"{cid} is a duplicate; split its original", 409)
        mine = {r["event_id"] for r in t.q(
            "SELECT event_id FROM sightings WHERE complaint_id = ?", (cid,))}
        moving = sorted(set(event_ids))
        if not moving:
            raise WorkflowError("name the sightings to take out")
        if not set(moving) <= mine:
            raise WorkflowError(f"not sightings of {cid}: {', '.join(sorted(set(moving) - mine))}")
        if set(moving) == mine:
            raise WorkflowError("a split must leave sightings in both complaints")
        new_id = moving[0]
        if t.q("SELECT 1 AS x FROM complaints WHERE id = ?", (new_id,)):
            raise WorkflowError(f"{new_id} already names a complaint", 409)
        first = t.q("SELECT * FROM sightings WHERE event_id = ?", (new_id,))[0]
        at = now_iso()
        t.q("INSERT INTO complaints (id, label, status, lat, lon, first_seen, last_seen, "
            "sightings, score, best_event, vehicles, created_at, updated_at) "
            "VALUES (?, ?, 'new', ?, ?, ?, ?, 0, 0, ?, '[]', ?, ?)",
            (new_id, c["label"], first["lat"], first["lon"], first["captured_at"],
             first["captured_at"], new_id, at, at))
        t.q(f"UPDATE sightings SET complaint_id = ? WHERE event_id IN "
            f"({','.join('?' * len(moving))})", [new_id, *moving])
        t.q("INSERT INTO kept_apart (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING",
            tuple(sorted((cid, new_id))))
        recompute(t, cid)
        recompute(t, new_id)
        _history(t, new_id, "new", by, f"split from {cid}" + (f": {note}" if note else ""))
        _history(t, cid, c["status"], by, f"split {len(moving)} sighting(s) out into "
                 f"{new_id}" + (f": {note}" if note else ""))
    return new_id


def _one(t: Tx, cid: str) -> dict[str, Any]:
    rows = t.q("SELECT * FROM complaints WHERE id = ?", (cid,))
    if not rows:
        raise WorkflowError(f"no complaint {cid}", 404)
    return rows[0]
