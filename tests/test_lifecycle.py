"""The life of the agent's process: stopping, restarting, an outbox that cannot be
written, and what it does when it cannot start. Each as a unit runs it: ``patrol-agent
run`` as its own process with a recording as its camera, a real gpsd (through gpsfake)
on the world's clock, a real Mosquitto, a real SQLite file; the full disk is a real,
small tmpfs."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import pytest

from agent.nmea import read_nmea
from agent.pipeline import STOP_BUDGET_S
from agent.records import Fix
from agent.store import Store
from tests.conftest import (
    Mosquitto,
    Subscriber,
    Unit,
    agent_cmd,
    make_event,
    unit_config,
    wait_until,
    write_config,
)
from tests.world import PacedGps, video_frames

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"
T0 = datetime(2025, 5, 14, 1, 30, tzinfo=UTC)
FIXES = read_nmea(SAMPLE / "track.nmea")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def frames() -> list:
    return video_frames(SAMPLE / "video.mp4")


def folder_of(frames: list, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of the sample drive as an image folder (a camera stand-in)."""
    out.mkdir(parents=True, exist_ok=True)
    for k, img in enumerate(frames[:round(seconds * 10)]):
        cv2.imwrite(str(out / f"{k:05d}.png"), img)
    return out


def later(fixes: list[Fix], by: timedelta) -> list[Fix]:
    return [Fix(f.utc + by, f.lat, f.lon, f.mode, f.speed_mps, f.track_deg, f.eph_m,
                f.epv_m, f.alt_m) for f in fixes]


class Drive:
    """One unit on (part of) the sample drive: its recording as camera, its receiver on
    the world's clock from when the recording starts playing."""

    def __init__(self, tmp: Path, camera: Path, *, broker: int | None, name: str = "unit",
                 db: Path | None = None, fixes: list[Fix] = FIXES, args: tuple[str, ...] = (),
                 extra: str = "", store_extra: str = "") -> None:
        self.gps = PacedGps(fixes, tmp / f"{name}-gps")
        self.db = db or tmp / "outbox.db"
        cfg = unit_config(tmp / f"{name}.toml", device=name, camera=str(camera), db=self.db,
                          gps_port=self.gps.port, broker_port=broker, extra=extra,
                          store_extra=store_extra)
        self.unit = Unit(cfg, *args)
        self.gps.play(origin=self.unit.wait_for("playing as a live camera", 60),
                      epoch0=fixes[0].utc)

    def until(self, drive_s: float) -> None:
        """Wait until the world's clock is ``drive_s`` into the drive."""
        assert self.gps.origin is not None
        time.sleep(max(0.0, self.gps.origin + drive_s - time.time()))

    def close(self) -> None:
        self.unit.kill()
        self.gps.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop(signal.SIGKILL)


def _findings(sub: Subscriber, device: str) -> list[dict]:
    return [e for e in sub.events() if e["device"] == device]


# --- stopping -------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_finishes_the_track_in_hand_delivers_it_and_says_offline(
        tmp_path: Path, broker: Mosquitto, sig: int) -> None:
    """Stopped 12.6 s into the drive, while the banner seen from 11.1 s is still in view:
    capture stops, that track becomes a finding, it is committed and delivered, the
    retained status turns offline, and the process exits 0 within the stop budget."""
    sub = Subscriber(broker.port, client_id="office")
    d = Drive(tmp_path, SAMPLE / "video.mp4", broker=broker.port)
    try:
        d.until(12.6)
        rc, took = d.unit.stop(sig)
    finally:
        d.close()
    log = d.unit.log
    assert rc == 0, log
    assert took < STOP_BUDGET_S, took
    assert f"received {signal.Signals(sig).name}, stopping" in log and "Traceback" not in log
    wait_until(lambda: len(_findings(sub, "unit")) >= 3, 10, "the findings at the broker")
    found = _findings(sub, "unit")
    in_hand = [e for e in found if e["label"] == "banner"
               and "01:30:11" <= e["captured_at"][11:19] <= "01:30:12.6"]
    assert in_hand, [(e["label"], e["captured_at"]) for e in found]
    assert in_hand[0]["attributes"]["first_seen"] < "2025-05-14T01:30:11.5"
    with Store(d.db) as s:
        assert s.counts() == {"pending": 0, "delivered": len(found)}
    late = Subscriber(broker.port, client_id="late")
    time.sleep(1.0)
    assert [st["state"] for st in late.statuses()] == ["offline"]
    late.close()
    sub.close()
    print(f"stopped in {took:.2f} s")


# --- restarting ------------------------------------------------------------------------

