"""The whole pipeline on recorded drives: camera → detector → tracker → events → store."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest

from agent.config import DetectorConfig, EventsConfig
from agent.evaluate import TruthObject, load_truth, score
from agent.geo import haversine_m
from agent.gps import FixHistory
from agent.nmea import read_nmea
from agent.store import Store
from tests.conftest import NMEA_DIR, Gpsfake, agent_cmd, free_port
from tests.test_model_card import load_drives

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"


def replay(tmp_path: Path, *extra: str, nmea: Path = SAMPLE / "track.nmea",
           video: Path = SAMPLE / "video.mp4") -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_cmd("replay", "--video", str(video), "--nmea", str(nmea),
                                    "--db", str(tmp_path / "out.db"), "--quiet", *extra),
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample drive's first 8 seconds (the first finding is 6 s in): what the logs
    are played against, without running the detector on a whole minute eight times."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    cap = cv2.VideoCapture(str(SAMPLE / "video.mp4"))
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (640, 360))
    for _ in range(80):
        ok, frame = cap.read()
        assert ok
        out.write(frame)
    out.release()
    cap.release()
    return path


@pytest.mark.parametrize("log", sorted(p.name for p in NMEA_DIR.glob("*.log")))
def test_any_receivers_log_never_crashes_a_replay(tmp_path: Path, log: str, clip: Path
                                                  ) -> None:
    """Real receivers' logs (mostly standing still, elsewhere on Earth, another year):
    the replay runs, and frames without a usable fix are counted, never given a place."""
    r = replay(tmp_path, "--start", "2025-05-14T01:30:00Z", nmea=NMEA_DIR / log, video=clip)
    assert r.returncode == 0, r.stderr
    assert "80 frames without a usable fix" in r.stdout
    with Store(tmp_path / "out.db") as s:
        assert all(e.event.position is None for e in s.iter_events())


def _events(db: Path) -> list:
    with Store(db) as s:
        return [e.event for e in s.iter_events()]


def _track(nmea: Path) -> FixHistory:
    h = FixHistory(max_age_s=math.inf)
    h.extend(read_nmea(nmea))
    return h


@pytest.mark.slow
def test_real_time_replay_geotags_through_gpsd_as_the_log_says(tmp_path: Path) -> None:
    """--speed 1 serves the log through a real gpsd (gpsfake): every finding's geotag is
    where the recorded track puts the vehicle at that frame's time, within a metre."""
    r = replay(tmp_path, "--speed", "1")
    assert r.returncode == 0, r.stderr
    assert "GPS gpsd (gpsfake)" in r.stdout
    events = _events(tmp_path / "out.db")
    assert len(events) >= 3, r.stdout  # the sample drive has 4 reportable objects
    track = _track(SAMPLE / "track.nmea")
    checked = 0
    for ev in events:
        veh = ev.attributes["vehicle"]
        assert veh is not None, f"{ev.label} at {ev.captured_utc}: no geotag"
        if veh["extrapolated"]:
            continue  # the next fix had not arrived yet: flagged, not pretended
        want = track.position_at(ev.captured_utc)
        assert want is not None
        assert haversine_m(veh["lat"], veh["lon"], want.lat, want.lon) <= 1.0
        checked += 1
    assert checked >= len(events) // 2


def test_fix_loss_in_the_log_is_flagged_frame_by_frame(tmp_path: Path) -> None:
    drive = tmp_path / "drive"
    sim = subprocess.run(agent_cmd("simulate-drive", "--seed", "7", "--out", str(drive),
                                   "--duration", "30", "--fix-loss", "12:18"),
                         capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr
    r = replay(tmp_path, video=drive / "video.mp4", nmea=drive / "track.nmea")
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) frames without a usable fix", r.stdout)
    assert m, r.stdout
    # No fix from 12 s to 17 s: the last fix before is at 11 s, the first after at 18 s,
    # a 7 s gap that interpolation must not bridge: 50-70 frames at 10 fps (up to 2 s of
    # flagged extrapolation past 11 s is allowed).
    assert 50 <= int(m.group(1)) <= 70, r.stdout
    for ev in _events(tmp_path / "out.db"):
        t = (ev.captured_utc - datetime(2025, 5, 14, 1, 30, tzinfo=UTC)).total_seconds()
        if 14.1 <= t <= 15.9:  # deep in the gap: no place is invented
            assert ev.position is None and ev.attributes["vehicle"] is None


