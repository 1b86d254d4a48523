"""The SQLite outbox on real files: atomicity, durability, migrations, retention."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlite_utils

from agent.records import Event, Picture
from agent.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, _event_row
from tests.conftest import make_event, make_jpeg


def test_event_and_image_round_trip(tmp_path: Path) -> None:
    ev = make_event(3)
    with Store(tmp_path / "o.db") as s:
        s.add(ev)
        got = s.get(ev.id)
    assert got is not None and got.state == "pending" and got.attempts == 0
    assert got.event.image_jpeg == ev.image_jpeg
    assert got.event.position == ev.position
    assert got.event.captured_utc == ev.captured_utc.replace(
        microsecond=ev.captured_utc.microsecond // 1000 * 1000)
    assert got.event.attributes == {"n": 3}


def test_crop_round_trip_and_events_without_one(tmp_path: Path) -> None:
    crop = make_jpeg(11, size=32)
    with_crop, without = make_event(1).replace(crop_jpeg=crop), make_event(2)
    with Store(tmp_path / "o.db") as s:
        s.add_many([with_crop, without])
        got, plain = s.get(with_crop.id), s.get(without.id)
    assert got is not None and plain is not None
    assert got.event.crop_jpeg == crop and got.event.image_jpeg == with_crop.image_jpeg
    assert got.crop_sha256 == hashlib.sha256(crop).hexdigest()
    assert plain.event.crop_jpeg is None and plain.crop_sha256 is None


def test_a_finding_waits_unsent_for_its_picture_which_brings_its_redaction(
        tmp_path: Path) -> None:
    """The agent commits a finding as soon as it is decided; its redacted picture and crop
    come after. Until then it is not picked for sending; then it is, whole."""
    ev, other = make_event(1), make_event(2)
    crop = make_jpeg(5, size=32)
    with Store(tmp_path / "o.db") as s:
        s.add_many([ev.replace(image_jpeg=b""), other], pictures_to_follow={ev.id})
        assert [p.event.id for p in s.pending(10)] == [other.id]
        assert s.pictures_pending() == 1
        s.add_many([], [Picture(ev.id, ev.image_jpeg, crop,
                                {"redaction": {"ran": True}, "crop_px": [1, 2, 3, 4]})])
        got = s.get(ev.id)
        assert [p.event.id for p in s.pending(10)] == [ev.id, other.id]
        assert s.pictures_pending() == 0
    assert got is not None
    assert got.event.image_jpeg == ev.image_jpeg and got.event.crop_jpeg == crop
    assert got.image_sha256 == hashlib.sha256(ev.image_jpeg).hexdigest()
    assert got.event.attributes == {"n": 1, "redaction": {"ran": True}, "crop_px": [1, 2, 3, 4]}


def test_pictures_a_stopped_agent_never_made_are_released_to_be_sent_without(
        tmp_path: Path) -> None:
    ev = make_event(1).replace(image_jpeg=b"")
    with Store(tmp_path / "o.db") as s:
        s.add_many([ev], pictures_to_follow={ev.id})
        assert s.release_pictures("the agent stopped") == [ev.id]
        assert s.release_pictures("again") == []
        got = s.get(ev.id)
        # A picture that comes after all (it cannot: its maker is gone) changes nothing.
        s.add_many([], [Picture(ev.id, make_jpeg(1), None, {"redaction": {"ran": True}})])
        assert [p.event.id for p in s.pending(10)] == [ev.id]
        assert s.get(ev.id) == got
    assert got is not None and got.event.image_jpeg == b""
    assert got.event.attributes["redaction"] == {"ran": False, "failed": "the agent stopped"}


def test_a_crop_that_is_not_a_jpeg_is_refused() -> None:
    with pytest.raises(ValueError, match="crop_jpeg is not a JPEG"):
        make_event(1).replace(crop_jpeg=b"PNG...")


def _schema_1_store(db: Path, events: list) -> None:
    """A store as an agent of schema 1 left it: migration 1 only, its rows, no crop columns."""
    con = sqlite3.connect(db, isolation_level=None)
    old = sqlite_utils.Database(con)
    old.execute("PRAGMA journal_mode = WAL")
    MIGRATIONS[0](old)
    old.execute("PRAGMA user_version = 1")
    for ev in events:
        old["events"].insert(_event_row(ev, "2026-11-01T08:00:00.000Z"))
        old["images"].insert({"event_id": ev.id, "jpeg": ev.image_jpeg,
                              "sha256": hashlib.sha256(ev.image_jpeg).hexdigest()})
    old.execute("UPDATE events SET state = 'delivered', delivered_utc = created_utc "
                "WHERE id = ?", [events[0].id])
    con.close()


def test_a_schema_1_store_is_migrated_to_the_latest_and_keeps_its_events(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    old = [make_event(i) for i in range(3)]
    _schema_1_store(db, old)
    with Store(db) as s:
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        assert s.counts() == {"pending": 2, "delivered": 1}
        got = {g.event.id: g for g in s.iter_events()}
        assert list(got) == [e.id for e in old]
        for ev in old:
            g = got[ev.id]
            assert g.event.image_jpeg == ev.image_jpeg and g.event.position == ev.position
            assert g.event.crop_jpeg is None and g.crop_sha256 is None
            assert g.evicted_utc is None
        # the migrated store takes new events with crops beside the old ones
        new = make_event(7).replace(crop_jpeg=make_jpeg(12, size=32))
        s.add(new)
        assert s.get(new.id).event.crop_jpeg == new.crop_jpeg  # type: ignore[union-attr]
        assert [p.event.id for p in s.pending(10)] == [old[1].id, old[2].id, new.id]
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Store(db) as s:  # opening again migrates nothing twice
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert len(list(s.iter_events())) == 4


def test_wal_and_full_sync(tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s:
        assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_failed_batch_leaves_neither_event_nor_image(tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s:
        first = make_event(1)
        s.add(first)
        dup = make_event(2).replace(id=first.id)  # the second event of the batch fails
        with pytest.raises(sqlite3.IntegrityError):
            s.add_many([make_event(3), dup])
        assert s.db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert s.db.execute("SELECT count(*) FROM images").fetchone()[0] == 1


def test_an_image_cannot_exist_without_its_event(tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s, pytest.raises(sqlite3.IntegrityError):
        s.db.execute("INSERT INTO images (event_id, jpeg, sha256) VALUES ('x', x'ffd8', '')")


def test_committed_events_survive_sigkill(tmp_path: Path) -> None:
    """A writer killed right after its commits returned: every committed event is there."""
    db = tmp_path / "o.db"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from agent.store import Store
from tests.conftest import make_event
s = Store({str(db)!r})
for i in range(50):
    ev = make_event(i)
    s.add(ev)
    print(ev.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9
    printed = r.stdout.split()
    assert len(printed) == 50
    with Store(db) as s:
        assert {e.event.id for e in s.iter_events()} == set(printed)
        assert s.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_pending_is_oldest_first_and_skips_in_flight(tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s:
        evs = [make_event(i) for i in range(6)]
        s.add_many(evs)
        got = s.pending(3, exclude={evs[0].id})
        assert [g.event.id for g in got] == [evs[1].id, evs[2].id, evs[3].id]


def test_delivery_marks_and_retention(tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s:
        evs = [make_event(i) for i in range(4)]
        s.add_many(evs)
        s.mark_attempted([evs[0].id, evs[1].id])
        s.mark_delivered([evs[0].id])
        assert s.counts() == {"pending": 3, "delivered": 1}
        assert s.get(evs[1].id).attempts == 1  # type: ignore[union-attr]
        # not yet old enough
        assert s.prune(timedelta(hours=1)) == 0
        later = datetime.now(UTC) + timedelta(hours=2)
        assert s.prune(timedelta(hours=1), now=later) == 1
        # pending events are never pruned, however old
        assert s.counts() == {"pending": 3, "delivered": 0}
        assert s.db.execute("SELECT count(*) FROM images").fetchone()[0] == 3


def test_a_picture_held_back_outlives_retention_until_it_has_gone(tmp_path: Path) -> None:
    """A metered link delivered the finding without its picture: the picture waits, and
    pruning keeps the finding until the picture has gone too."""
    with Store(tmp_path / "o.db") as s:
        evs = [make_event(i) for i in range(3)]
        s.add_many(evs)
        s.mark_delivered([evs[0].id, evs[1].id], images_held={evs[1].id})
        assert [i for i, _, _ in s.held_images(10)] == [evs[1].id]
        _, jpeg, sha = s.held_images(10)[0]
        assert jpeg == evs[1].image_jpeg and sha == hashlib.sha256(jpeg).hexdigest()
        later = datetime.now(UTC) + timedelta(hours=2)
        assert s.prune(timedelta(hours=1), now=later) == 1  # the one whose picture went
        assert s.get(evs[1].id) is not None and s.held_image_count() == 1
        s.mark_images_sent([evs[1].id])
        assert s.held_image_count() == 0
        assert s.prune(timedelta(hours=1), now=later) == 1
        s.add_link_usage(["day:2026-11-30", "month:2026-11"], 1000)
        s.add_link_usage(["day:2026-11-30", "month:2026-11"], 24)
        assert s.link_usage("day:2026-11-30") == 1024 and s.link_usage("day:2026-12-01") == 0


def test_store_from_a_newer_agent_is_refused_not_damaged(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    with Store(db) as s:
        s.add(make_event(1))
        s.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="upgrade the agent"):
        Store(db)
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"o\.db is unusable"):
        Store(db)


def test_two_writers_queue_instead_of_failing(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    a, b = Store(db), Store(db, synchronous="NORMAL")
    try:
        a.add_many([make_event(i) for i in range(20)])
        b.mark_delivered([e.event.id for e in b.pending(20)])
        a.add(make_event(99))
        assert a.counts() == {"pending": 1, "delivered": 20}
    finally:
        a.close()
        b.close()


def test_a_finding_that_cannot_be_stored_is_lost_alone_and_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """One finding in a batch fails for a reason of its own (its attributes cannot be
    written): the others are committed, it is counted and named as lost."""
    import threading

    from agent.writer import StoreWriter

    odd: dict[str, object] = {}
    odd["self"] = odd  # a loop: no JSON of it can be written
    events = [make_event(1), make_event(2).replace(attributes=odd), make_event(3)]
    w = StoreWriter(tmp_path / "o.db")
    for ev in events:
        w.submit(ev)
    t = threading.Thread(target=w.run)
    t.start()
    w.close(5)
    t.join(10)
    assert not t.is_alive()
    with Store(tmp_path / "o.db") as s:
        assert {e.event.id for e in s.iter_events()} == {events[0].id, events[2].id}
    assert w.stats.committed == 2 and w.stats.lost == 1
    assert "FINDING LOST: garbage" in caplog.text and "Circular reference" in caplog.text


def test_a_row_damaged_on_the_card_is_named_and_skipped_not_a_stop(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "o.db"
    events = [make_event(i) for i in range(3)]
    with Store(db) as s:
        s.add_many(events)
        s.db.execute("UPDATE images SET jpeg = X'00FF' WHERE event_id = ?", [events[1].id])
    with Store(db) as s:
        got = [p.event.id for p in s.pending(10)]
        assert got == [events[0].id, events[2].id]
        assert s.unreadable == {events[1].id}
        assert s.pending(10) and caplog.text.count(events[1].id) == 1  # said once


def _big_event(i: int, seed: int) -> Event:
    """A finding with a picture of about 50 KB (noise does not compress)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return make_event(i).replace(image_jpeg=buf.tobytes())


