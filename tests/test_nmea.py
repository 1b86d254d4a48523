"""NMEA reading on real receiver logs (GPSD's test logs) and writing round trips."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pynmea2
import pytest

from agent.geo import haversine_m
from agent.nmea import format_gga, format_rmc, read_nmea, read_nmea_stats
from agent.records import Fix

LOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmea"
# where each receiver was (from the logs' own headers); None: it never had a real fix
EXPECTED = {
    "bu303-nofix.log": None,  # binary SiRF, never a fix
    "garmin-geko201.log": None,  # demo mode: RMC 'V', GGA quality 8 (simulation)
    "bundg_zeus_9.log": (52.85, 5.31),
    "haicom-305N.log": (-27.21, 153.05),
    "neo-m8n.log": (44.07, -121.31),
    "sirfstarv-nmea.log": (44.07, -121.31),
    "skytraq-dgps.log": (44.07, -121.31),
    "telit-he910.log": (50.84, 4.35),
}


def test_every_log_is_known() -> None:
    assert {p.name for p in LOGS.glob("*.log")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_receiver_logs_parse(name: str) -> None:
    fixes, stats = read_nmea_stats(LOGS / name)
    assert stats.lines == stats.sentences + stats.bad
    assert stats.fixes == len(fixes)
    assert [f.utc for f in fixes] == sorted(f.utc for f in fixes)
    assert all(f.utc.tzinfo is not None for f in fixes)
    usable = [f for f in fixes if f.usable]
    where = EXPECTED[name]
    if where is None:
        assert usable == []
        return
    assert len(usable) >= 10
    assert not stats.date_assumed
    for f in usable:
        assert f.lat is not None and f.lon is not None
        assert abs(f.lat - where[0]) < 0.1 and abs(f.lon - where[1]) < 0.1
        assert f.mode in (2, 3)


def test_binary_log_is_all_bad_lines() -> None:
    fixes, stats = read_nmea_stats(LOGS / "bu303-nofix.log")
    assert fixes == [] and stats.bad == stats.lines > 0


def test_no_fix_periods_are_reported_as_no_fix() -> None:
    fixes = read_nmea(LOGS / "haicom-305N.log")  # starts without a fix (RMC 'V', GGA 0)
    assert any(f.mode == 1 and f.lat is None for f in fixes)
    assert any(f.usable for f in fixes)


def test_rmc_and_gga_of_one_second_become_one_fix() -> None:
    fixes = read_nmea(LOGS / "sirfstarv-nmea.log")
    first = fixes[0]
    assert first.utc == datetime(2019, 2, 5, 2, 9, 35, tzinfo=UTC)
    assert first.alt_m == pytest.approx(1123.9)  # from GGA
    assert first.track_deg == pytest.approx(359.11)  # from RMC
    assert first.mode == 3  # from GSA
    assert len({f.utc for f in fixes}) == len(fixes)


GOOD_RMC = "$GNRMC,171926.00,A,4404.14063,N,12118.85478,W,0.117,,180315,,,A*76"
GOOD_GGA = "$GNGGA,171926.00,4404.14063,N,12118.85478,W,1,12,0.91,1147.2,M,-21.3,M,,*44"


def test_bad_lines_are_counted_and_skipped() -> None:
    lines = [
        "# a comment",
        GOOD_RMC,
        GOOD_RMC[:-2] + "00",  # checksum error
        "\x00\xff\x12garbage",
        "$GPGGA,171927.00,4404.1,N,121xx.8,W,1,12*",  # truncated
        GOOD_GGA,
        "$PGRME,15.0,M,22.5,M,27.0,M*1A",  # proprietary: fine, not used
        "",
    ]
    fixes, stats = read_nmea_stats(lines)
    assert stats.bad == 3
    assert stats.sentences == 3
    assert len(fixes) == 1 and fixes[0].usable
    assert fixes[0].alt_m == pytest.approx(1147.2)


def test_garbage_before_a_sentence_on_the_same_line_is_dropped() -> None:
    fixes = read_nmea([b"\x93\x01\xfe" + GOOD_RMC.encode()])
    assert len(fixes) == 1 and fixes[0].usable


def test_gga_only_log_takes_the_given_date_and_crosses_midnight() -> None:
    lines = ["$GPGGA,235959.00,3733.990000,N,12658.680000,E,1,09,0.9,38.0,M,20.0,M,,",
             "$GPGGA,000000.00,3733.990100,N,12658.680000,E,1,09,0.9,38.0,M,20.0,M,,"]
    fixes = read_nmea(lines, date=date(2025, 12, 31))
    assert [f.utc for f in fixes] == [datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC),
                                      datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)]
    _, stats = read_nmea_stats(lines)
    assert stats.date_assumed


@pytest.mark.parametrize("lat,lon", [(37.6584123, 126.8320456), (-33.8567844, -151.2152967),
                                     (0.0000005, -0.0000005), (59.9999999, 10.9999999)])
def test_format_round_trip(lat: float, lon: float) -> None:
    utc = datetime(2025, 5, 14, 1, 30, 7, 250000, tzinfo=UTC)
    fix = Fix(utc=utc, lat=lat, lon=lon, mode=3, speed_mps=12.5, track_deg=271.5, alt_m=38.2)
    rmc, gga = format_rmc(fix), format_gga(fix)
    for s in (rmc, gga):
        pynmea2.parse(s, check=True)  # checksum present and right
    (back,) = read_nmea([rmc, gga])
    assert back.utc == utc
    assert back.lat is not None and back.lon is not None
    assert haversine_m(lat, lon, back.lat, back.lon) < 0.1
    assert back.speed_mps == pytest.approx(12.5, abs=0.01)
    assert back.track_deg == pytest.approx(271.5, abs=0.01)
    assert back.alt_m == pytest.approx(38.2, abs=0.05)
    assert back.mode == 3


def test_no_fix_round_trip() -> None:
    fix = Fix(utc=datetime(2025, 5, 14, 1, 30, 8, tzinfo=UTC), lat=None, lon=None, mode=1)
    rmc, gga = format_rmc(fix), format_gga(fix)
    assert rmc.split(",")[2] == "V" and gga.split(",")[6] == "0"
    (back,) = read_nmea([rmc, gga])
    assert back.mode == 1 and not back.usable
