"""GPS: a real gpsd fed by gpsfake, and the position at a frame's capture time."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.geo import destination, haversine_m
from agent.gps import ClockCheck, FixHistory, GpsdReader
from agent.nmea import format_gga, format_rmc
from agent.records import Fix
from tests.conftest import NMEA_DIR, Gpsfake, wait_until

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
START = (37.6584, 126.8320)


def driving_north(speed_mps: float = 14.0, seconds: int = 20) -> list[Fix]:
    """1 Hz fixes of a vehicle driving due north at 50 km/h."""
    out = []
    for s in range(seconds):
        lat, lon = destination(START[0], START[1], 0.0, speed_mps * s)
        out.append(Fix(T0 + timedelta(seconds=s), lat, lon, 3, speed_mps, 0.0, 3.0))
    return out


def test_position_is_interpolated_to_the_frame_time() -> None:
    h = FixHistory()
    h.extend(driving_north())
    tag = h.position_at(T0 + timedelta(seconds=5.5))
    assert tag is not None and not tag.extrapolated
    want = destination(START[0], START[1], 0.0, 14.0 * 5.5)
    assert haversine_m(tag.lat, tag.lon, *want) < 0.5  # not the 7 m of the nearest fix
    assert tag.heading_deg == pytest.approx(0.0, abs=0.5)
    assert tag.speed_mps == pytest.approx(14.0)


def test_standing_at_a_red_light_keeps_the_heading_it_stopped_with() -> None:
    """Stopped, a receiver reports speed 0, no course, and fixes that wander a metre or two
    each second. That wander is not a direction: every frame at the light (queried in any
    order) is headed north, as the vehicle stopped, and so is the first fix on moving off."""
    fixes = driving_north(seconds=5)
    stop = fixes[-1]
    wander = [(1.3, 80.0), (1.6, 200.0), (1.2, 130.0), (1.8, 290.0), (1.4, 170.0)]
    for s, (d, brg) in enumerate(wander, start=5):
        lat, lon = destination(stop.lat, stop.lon, brg, d)
        fixes.append(Fix(T0 + timedelta(seconds=s), lat, lon, 3, 0.0, None, 3.0))
    h = FixHistory()
    h.extend(fixes)
    for t in (9.0, 6.5, 5.0, 7.0, 8.5, 5.5):
        tag = h.position_at(T0 + timedelta(seconds=t))
        assert tag is not None and tag.heading_deg == pytest.approx(0.0, abs=0.5), t


def test_brief_extrapolation_is_flagged_and_longer_gives_nothing() -> None:
    h = FixHistory(max_extrapolate_s=2.0)
    h.extend(driving_north(seconds=5))
    tag = h.position_at(T0 + timedelta(seconds=5.0))  # one second past the last fix
    assert tag is not None and tag.extrapolated and tag.accuracy_m > 3.0
    want = destination(START[0], START[1], 0.0, 14.0 * 5)
    assert haversine_m(tag.lat, tag.lon, *want) < 1.0
    assert h.position_at(T0 + timedelta(seconds=9)) is None


def test_a_gap_in_the_track_is_not_bridged() -> None:
    h = FixHistory(max_gap_s=5.0)
    fixes = driving_north(seconds=30)
    h.extend(fixes[:10] + fixes[20:])  # ten seconds in a tunnel
    assert h.position_at(T0 + timedelta(seconds=15)) is None
    assert h.position_at(T0 + timedelta(seconds=22.5)) is not None


def test_no_fix_fixes_are_ignored() -> None:
    h = FixHistory()
    h.add(Fix(T0, None, None, 1))
    assert len(h) == 0 and h.position_at(T0) is None


def test_a_frame_is_placed_in_gps_time_whatever_the_system_clock_says() -> None:
    """A Pi that booted without a clock (year 2000), whose clock NTP then steps by a day:
    frames are tied to GPS time through the monotonic clock, so the step changes nothing."""
    c = ClockCheck()
    sys_now, mono = datetime(2000, 1, 1, tzinfo=UTC), 1000.0
    for k in range(5):  # the first sentence of each cycle arrives 0.05 s after its second
        host = sys_now + timedelta(seconds=k + 0.05)
        c.observe_toff(T0 + timedelta(seconds=k), host, now_utc=host, now_mono=mono + k + 0.05)
    assert c.system_offset_s(sys_now, mono) == pytest.approx((T0 - sys_now).total_seconds()
                                                             - 0.05)
    frame_mono = mono + 7.25
    want = T0 + timedelta(seconds=7.2)
    assert abs((c.frame_time(sys_now, frame_mono) - want).total_seconds()) < 1e-6
    stepped = sys_now + timedelta(days=1)  # NTP sets the clock: the stamp moves, GPS time not
    assert abs((c.frame_time(stepped, frame_mono) - want).total_seconds()) < 1e-6


def test_gpsds_delivery_delay_is_not_counted_as_clock_offset() -> None:
    """gpsd sends a 1 Hz receiver's fix about half a second after its time (when the last
    sentence of the cycle is in); the TOFF report stamps the first. Fixes alone would put
    every frame half a second early (7 m at 50 km/h); once TOFF is seen it is what counts."""
    c = ClockCheck()
    mono0 = 500.0
    sys0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    for k in range(5):
        arrival = k + 0.55
        c.observe_fix(T0 + timedelta(seconds=k), now_utc=sys0 + timedelta(seconds=arrival),
                      now_mono=mono0 + arrival)
    early = c.frame_time(sys0, mono0 + 3.0)
    assert c.source == "arrival"
    assert (T0 + timedelta(seconds=3) - early).total_seconds() == pytest.approx(0.55)
    for k in range(5, 10):
        first = k + 0.01
        c.observe_toff(T0 + timedelta(seconds=k), sys0 + timedelta(seconds=first),
                       now_utc=sys0 + timedelta(seconds=first + 0.002),
                       now_mono=mono0 + first + 0.002)
        c.observe_fix(T0 + timedelta(seconds=k), now_utc=sys0 + timedelta(seconds=k + 0.55),
                      now_mono=mono0 + k + 0.55)
    assert c.source == "toff"
    right = c.frame_time(sys0, mono0 + 3.0)
    assert (T0 + timedelta(seconds=3) - right).total_seconds() == pytest.approx(0.01)


def test_gpsd_reader_follows_a_real_receiver_through_gpsd(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    caplog.set_level(logging.INFO)
    fake = Gpsfake(NMEA_DIR / "bundg_zeus_9.log").start()
    h = FixHistory(max_age_s=1e9)
    reader = GpsdReader("127.0.0.1", fake.port, h, timeout_s=3)
    reader.start()
    try:
        wait_until(lambda: len(h) >= 20, 30, "fixes through gpsd")
    finally:
        reader.close()
        fake.stop()
    last = h.last()
    assert last is not None and 52.8 < last.lat < 52.9 and 5.2 < last.lon < 5.4  # IJsselmeer
    # the log is from 2018: the system clock looks wrong by years against it
    offset = reader.clock.system_offset_s()
    assert offset is not None and offset < -3e7
    assert "system clock is off" in caplog.text and "GPS fix acquired" in caplog.text
    assert reader.clock.source == "toff"  # gpsd reports when each cycle began arriving


def test_gpsd_restart_is_survived(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    fake = Gpsfake(NMEA_DIR / "bundg_zeus_9.log", loop=True).start()
    h = FixHistory(max_age_s=1e9)
    reader = GpsdReader("127.0.0.1", fake.port, h, timeout_s=2, reconnect_min_s=0.2,
                        reconnect_max_s=0.5)
    reader.start()
    try:
        wait_until(lambda: reader.stats.fixes >= 5, 30, "first fixes")
        fake.stop()
        wait_until(lambda: not reader.stats.connected, 10, "loss of gpsd noticed")
        assert reader.stats.fix_lost_since is not None  # reported as fix loss
        before = reader.stats.fixes
        fake.start()
        wait_until(lambda: reader.stats.fixes > before + 5, 40, "fixes after the restart")
    finally:
        reader.close()
        fake.stop()
    assert reader.stats.reconnects >= 1
    assert "lost gpsd" in caplog.text
    # the outage is timed on this machine's clock: gpsd's replayed log time is years ago
    m = re.search(r"GPS fix regained after (\d+) s", caplog.text)
    assert m and int(m.group(1)) >= 1, caplog.text


def test_a_receiver_without_fix_gives_no_position() -> None:
    fake = Gpsfake(NMEA_DIR / "bu303-nofix.log", cycle_s=0.05).start()
    h = FixHistory()
    reader = GpsdReader("127.0.0.1", fake.port, h, timeout_s=2)
    done = threading.Event()
    reader.start()
    try:
        wait_until(lambda: reader.stats.reports >= 3, 30, "TPV reports")
        time.sleep(0.5)
        done.set()
    finally:
        reader.close()
        fake.stop()
    assert reader.stats.fixes == 0 and len(h) == 0


def test_time_running_backwards_through_gpsd_is_warned_and_a_new_time_line_followed(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """A receiver that restarts with its clock 20 s back: a stray fix from the past is
    ignored with a warning; once the receiver stays on the new time, the track starts
    again from there instead of ignoring it for good."""
    caplog.set_level(logging.INFO)
    fixes = driving_north(seconds=30)
    log = tmp_path / "restart.nmea"
    sentences = [s for f in fixes[:25] + fixes[5:15] for s in (format_rmc(f), format_gga(f))]
    log.write_text("\r\n".join(sentences) + "\r\n")
    fake = Gpsfake(log, cycle_s=0.1).start()  # slow enough to be read from the start
    h = FixHistory(max_age_s=1e9)
    reader = GpsdReader("127.0.0.1", fake.port, h, timeout_s=3)
    reader.start()
    try:
        wait_until(lambda: "starting the track again" in caplog.text
                   and (last := h.last()) is not None and last.utc == fixes[14].utc, 30,
                   "the new time line followed to its end")
    finally:
        reader.close()
        fake.stop()
    assert "GPS time ran backwards: a fix at 09:30:05 after one at 09:30:24" in caplog.text
    assert "starting the track again from 09:30:05" in caplog.text
    assert h.position_at(T0 + timedelta(seconds=20)) is None  # the old line is gone


def test_where_a_findings_time_comes_from(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    """GPS when the clock check has a fix's time; else the system clock, 'ntp' only once
    timesyncd says it set it (and it is not before this agent was made)."""
    import agent.gps as gps

    flag = tmp_path / "synchronized"
    monkeypatch.setattr(gps, "NTP_SYNCED", flag)
    c = ClockCheck()
    assert c.time_source() == "unverified"
    flag.touch()
    assert c.time_source() == "ntp"
    c.observe_fix(T0)
    assert c.time_source() == "gps"
