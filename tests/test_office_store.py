"""The office's store and complaints on both real engines: SQLite and PostgreSQL + PostGIS."""

from __future__ import annotations

import hashlib
import json
import random
import threading
import uuid
from pathlib import Path

import pytest

from office.complaints import WorkflowError, merge, set_status, split
from office.geo import distance_m
from office.messages import BadMessage, Event, Picture
from office.store import Filters, StoreError, open_store
from tests.office_rig import _uuid7_int, at

GOYANG = (37.6584, 126.8320)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    import math
    return (lat + north_m / 111_195.0,
            lon + east_m / (111_195.0 * math.cos(math.radians(lat))))


def event(i: int, label: str, north_m: float, east_m: float, day: int = 0,
          device: str = "van-1", second: float = 0.0, image: bytes | None = None) -> Event:
    t = at(day, second + i)
    lat, lon = offset(*GOYANG, north_m, east_m)
    eid = str(uuid.UUID(int=_uuid7_int(t, i)))
    sha = hashlib.sha256(image).hexdigest() if image else None
    raw = json.dumps({"id": eid})
    return Event(eid, device, t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 label, 0.5 + (i % 40) / 100, lat, lon, 5.0, sha, None, raw)


def groups(store) -> set[frozenset[str]]:
    """The open complaints as sets of their sightings' event ids."""
    out = set()
    for c in store.complaints(Filters()):
        rows = store.read("SELECT event_id FROM sightings WHERE complaint_id = ?", (c["id"],))
        out.add(frozenset(r["event_id"] for r in rows))
    return out


def scene() -> list[Event]:
    """Objects along a street 40 m apart: garbage at 0 m and 80 m, a banner at 0 m (the same
    place as garbage: a different class never merges), a banner at 40 m; each sighted by two
    vans on three days with 0-6 m of position error, plus one lone sighting without a fix."""
    rng = random.Random(7)
    objects = [("garbage", 0.0), ("garbage", 80.0), ("banner", 0.0), ("banner", 40.0)]
    out, i = [], 0
    for label, east in objects:
        for day in range(3):
            for device in ("van-1", "van-2"):
                i += 1
                out.append(event(i, label, rng.uniform(-4, 4), east + rng.uniform(-4, 4),
                                 day=day, device=device))
    return out


def test_the_same_complaints_whatever_the_order_with_duplicates(store_url: str) -> None:
    sightings = scene()
    results = []
    for n, seed in enumerate((1, 2, 3)):
        url = store_url if n == 0 else _sibling(store_url, n)
        store = open_store(url)
        order = sightings + random.Random(seed).sample(sightings, 8)  # duplicates too
        random.Random(seed).shuffle(order)
        added = [store.add_event(e) for e in order]
        assert sum(added) == len(sightings), "a duplicate delivery must change nothing"
        results.append(groups(store))
        store.close()
    assert results[0] == results[1] == results[2]
    assert len(results[0]) == 4, "one complaint per object"
    assert all(len(g) == 6 for g in results[0])


