"""The whole pipeline on recorded drives: camera → detector → tracker → events → store."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.store import Store
from tests.conftest import NMEA_DIR, agent_cmd

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"


def replay(tmp_path: Path, *extra: str, nmea: Path = SAMPLE / "track.nmea",
           video: Path = SAMPLE / "video.mp4") -> subprocess.CompletedProcess[str]:
    return subprocess.run(agent_cmd("replay", "--video", str(video), "--nmea", str(nmea),
                                    "--db", str(tmp_path / "out.db"), "--quiet", *extra),
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("log", sorted(p.name for p in NMEA_DIR.glob("*.log")))
def test_any_receivers_log_never_crashes_a_replay(tmp_path: Path, log: str) -> None:
    """Real receivers' logs (mostly standing still, elsewhere on Earth, another year):
    the replay runs, and frames without a usable fix are counted, never given a place."""
    r = replay(tmp_path, "--start", "2025-05-14T01:30:00Z", nmea=NMEA_DIR / log)
    assert r.returncode == 0, r.stderr
    assert "600 frames without a usable fix" in r.stdout
    with Store(tmp_path / "out.db") as s:
        assert all(e.event.position is None for e in s.iter_events())