def test_a_restart_does_not_report_again_what_it_just_reported(
        tmp_path: Path, broker: Mosquitto, frames: list) -> None:
    """An ignition cycle: the unit finds the construction site and a banner, stops, starts
    again and passes the same places ten minutes later: nothing is reported twice, since
    the dedup memory starts from the store. With a window shorter than ten minutes, the
    same pass is reported again."""
    camera = folder_of(frames, tmp_path / "frames", 6.0)
    first_six = [f for f in FIXES if f.utc <= T0 + timedelta(seconds=7)]
    sub = Subscriber(broker.port, client_id="office")

    def lap(n: int, fixes: list[Fix], extra: str = "") -> Unit:
        d = Drive(tmp_path, camera, broker=broker.port, name=f"lap{n}", fixes=fixes,
                  db=tmp_path / "outbox.db", args=("--until-drained",), extra=extra)
        try:
            assert d.unit.wait(60) == 0, d.unit.log
        finally:
            d.close()
        return d.unit

    lap(1, first_six)
    first = _findings(sub, "lap1")
    assert len(first) == 2, first
    second = lap(2, later(first_six, timedelta(minutes=10)))
    assert "pending, " in second.log and "2 delivered" in second.log  # it saw the store
    assert second.log.count("seen again") == 2, second.log
    assert "from the one reported 600 s ago" in second.log
    time.sleep(1.0)
    assert _findings(sub, "lap2") == []
    lap(3, later(first_six, timedelta(minutes=20)), extra="[events]\ndedup_window_h = 0.1\n")
    wait_until(lambda: len(_findings(sub, "lap3")) == 2, 10, "the third lap's findings")
    sub.close()


def test_a_finding_committed_before_its_picture_goes_without_one_after_a_crash(
        tmp_path: Path, broker: Mosquitto) -> None:
    """A finding is committed as soon as it is decided and its redacted picture attached
    after. An agent killed in between leaves it so in the outbox: the next start sends it
    without a picture (never an unredacted one), saying why, beside the rest."""
    db = tmp_path / "outbox.db"
    orphan, whole = make_event(1), make_event(2)
    with Store(db) as s:  # as the killed agent left it
        s.add_many([orphan.replace(image_jpeg=b""), whole], pictures_to_follow={orphan.id})
    sub = Subscriber(broker.port, client_id="office")
    unit = Unit(write_config(tmp_path / "a.toml", broker.port, db, device="unit"))
    try:
        wait_until(lambda: {orphan.id, whole.id} <= sub.event_ids(), 20, "both delivered")
    finally:
        unit.stop()
    got = {e["id"]: e for e in sub.events()}
    assert got[orphan.id]["image"] is None
    assert got[orphan.id]["attributes"]["redaction"] == {
        "ran": False, "failed": "the agent stopped before its picture was made"}
    assert got[whole.id]["image"] is not None
    assert orphan.id not in sub.images() and whole.id in sub.images()
    assert "1 findings committed before the agent stopped had no picture yet" in unit.log


# --- an outbox that cannot be written ------------------------------------------------------

def test_a_locked_outbox_holds_the_findings_and_commits_them_when_it_can(
        tmp_path: Path, broker: Mosquitto, frames: list) -> None:
    """Another process holds the outbox's write lock: the findings wait in memory, the
    commit is retried, and once the lock is let go they are committed and delivered."""
    camera = folder_of(frames, tmp_path / "frames", 6.0)
    db = tmp_path / "outbox.db"
    Store(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")

    def let_go(d: Drive) -> None:
        time.sleep(3.0)
        other.execute("ROLLBACK")
        other.close()

    log = held_then_delivered(tmp_path, broker, camera, db, let_go)
    assert "database is locked" in log


def held_then_delivered(tmp_path: Path, broker: Mosquitto, camera: Path, db: Path,
                        make_room: Callable[[Drive], None]) -> str:
    """A unit drives the first six seconds (a construction site, a banner) and says it
    cannot write its outbox; ``make_room`` mends that; the unit says the outbox is writable
    again, both findings reach the broker, none is lost, and it stops with 0. Its log."""
    sub = Subscriber(broker.port, client_id="office")
    d = Drive(tmp_path, camera, broker=broker.port, db=db,
              fixes=[f for f in FIXES if f.utc <= T0 + timedelta(seconds=7)])
    try:
        d.unit.wait_for("cannot write the outbox", 30)
        make_room(d)
        d.unit.wait_for("the outbox is writable again", 30)
        wait_until(lambda: len(_findings(sub, "unit")) == 2, 15, "both findings delivered")
        rc, _ = d.unit.stop()
    finally:
        d.close()
        sub.close()
    assert rc == 0, d.unit.log
    assert "FINDING LOST" not in d.unit.log
    return d.unit.log


@pytest.fixture
def small_card(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system (a real tmpfs), for a full SD card."""
    card = tmp_path / "card"
    card.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(card)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield card
    finally:
        subprocess.run(["umount", "-l", str(card)], check=False)


def fill(card: Path, leave: int = 48 * 1024) -> Path:
    """Fill the card but ``leave`` bytes: room for SQLite's shared memory, not a finding."""
    filler = card / "filler"
    free = os.statvfs(card).f_bavail * os.statvfs(card).f_frsize
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave))
    return filler