@pytest.mark.slow
def test_gpsd_restart_in_the_middle_of_a_drive_is_survived(tmp_path: Path) -> None:
    """A real gpsd serving the drive dies at ~14 s and comes back ~5 s later: the replay
    goes on, counts the frames of the outage as without fix, reconnects, and the findings
    after it are placed again."""
    drive = tmp_path / "drive"
    sim = subprocess.run(agent_cmd("simulate-drive", "--seed", "7", "--out", str(drive),
                                   "--duration", "40"),
                         capture_output=True, text=True, timeout=300)
    assert sim.returncode == 0, sim.stderr
    log = drive / "track.nmea"
    lines = log.read_text().splitlines(keepends=True)
    tail = tmp_path / "tail.nmea"  # what the receiver says from 20 s on
    tail.write_text("".join(ln for ln in lines if ln[7:13] >= "013020"))
    port = free_port()
    fake = Gpsfake(log, port=port, cycle_s=0.5).start()
    t0 = time.monotonic()
    proc = subprocess.Popen(agent_cmd("replay", "--video", str(drive / "video.mp4"),
                                      "--nmea", str(log), "--gpsd", f"127.0.0.1:{port}",
                                      "--db", str(tmp_path / "out.db")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(max(0.0, 14 - (time.monotonic() - t0)))
        fake.stop()
        time.sleep(max(0.0, 19.5 - (time.monotonic() - t0)))
        fake = Gpsfake(tail, port=port, cycle_s=0.5).start()
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        fake.stop()
    assert proc.returncode == 0, err
    assert re.search(r"gpsd reconnected [1-9]\d* times", out), out
    assert "lost gpsd" in err
    m = re.search(r"(\d+) frames without a usable fix", out)
    assert m and int(m.group(1)) >= 20, out  # ~6 s of outage at 10 fps, minus 2 s flagged
    events = _events(tmp_path / "out.db")
    late = [e for e in events if e.label == "banner"]  # seen 29-34 s, after the restart
    assert late and all(e.position is not None for e in late), [e.attributes for e in events]


def test_the_sample_drive_gives_one_finding_per_object_in_its_place(tmp_path: Path) -> None:
    """The README's first command: the bundled drive, replayed and scored by the CLI."""
    r = replay(tmp_path)
    assert r.returncode == 0, r.stderr
    # the drive is below 1 m/s for 66 frames around a red light (18.0-23.75 s): after the
    # first 3 s of it (sampling.stationary_after_s) no frame is analysed until it moves on;
    # while it moves, one every sampling.every_m
    m = re.search(r"(\d+) frames analysed; not analysed: (\d+) while the vehicle stood, "
                  r"(\d+) before it had gone", r.stdout)
    assert m and 30 <= int(m.group(2)) <= 45, r.stdout
    assert int(m.group(1)) + int(m.group(2)) + int(m.group(3)) == 600, r.stdout
    ev = subprocess.run(agent_cmd("evaluate", "--truth", str(SAMPLE / "truth.json"),
                                  "--db", str(tmp_path / "out.db"), "--json"),
                        capture_output=True, text=True, timeout=60)
    assert ev.returncode == 0, ev.stderr
    res = json.loads(ev.stdout)
    # precision 0.8 measured (5 findings, one false): no more false findings than that
    assert res["recall"] >= 0.75 and res["precision"] >= 0.75, res
    assert res["events_per_object"] <= 1.25, res
    assert res["position_error_m_p50"] <= 8.0, res
    for e in _events(tmp_path / "out.db"):
        # privacy ran on every picture, with the models a unit ships, not the fallbacks
        red = e.attributes["redaction"]
        assert red["ran"] is True, red
        assert (red["face_detector"], red["plate_detector"]) == ("blazeface", "korean_plates")


DRIVE_SEEDS = (21, 22, 23, 24, 25, 26, 27, 28)
"""Evaluation drives: seeds no training scene and no sample drive uses (stream 1 vs 2/3)."""


@pytest.mark.slow
def test_generated_drives_meet_the_evaluation_targets(tmp_path: Path) -> None:
    """Pooled over eight fresh generated drives: recall at least 0.9, at most 1.1 findings
    per object, median position error at most 5 m (the issue's targets). Precision is held
    at 0.8, short of the 0.9 aimed for: the false findings left are cars, bushes, a
    pedestrian and far signs that the model takes for findings even on the zoomed-in second
    look. This test keeps it from getting worse. What it measured is what the model card's
    drives section must state (models/train/drives.py writes it; figures within
    drives.TOLERANCE, since a replay nearly always repeats to the bit but not always), so a
    retrained model or changed defaults with a stale card fail here."""
    truth: list[TruthObject] = []
    found: list[tuple[str, float | None, float | None]] = []

    def simulate(seed: int) -> subprocess.CompletedProcess:
        return subprocess.run(agent_cmd("simulate-drive", "--seed", str(seed), "--out",
                                        str(tmp_path / f"drive{seed}"), "--duration", "60"),
                              capture_output=True, text=True, timeout=300)

    # The simulator is single-threaded: two drives at once on two cores.
    with ThreadPoolExecutor(2) as pool:
        sims = list(pool.map(simulate, DRIVE_SEEDS))
    for seed, sim in zip(DRIVE_SEEDS, sims, strict=True):
        drive = tmp_path / f"drive{seed}"
        assert sim.returncode == 0, sim.stderr
        db = tmp_path / f"drive{seed}.db"
        r = subprocess.run(agent_cmd("replay", "--video", str(drive / "video.mp4"), "--nmea",
                                     str(drive / "track.nmea"), "--db", str(db), "--quiet"),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        truth += [TruthObject(f"{seed}/{o.id}", o.label, o.lat, o.lon)
                  for o in load_truth(drive / "truth.json")]
        found += [(e.label, e.position.lat if e.position else None,
                   e.position.lon if e.position else None) for e in _events(db)]
    s = score(truth, found)
    print(json.dumps(s.as_json()))
    assert s.objects >= 10
    assert s.recall >= 0.9, s
    assert s.precision >= 0.8, s
    assert s.events_per_object <= 1.1, s
    assert s.position_error_m_p50 is not None and s.position_error_m_p50 <= 5.0, s
    drives = load_drives()
    model = DetectorConfig().model_path()
    problems = drives.differences(drives.CARD.read_text(encoding="utf-8"),
                                  {EventsConfig().confirm_score: s}, model, DRIVE_SEEDS, 60.0,
                                  partial=True)
    assert not problems, (f"{drives.CARD.name}'s drives section is not what this run "
                          "measured:\n" + "\n".join(problems) + "\nrun python "
                          f"models/train/drives.py {model} --write")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_killed_real_time_replay_takes_its_gpsfake_and_gpsd_with_it(tmp_path: Path) -> None:
    proc = subprocess.Popen(agent_cmd("replay", "--video", str(SAMPLE / "video.mp4"),
                                      "--nmea", str(SAMPLE / "track.nmea"), "--speed", "1",
                                      "--db", str(tmp_path / "out.db"), "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        fake: list[int] = []
        deadline = time.monotonic() + 60
        while not fake and time.monotonic() < deadline:  # the agent's guard, then gpsfake
            fake = [g for c in _children(proc.pid) for g in _children(c)
                    if "gpsfake" in _cmdline(g)]
            time.sleep(0.1)
        assert fake, "no gpsfake started"
        gpsd: list[int] = []
        while not gpsd and time.monotonic() < deadline:
            gpsd = [c for c in _children(fake[0]) if "gpsd" in _cmdline(c)]
            time.sleep(0.1)
        assert gpsd, "gpsfake started no gpsd"
        time.sleep(2.0)  # well into the drive
    finally:
        proc.kill()
        proc.wait()
    left = fake + gpsd
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [(p, _cmdline(p)) for p in left if _alive(p)]


def test_a_log_whose_time_runs_backwards_is_replayed_with_a_warning(tmp_path: Path) -> None:
    """A log with its first 20 s again at the end (two recordings joined): the replay says
    so, uses each time once, and finds what it finds without the repeat."""
    lines = (SAMPLE / "track.nmea").read_text().splitlines(keepends=True)
    joined = tmp_path / "joined.nmea"
    joined.write_text("".join(lines + lines[:40]))
    r = replay(tmp_path, nmea=joined)
    assert r.returncode == 0, r.stderr
    assert ("its time runs backwards once (first at line 123: 01:30:00.000 after "
            "01:31:00.000) and 20 receiver cycles repeat an earlier time") in r.stdout
    assert "5 findings stored" in r.stdout


def test_findings_sort_after_everything_in_the_outbox_even_made_under_a_clock_far_ahead(
        tmp_path: Path) -> None:
    """The outbox holds a finding whose id was made while the clock read 2040: the
    replay's findings are made after it, and their ids say so; each says its time is
    the recording's."""
    import uuid

    from tests.conftest import make_event

    ms_2040 = int(datetime(2040, 1, 1, tzinfo=UTC).timestamp() * 1000)
    ahead = str(uuid.UUID(int=(ms_2040 << 80) | (0x7 << 76) | (0x2 << 62) | 7))
    with Store(tmp_path / "out.db") as s:
        s.add(make_event(0).replace(id=ahead))
    r = replay(tmp_path)
    assert r.returncode == 0, r.stderr
    with Store(tmp_path / "out.db") as s:
        made = [e.event for e in s.iter_events()]
    assert made[0].id == ahead and len(made) == 6
    assert all(e.id > ahead and e.attributes["time_source"] == "recording" for e in made[1:])
