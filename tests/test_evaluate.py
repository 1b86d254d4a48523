"""Scoring findings against ground truth: recall, precision, duplicates, position error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agent.evaluate import TruthObject, score
from agent.geo import destination
from agent.records import Position
from agent.store import Store
from tests.conftest import agent_cmd, make_event

BASE = (37.6584, 126.8320)
A = TruthObject("a", "banner", *BASE)
B = TruthObject("b", "garbage", *destination(*BASE, 0.0, 100.0))
C = TruthObject("c", "banner", *destination(*BASE, 0.0, 200.0))


def near(o: TruthObject, m: float, label: str | None = None) -> tuple[str, float, float]:
    lat, lon = destination(o.lat, o.lon, 90.0, m)
    return (label or o.label, lat, lon)


def test_perfect_findings() -> None:
    s = score([A, B, C], [near(A, 2), near(B, 4), near(C, 6)])
    assert (s.recall, s.precision, s.events_per_object) == (1.0, 1.0, 1.0)
    assert s.position_error_m_p50 == pytest.approx(4.0, abs=0.01)
    assert s.position_error_m_p95 == pytest.approx(5.8, abs=0.01)


def test_duplicates_misses_wrong_class_and_no_position() -> None:
    events = [near(A, 2), near(A, 5), near(B, 3, "banner"), near(C, 40), ("banner", None, None)]
    s = score([A, B, C], events, match_radius_m=15)
    assert s.matched == 1 and s.missed == ["b", "c"]
    assert s.recall == pytest.approx(1 / 3)
    assert s.events_per_object == 2.0  # A was reported twice
    assert s.precision == pytest.approx(2 / 5)
    assert s.false_positives == 3


def test_two_close_objects_each_get_their_own_event() -> None:
    a2 = TruthObject("a2", "banner", *destination(*BASE, 90.0, 8.0))
    s = score([A, a2], [near(A, 1), near(a2, 1)])
    assert s.matched == 2 and s.events_per_object == 1.0


def test_evaluate_cli_json(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"objects": [
        {"id": o.id, "class": o.label, "lat": o.lat, "lon": o.lon} for o in (A, B, C)]
        + [{"id": "d", "class": "bin", "lat": BASE[0], "lon": BASE[1]}]}))
    with Store(tmp_path / "o.db") as st:
        for o, m in ((A, 3.0), (B, 1.0)):
            lat, lon = destination(o.lat, o.lon, 0.0, m)
            st.add(make_event(1, o.label).replace(position=Position(lat, lon, 3.0, "object")))
    r = subprocess.run(agent_cmd("evaluate", "--truth", str(truth), "--db", str(tmp_path / "o.db"),
                                 "--json"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0  # the bin is a distractor
    assert m["events_per_object"] == 1.0 and m["missed"] == ["c"]
    assert m["position_error_m_p50"] == pytest.approx(2.0, abs=0.01)