def test_two_writers_at_once_make_the_same_complaints(store_url: str) -> None:
    sightings = scene()
    a, b = open_store(store_url), open_store(store_url)
    half = len(sightings) // 2
    order = random.Random(5).sample(sightings, len(sightings))
    barrier = threading.Barrier(2)

    def write(store, part) -> None:
        barrier.wait()
        for e in part:
            store.add_event(e)
        store.close()
    threads = [threading.Thread(target=write, args=(a, order[:half])),
               threading.Thread(target=write, args=(b, order[half:] + order[:4]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    check = open_store(store_url)
    assert len(groups(check)) == 4
    cs = check.complaints(Filters())
    assert sorted(c["sightings"] for c in cs) == [6, 6, 6, 6]
    assert all(c["vehicles"] == ["van-1", "van-2"] for c in cs)
    assert all(c["first_seen"].startswith("2026-11-02") and c["last_seen"].startswith(
        "2026-11-04") for c in cs)


def test_a_sighting_between_two_complaints_merges_them_into_the_first(store_url: str) -> None:
    store = open_store(store_url)
    west, east = event(1, "garbage", 0, 0), event(2, "garbage", 0, 24)
    assert store.add_event(west) and store.add_event(east)
    assert len(store.complaints(Filters())) == 2
    store.add_event(event(3, "garbage", 0, 12))  # 12 m from both
    open_ = store.complaints(Filters())
    assert [c["id"] for c in open_] == [west.id]
    assert open_[0]["sightings"] == 3
    dup = store.complaint(east.id)
    assert dup["status"] == "duplicate" and dup["duplicate_of"] == west.id
    assert "merged into" in dup["history"][-1]["note"]


def test_pictures_either_order_checked_against_the_event(store_url: str) -> None:
    store = open_store(store_url)
    img, other = b"\xff\xd8 the image", b"\xff\xd8 another"
    early = event(1, "banner", 0, 0, image=img)
    assert store.add_picture(Picture(early.id, "van-1", "image", img)) == "waiting"
    store.add_event(early)
    assert store.picture(early.id, "image") == img
    late = event(2, "banner", 50, 0, image=img)
    store.add_event(late)
    with pytest.raises(BadMessage) as e:
        store.add_picture(Picture(late.id, "van-1", "image", other))
    assert e.value.reason == "hash_mismatch"
    assert store.picture(late.id, "image") is None
    assert store.add_picture(Picture(late.id, "van-1", "image", img)) == "stored"
    assert store.add_picture(Picture(late.id, "van-1", "image", img)) == "duplicate"
    # a picture that came first and does not match: dropped when its event says so
    third = event(3, "banner", 100, 0, image=img)
    store.add_picture(Picture(third.id, "van-1", "image", other))
    with pytest.raises(BadMessage, match="does not match"):
        store.add_event(third)
    assert store.picture(third.id, "image") is None
    assert store.complaint(third.id)["sightings"] == 1, "the event is kept"


def test_workflow_history_and_after_resolved(store_url: str) -> None:
    store = open_store(store_url)
    first = event(1, "garbage", 0, 0, day=0)
    store.add_event(first)
    for status in ("confirmed", "dispatched", "resolved"):
        set_status(store, first.id, status, "kim", f"note {status}")
    c = store.complaint(first.id)
    assert [(h["status"], h["by"]) for h in c["history"]] == [
        ("new", "system"), ("confirmed", "kim"), ("dispatched", "kim"), ("resolved", "kim")]
    # Taken before the resolution, delivered late: joins the resolved complaint.
    late = event(2, "garbage", 3, 0, day=0, second=-3600)
    store.add_event(late)
    assert store.complaint(first.id)["sightings"] == 2
    # Seen after the resolution (the resolution was just now): a new complaint follows it.
    again = event(3, "garbage", 2, 2, day=40)
    again = Event(again.id, again.device, "2099-01-01T00:00:00.000Z", again.label,
                  again.score, again.lat, again.lon, 5.0, None, None, again.raw)
    store.add_event(again)
    new = store.complaint(again.id)
    assert new["status"] == "new" and new["follows"] == first.id
    with pytest.raises(WorkflowError, match="unknown status"):
        set_status(store, first.id, "done", "kim")
    with pytest.raises(WorkflowError) as e:
        set_status(store, "0190a000-0000-7000-8000-000000000000", "confirmed", "kim")
    assert e.value.status == 404


def test_the_office_merges_and_splits_and_splits_stay_apart(store_url: str) -> None:
    store = open_store(store_url)
    a, b = event(1, "banner", 0, 0), event(2, "banner", 0, 30)
    store.add_event(a)
    store.add_event(b)
    merge(store, b.id, a.id, "lee", "the same banner")
    assert store.complaint(a.id)["sightings"] == 2
    assert store.complaint(b.id)["duplicate_of"] == a.id
    with pytest.raises(WorkflowError, match="already a duplicate"):
        merge(store, b.id, a.id, "lee")
    # Two banners 8 m apart were one complaint; the office splits them.
    c1, c2 = event(3, "banner", 200, 0), event(4, "banner", 200, 8)
    store.add_event(c1)
    store.add_event(c2)
    assert store.complaint(c1.id)["sightings"] == 2
    new_id = split(store, c1.id, [c2.id], "lee", "two banners")
    assert new_id == c2.id
    assert store.complaint(c1.id)["sightings"] == 1
    # A new sighting between them joins one, never folds them together again.
    store.add_event(event(5, "banner", 200, 4))
    s1, s2 = store.complaint(c1.id), store.complaint(c2.id)
    assert s1["status"] == s2["status"] == "new"
    assert s1["sightings"] + s2["sightings"] == 3
    with pytest.raises(WorkflowError, match="both complaints"):
        split(store, c1.id, [r["event_id"] for r in s1["sightings_list"]], "lee")
    with pytest.raises(WorkflowError, match="only the same class"):
        garbage = event(6, "garbage", 500, 0)
        store.add_event(garbage)
        merge(store, garbage.id, a.id, "lee")


def test_filters_area_class_status_vehicle_and_dates(store_url: str) -> None:
    store = open_store(store_url)
    for e in scene():
        store.add_event(e)
    allc = store.complaints(Filters())
    garbage = store.complaints(Filters(classes=("garbage",)))
    assert len(allc) == 4 and len(garbage) == 2
    west_lat, west_lon = offset(*GOYANG, -20, -20)
    east_lat, east_lon = offset(*GOYANG, 20, 20)
    near_origin = store.complaints(Filters(bbox=(west_lon, west_lat, east_lon, east_lat)))
    assert sorted(c["label"] for c in near_origin) == ["banner", "garbage"]
    for c in near_origin:
        assert distance_m(c["lat"], c["lon"], *GOYANG) < 6
    set_status(store, garbage[0]["id"], "confirmed", "kim")
    assert [c["id"] for c in store.complaints(Filters(statuses=("confirmed",)))] == [
        garbage[0]["id"]]
    assert store.complaints(Filters(vehicle="van-9")) == []
    assert len(store.complaints(Filters(vehicle="van-2"))) == 4
    assert store.complaints(Filters(since="2026-11-05T00:00:00.000Z")) == []
    assert len(store.complaints(Filters(until="2026-11-02T09:00:02.000Z"))) == 1


def test_migrations_are_recorded_and_a_newer_store_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    assert store.schema_version() == 1
    store.close()
    again = open_store(store_url)  # opening again applies nothing
    assert again.schema_version() == 1
    with again.tx() as t:
        t.q("INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 'now')")
    again.close()
    with pytest.raises(StoreError, match="newer than this patrol-office"):
        open_store(store_url)


def test_a_store_that_cannot_be_opened_names_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/office.sqlite")
    with pytest.raises(StoreError, match=r"127\.0\.0\.1") as e:
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(e.value), "a store's password is never shown"


def _sibling(url: str, n: int) -> str:
    """Another empty store of the same engine."""
    if url.startswith("sqlite:///"):
        return url.replace("office.sqlite", f"office{n}.sqlite")
    base, _, db = url.rpartition("/")
    import psycopg
    with psycopg.connect(f"{base}/postgres", autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}_{n}"')
    return f"{base}/{db}_{n}"
