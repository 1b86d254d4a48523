"""Two vehicles drive past the same objects: the agent replays the sample drive twice (the
second van's receiver reads 6 m off, a day later) into one broker, and two collectors that
share the subscription write into one PostgreSQL + PostGIS store. The office must make one
complaint per object, with its sightings from both drives."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from office.geo import distance_m
from tests.conftest import Mosquitto, agent_cmd
from tests.office_rig import OfficeServer, wait_counts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "drive"

pytestmark = pytest.mark.slow


def _checksum(body: str) -> str:
    x = 0
    for ch in body:
        x ^= ord(ch)
    return f"{x:02X}"


def _shift_angle(value: str, hemi: str, delta_deg: float, deg_digits: int) -> str:
    deg = int(value[:deg_digits]) + float(value[deg_digits:]) / 60 + delta_deg
    d = int(deg)
    return f"{d:0{deg_digits}d}{(deg - d) * 60:09.6f}"


def shifted_log(src: Path, dst: Path, north_m: float, east_m: float, days: int) -> None:
    """The same drive as another receiver would log it: positions off by a few metres,
    dates ``days`` later (RMC's ddmmyy), checksums made again."""
    lines = []
    for line in src.read_text().splitlines():
        body = line[1:line.index("*")]
        f = body.split(",")
        if f[0].endswith("RMC") and f[3]:
            lat = int(f[3][:2]) + float(f[3][2:]) / 60
            f[3] = _shift_angle(f[3], f[4], north_m / 111_195.0, 2)
            f[5] = _shift_angle(f[5], f[6], east_m / (111_195.0 * math.cos(math.radians(lat))),
                                3)
            dd, mm, yy = int(f[9][:2]), f[9][2:4], f[9][4:]
            f[9] = f"{dd + days:02d}{mm}{yy}"
        elif f[0].endswith("GGA") and f[2]:
            lat = int(f[2][:2]) + float(f[2][2:]) / 60
            f[2] = _shift_angle(f[2], f[3], north_m / 111_195.0, 2)
            f[4] = _shift_angle(f[4], f[5], east_m / (111_195.0 * math.cos(math.radians(lat))),
                                3)
        body = ",".join(f)
        lines.append(f"${body}*{_checksum(body)}")
    dst.write_text("\r\n".join(lines) + "\r\n")


def replay(tmp: Path, device: str, nmea: Path, port: int) -> list[dict]:
    cfg = tmp / f"{device}.toml"
    cfg.write_text(f'[device]\nid = "{device}"\n')
    db = tmp / f"{device}.db"
    r = subprocess.run(agent_cmd("replay", "--video", str(SAMPLE / "video.mp4"), "--nmea",
                                 str(nmea), "--speed", "max", "--config", str(cfg), "--db",
                                 str(db), "--broker", f"127.0.0.1:{port}", "--quiet"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = subprocess.run(agent_cmd("events", "export", "--db", str(db), "--format", "jsonl"),
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def reference_groups(findings: list[dict], merge_m: float) -> list[set[str]]:
    """Single-linkage groups of same-class findings within merge_m: an independent
    reference for what the office should make."""
    parent = {f["id"]: f["id"] for f in findings}

    def root(i: str) -> str:
        while parent[i] != i:
            i = parent[i]
        return i
    for a in findings:
        for b in findings:
            if a["id"] < b["id"] and a["label"] == b["label"] and a["position"] and \
                    b["position"] and distance_m(a["position"]["lat"], a["position"]["lon"],
                                                 b["position"]["lat"],
                                                 b["position"]["lon"]) <= merge_m:
                parent[root(a["id"])] = root(b["id"])
    groups: dict[str, set[str]] = {}
    for f in findings:
        if f["position"]:
            groups.setdefault(root(f["id"]), set()).add(f["id"])
    return list(groups.values())


def test_two_drives_two_collectors_one_complaint_per_object(tmp_path: Path,
                                                           postgres) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    url = postgres.new_database()
    a = OfficeServer(tmp_path, broker.port, url, client_id="office-a", name="office-a")
    b = OfficeServer(tmp_path, broker.port, url, client_id="office-b", name="office-b")
    try:
        second = tmp_path / "van-b.nmea"
        shifted_log(SAMPLE / "track.nmea", second, north_m=3.0, east_m=5.0, days=1)
        found_a = replay(tmp_path, "van-a", SAMPLE / "track.nmea", broker.port)
        found_b = replay(tmp_path, "van-b", second, broker.port)
        assert len(found_a) >= 3 and len(found_b) >= 3
        located = [f for f in found_a + found_b if f["position"]]
        wait_counts(a, timeout=60, sightings=len(found_a) + len(found_b))
        want = reference_groups(located, 15.0)

        features = a.get("/api/complaints.geojson")["features"]
        assert b.get("/api/complaints.geojson")["features"] == features
        got = []
        for f in features:
            detail = a.get(f"/api/complaints/{f['id']}")
            got.append({s["event_id"] for s in detail["sightings_list"]})
        assert sorted(map(sorted, got)) == sorted(map(sorted, want))
        # Each object the first van found was found again by the second: one complaint,
        # both vans, first seen on the first day and last seen on the next.
        both = [f["properties"] for f in features
                if f["properties"]["vehicles"] == ["van-a", "van-b"]]
        assert len(both) >= len(found_a) - 1, [f["properties"] for f in features]
        for p in both:
            assert p["first_seen"][:10] < p["last_seen"][:10]
        # The truth: every labelled complaint object the drive found is one complaint.
        truth = json.loads((SAMPLE / "truth.json").read_text())["objects"]
        for obj in truth:
            lon, lat = zip(*(f["geometry"]["coordinates"] for f in features), strict=True)
            near = [f for i, f in enumerate(features) if f["properties"]["class"] == obj["class"]
                    and distance_m(obj["lat"], obj["lon"], lat[i], lon[i]) < 15]
            assert len(near) <= 1, f"{obj} is {len(near)} complaints"
        # The two collectors shared the work.
        got_a = a.get("/api/stats")["collector"]["received"]
        got_b = b.get("/api/stats")["collector"]["received"]
        assert got_a.get("events", 0) > 0 and got_b.get("events", 0) > 0, (got_a, got_b)
        assert got_a["events"] + got_b["events"] == len(found_a) + len(found_b)
    finally:
        a.stop()
        b.stop()
        broker.stop()