def test_the_quota_evicts_delivered_first_then_undelivered_pictures_never_a_record(
        tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    with Store(db) as s:
        events = [_big_event(i, i) for i in range(30)]
        for ev in events:
            s.add(ev)
        delivered = [e.id for e in events[:10]]
        for k, i in enumerate(reversed(delivered)):  # the last made was delivered first
            s.mark_delivered([i])
            s.db.execute("UPDATE events SET delivered_utc = ? WHERE id = ?",
                         [f"2026-11-30T10:00:{k:02d}.000Z", i])
        s.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the size without the log's copies
        full = s.size_bytes()
        # room for about 25 of the 30: about five delivered findings must go, no more
        first = s.enforce_quota(int(full * 0.83), undelivered_images=True, batch=2)
        assert first.images == 0 and first.over_bytes == 0 and 4 <= first.delivered <= 8
        left = {e.event.id for e in s.iter_events(state="delivered")}
        # those delivered longest ago went first: the earliest made, delivered last, stay
        gone = set(delivered) - left
        assert gone == set(list(reversed(delivered))[:len(gone)])
        # room for far less: every delivered one goes, then the oldest pending pictures
        second = s.enforce_quota(int(full * 0.4), undelivered_images=True, batch=2)
        assert second.delivered == 10 - len(gone) and second.images > 0
        pending = list(s.iter_events(state="pending"))
        assert len(pending) == 20  # not one undelivered record was deleted
        emptied = [p for p in pending if p.evicted_utc is not None]
        assert [p.event.id for p in emptied] == [e.id for e in events[10:10 + len(emptied)]]
        assert all(p.event.image_jpeg == b"" and p.event.crop_jpeg is None for p in emptied)
        assert s.size_bytes() <= int(full * 0.4)


def test_without_evicting_undelivered_pictures_the_outbox_stays_over_and_says_so(
        tmp_path: Path) -> None:
    with Store(tmp_path / "o.db") as s:
        for i in range(10):
            s.add(_big_event(i, i))
        ev = s.enforce_quota(s.size_bytes() // 2, undelivered_images=False)
        assert (ev.delivered, ev.images) == (0, 0) and ev.over_bytes > 0
        assert s.counts() == {"pending": 10, "delivered": 0}


def test_the_writer_keeps_the_quota_and_counts_and_says_what_it_evicted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import threading

    from agent.writer import StoreWriter

    db = tmp_path / "o.db"
    w = StoreWriter(db, quota_mb=0.6)
    t = threading.Thread(target=w.run)
    t.start()
    for i in range(20):  # about 1 MB of findings into a 0.6 MB outbox, none delivered
        w.submit(_big_event(i, i))
    w.close(10)
    t.join(20)
    assert w.stats.committed == 20 and w.stats.lost == 0 and w.stats.evicted_images > 0
    assert "removed the pictures of the" in caplog.text
    with Store(db) as s:
        assert s.counts()["pending"] == 20
        assert s.size_bytes() <= 0.6 * 1024 * 1024


def test_event_ids_never_go_backwards_whatever_the_clock_says() -> None:
    """The outbox's newest id was made while the clock read 2040 (a Pi that booted far
    ahead); NTP has set it right since: new ids still sort after it, and after each other."""
    import uuid

    from agent.records import EventIds

    ms_2040 = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp() * 1000)
    newest = str(uuid.UUID(int=(ms_2040 << 80) | (0x7 << 76) | (0x2 << 62) | 12345))
    ids = EventIds(newest)
    made = [ids() for _ in range(1000)]
    assert made[0] > newest and made == sorted(made) and len(set(made)) == 1000
    assert all(uuid.UUID(i).version == 7 for i in made)
    fresh = EventIds(None)()  # an empty outbox: ids from the clock as it is
    assert fresh < newest
