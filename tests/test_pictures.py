"""The pictures stage: a finding is committed first, its redacted picture attached after,
through a real store writer and outbox."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.config import EventsConfig
from agent.events import BestShots, EventBuilder
from agent.pictures import PictureStage
from agent.privacy import Redactor
from agent.store import Store
from agent.tracker import Tracker
from agent.writer import StoreWriter
from tests.conftest import wait_until
from tests.test_events import CAM_CFG, ORIGIN, destination, drive_past


def decided(builder: EventBuilder) -> list:
    """The drive past one object through tracker and best shots: its finding, decided."""
    obj = destination(*destination(*ORIGIN, 0.0, 50.0), 90.0, 6.0)
    _, frames, dets = drive_past(obj)
    tr, shots, out = Tracker(), BestShots.for_config(builder.cfg), []
    for f, d in zip(frames, dets, strict=True):
        updated, ended = tr.update(f, d)
        shots.observe(f, updated)
        out += builder.decide(shots.end(ended))
    return out + builder.decide(shots.end(tr.flush()))


def builder(redactor: Redactor) -> EventBuilder:
    obj = destination(*destination(*ORIGIN, 0.0, 50.0), 90.0, 6.0)
    hist, _, _ = drive_past(obj)
    return EventBuilder(EventsConfig(), CAM_CFG, hist.position_at, redactor)


def test_the_record_is_committed_unsent_and_its_picture_follows(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    writer = StoreWriter(db)
    wt = threading.Thread(target=writer.run, daemon=True)
    wt.start()
    b = builder(Redactor())
    (ev, shot), = decided(b)
    writer.submit(ev, picture_to_follow=True)
    wait_until(lambda: writer.stats.committed == 1, 10, "the record committed")
    with Store(db) as s:
        assert s.pending(10) == [] and s.pictures_pending() == 1  # on the card, not sent
    stage = PictureStage(b, writer.attach)
    st = threading.Thread(target=stage.run, daemon=True)
    st.start()
    stage.put(ev, shot)
    stage.close()
    st.join(30)
    writer.close(5)
    wt.join(10)
    with Store(db) as s:
        (got,) = s.pending(10)
    assert got.event.id == ev.id and got.event.image_jpeg[:2] == b"\xff\xd8"
    assert got.event.crop_jpeg is not None
    assert got.event.attributes["redaction"]["ran"] is True
    assert got.event.attributes["frames"] == ev.attributes["frames"]  # the record's, kept
    assert stage.made == 1 and writer.stats.pictures == 1


def test_past_its_limit_a_finding_goes_without_its_picture_saying_why(tmp_path: Path) -> None:
    """Frames wait whole for the privacy step: when it is far behind, a finding is sent
    without its picture rather than the unit running out of memory."""
    attached = []
    b = builder(Redactor())
    (ev, shot), = decided(b)
    stage = PictureStage(b, attached.append, max_waiting=1)
    stage.put(ev, shot)  # waits (the stage's thread is not running)
    other = ev.replace(id=ev.id + "x")
    stage.put(other, shot)
    assert stage.waiting == 1 and stage.behind == 1
    (pic,) = attached
    assert pic.event_id == other.id and pic.image_jpeg == b"" and pic.crop_jpeg is None
    assert pic.attributes["redaction"]["failed"] == \
        "too many findings waiting for their pictures"


def test_a_picture_that_fails_unexpectedly_still_releases_its_finding() -> None:
    class Broken(EventBuilder):
        def picture(self, ev, shot):  # type: ignore[no-untyped-def]
            raise ValueError("bad frame")

    attached = []
    real = builder(Redactor())
    (ev, shot), = decided(real)
    b = Broken(EventsConfig(), CAM_CFG, real.positions, Redactor())
    stage = PictureStage(b, attached.append)
    stage.put(ev, shot)
    stage.close()
    stage.run()
    (pic,) = attached
    assert pic.image_jpeg == b"" and pic.attributes["redaction"] == {
        "ran": False, "failed": "ValueError: bad frame"}
    assert stage.faults.stats.errors == 1