def test_a_full_card_holds_the_findings_until_there_is_room(
        tmp_path: Path, broker: Mosquitto, frames: list, small_card: Path) -> None:
    camera = folder_of(frames, tmp_path / "frames", 6.0)
    db = small_card / "outbox.db"
    Store(db).close()
    filler = fill(small_card)

    def make_room(d: Drive) -> None:  # the technician, once the drive is over
        d.until(6.5)
        filler.unlink()

    log = held_then_delivered(tmp_path, broker, camera, db, make_room)
    assert "database or disk is full" in log


def test_past_max_held_findings_are_lost_loudly_and_counted(
        tmp_path: Path, frames: list, small_card: Path) -> None:
    """With room for one held finding and a card that stays full, the second finding is
    lost (an error naming it), the held one is lost when the run ends, and the run says
    how many were lost and exits 1."""
    camera = folder_of(frames, tmp_path / "frames", 6.0)
    db = small_card / "outbox.db"
    Store(db).close()
    fill(small_card)
    d = Drive(tmp_path, camera, broker=None, db=db, args=("--until-drained",),
              store_extra="max_held = 1\n",
              fixes=[f for f in FIXES if f.utc <= T0 + timedelta(seconds=7)])
    try:
        rc = d.unit.wait(60)
    finally:
        d.close()
    log = d.unit.log
    assert rc == 1, log
    assert log.count("FINDING LOST") == 2, log
    assert "FINDING LOST: banner" in log and "store.max_held" in log
    assert "2 findings were lost" in log and "Traceback" not in log


def test_a_replay_onto_a_full_card_replays_the_whole_drive_and_says_what_was_lost(
        tmp_path: Path, small_card: Path) -> None:
    db = small_card / "outbox.db"
    Store(db).close()
    fill(small_card)
    r = subprocess.run(agent_cmd("replay", "--video", str(SAMPLE / "video.mp4"), "--nmea",
                                 str(SAMPLE / "track.nmea"), "--db", str(db), "--quiet"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "replayed 600 frames" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr
    assert "findings could not be stored and are lost" in r.stderr
    assert "database or disk is full" in r.stderr


# --- what it does when it cannot start ------------------------------------------------------

def test_a_model_that_is_not_a_model_is_one_line_after_the_backlog_is_delivered(
        tmp_path: Path, broker: Mosquitto) -> None:
    """A unit whose model file is damaged says so in one line, delivers the findings it
    already holds (the camera stays off) and exits 2."""
    db = tmp_path / "outbox.db"
    with Store(db) as s:
        held = [make_event(i) for i in range(3)]
        s.add_many(held)
    bad = tmp_path / "model.tflite"
    bad.write_text("this is not a model\n")
    sub = Subscriber(broker.port, client_id="office")
    cfg = unit_config(tmp_path / "a.toml", device="unit", camera=str(SAMPLE / "video.mp4"),
                      db=db, broker_port=broker.port, extra=f'[detector]\nmodel = "{bad}"\n')
    unit = Unit(cfg)
    assert unit.wait(60) == 2, unit.log
    assert "cannot start the camera and detector: model" in unit.log
    assert "not a usable TFLite model" in unit.log and "Traceback" not in unit.log
    wait_until(lambda: {e.id for e in held} <= sub.event_ids(), 10, "the backlog delivered")
    with Store(db) as s:
        assert s.counts() == {"pending": 0, "delivered": 3}
    sub.close()


@pytest.mark.parametrize("source", ["/no/such/video.mp4", "/no/such/folder/"])
def test_a_camera_source_that_does_not_exist_is_one_line_and_exit_2(
        tmp_path: Path, source: str) -> None:
    cfg = unit_config(tmp_path / "a.toml", device="unit", camera=source,
                      db=tmp_path / "outbox.db")
    r = subprocess.run(agent_cmd("run", "--config", str(cfg)), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"camera.source '{source}': no such file, folder or device" in r.stderr
    assert "Traceback" not in r.stderr
