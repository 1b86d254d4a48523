"""``patrol-agent bench`` as a technician runs it: a process, its own Mosquitto, the sample
drive; every figure the issue names is in its JSON and the table. The figures themselves
are not judged here (a benchmark prints them; see the README's table)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import agent_cmd

KEYS = ("ceiling_fps", "pipeline_fps", "baseline_fps", "commit_latency_ms_p95",
        "invoke_ms_median", "peak_rss_mb", "stationary_cpu_ratio")


@pytest.mark.slow
def test_bench_measures_the_pipeline_against_the_ceiling_and_the_baseline(
        tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    r = subprocess.run(agent_cmd("bench", "--json", str(out), "--baseline-frames", "60",
                                 "--minutes", "3", "--backlog", "5000"),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    for k in KEYS:
        assert isinstance(res[k], float) and res[k] > 0, (k, res[k])
    # the pipeline ran the whole drive and the broker acknowledged every finding
    assert res["pipeline_frames"] == 600 and res["findings"] >= 3, res
    assert res["delivered"] == res["findings"]
    for stage in ("decode", "invoke", "track", "finding", "commit", "capture_to_commit",
                  "capture_to_puback"):
        assert res["stages"][stage]["n"] > 0, stage
    assert "| pipeline, decode to PUBACK |" in r.stdout and "| invoke |" in r.stdout
    # cost as work grows: three laps of the drive, each lap's findings new and delivered
    assert res["long_frames"] == 1800 and res["long_findings"] >= 9
    assert res["long_delivered"] == res["long_findings"]
    for k in ("long_frame_ms_first_min", "long_frame_ms_last_min", "long_rss_mb_first_min",
              "long_rss_mb_last_min"):
        assert res[k] > 0, k
    assert set(res["backlog"]) == {"100", "5000"}
    for figures in res["backlog"].values():
        assert all(figures[k] > 0 for k in ("commit_ms", "pick_ms", "startup_ms",
                                            "delivery_per_s")), figures
    assert "| start a unit on it |" in r.stdout


def test_bench_without_its_drive_says_which_file_is_missing(tmp_path: Path) -> None:
    r = subprocess.run(agent_cmd("bench", "--video", str(tmp_path / "none.mp4")),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "none.mp4: no such file" in r.stderr, r.stderr
