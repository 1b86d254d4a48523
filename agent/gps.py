"""GPS: the gpsd client, the fix history, and the position at a frame's time.

A finding's place is the vehicle's track *interpolated to the frame's capture
time*, not the last fix: at 50 km/h one second of lag is 14 m. Past the last
fix the track is extrapolated only briefly (``max_extrapolate_s``) and the
result is flagged; across a gap longer than ``max_gap_s`` (a tunnel) there is
no position at all, never an invented one.

The gpsd client is ``gpsdclient`` rather than ``gpsd-py3``: gpsd-py3 has not
been released since 2017, polls with ``?POLL`` and keeps module-global
connection state, which does not survive gpsd restarting under a long-running
daemon. gpsdclient is a small, maintained reader of gpsd's JSON stream that we
can close from another thread and simply reconnect.

A Pi has no real-time clock: its system time can be anything until NTP or GPS
sets it, and NTP may step it at any moment. So a live frame's time is its
*monotonic* capture time, and :class:`ClockCheck` ties GPS time to the
monotonic clock. It measures that tie with gpsd's ``TOFF`` reports: gpsd
stamps the arrival of the *first* sentence of each receiver cycle with the
host's clock, so the offset does not include the delay until gpsd has the
whole cycle and sends its TPV (half a second to a second with a 1 Hz NMEA
receiver: 7 to 14 m at 50 km/h). Only where gpsd sends no TOFF is the TPV's
arrival used, and the agent says so once.
"""

from __future__ import annotations

import bisect
import enum
import logging
import math
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.backoff import Backoff
from agent.geo import destination, haversine_m, initial_bearing_deg
from agent.records import Fix
from agent.stages import Faults, Heartbeat

log = logging.getLogger("gps")

DEFAULT_ACCURACY_M = 5.0
"""Assumed horizontal error when the receiver reports none (typical consumer GPS)."""
STILL_MPS = 1.0
"""Below this reported speed the vehicle stands (a red light, a parked unit): its course
and the metre or two its fixes wander are receiver noise, not a direction."""


@dataclass(frozen=True, slots=True)
class GeoTag:
    """Where the vehicle was at one instant, and how sure we are."""

    lat: float
    lon: float
    heading_deg: float | None
    speed_mps: float | None
    accuracy_m: float
    extrapolated: bool = False
    fix_age_s: float = 0.0
    """Seconds from the nearest fix used."""


def _interp_angle(a: float, b: float, w: float) -> float:
    d = (b - a + 540.0) % 360.0 - 180.0
    return (a + w * d) % 360.0


def _moving(f: Fix) -> bool:
    """Whether the vehicle was moving at this fix (as far as its reported speed says)."""
    return f.speed_mps is None or f.speed_mps >= STILL_MPS


def _moving_heading(a: Fix, b: Fix) -> float | None:
    """The direction of travel from fix ``a`` to fix ``b``; None when the vehicle stood."""
    moving = [f for f in (a, b) if _moving(f)]
    if not moving:
        return None
    if len(moving) == 1 and moving[0].track_deg is not None:
        # Stopping or moving off: the moving fix's course, not a chord one end of which
        # is a standing receiver's wander.
        return moving[0].track_deg
    if haversine_m(a.lat, a.lon, b.lat, b.lon) > 1.0:  # type: ignore[arg-type]
        return initial_bearing_deg(a.lat, a.lon, b.lat, b.lon)  # type: ignore[arg-type]
    if a.track_deg is not None and b.track_deg is not None and (b.speed_mps or 0) > STILL_MPS:
        return _interp_angle(a.track_deg, b.track_deg, 0.5)
    return None


def _heading(fixes: Sequence[Fix], i: int) -> float | None:
    """The vehicle's heading between ``fixes[i]`` and ``fixes[i + 1]``. Standing still it
    is the heading it stopped with (the last moving step before), never the bearing of
    GPS noise: that turned a banner seen at a red light round to behind the vehicle."""
    for j in range(i, -1, -1):
        h = _moving_heading(fixes[j], fixes[j + 1])
        if h is not None:
            return h
    return None


NTP_SYNCED = Path("/run/systemd/timesync/synchronized")
"""systemd-timesyncd's mark that the system clock has been set from NTP."""
EARLIEST_TRUSTED = datetime(2026, 1, 1, tzinfo=UTC)
"""A system clock before this agent was made is wrong, whatever says it is synchronized."""


def system_clock_synced() -> bool:
    """Whether the system clock has been set from NTP (and is not before this agent)."""
    return NTP_SYNCED.exists() and datetime.now(UTC) >= EARLIEST_TRUSTED


FrameClock = Callable[[datetime, float], datetime]
"""(captured_utc, captured_mono) of a frame -> the instant it shows, on the GPS's time scale.
A recording's frames already carry it; a live camera's are mapped by :class:`ClockCheck`."""


def recording_time(captured_utc: datetime, captured_mono: float) -> datetime:
    """The :data:`FrameClock` of a recording: its frames are stamped with the drive's time."""
    return captured_utc


class Added(enum.Enum):
    """What :meth:`FixHistory.add` did with a fix."""

    ADDED = "added"
    UPDATED = "updated"
    """A later report of the newest fix's own second (gpsd sends several per cycle)."""
    BACKWARDS = "backwards"
    """Older than the newest fix: time ran backwards (a restarted receiver, a looping log)."""
    UNUSABLE = "unusable"


class FixHistory:
    """A short, time-ordered history of usable fixes, safe to share between threads."""

    def __init__(self, max_age_s: float = 300.0, max_gap_s: float = 5.0,
                 max_extrapolate_s: float = 2.0) -> None:
        self.max_age_s = max_age_s
        self.max_gap_s = max_gap_s
        self.max_extrapolate_s = max_extrapolate_s
        self._times: deque[float] = deque()
        self._fixes: deque[Fix] = deque()
        self._lock = threading.Lock()

    def add(self, fix: Fix) -> Added:
        """Keep a usable fix. A fix older than the newest is not kept: interpolation needs
        one track in time order, and the caller decides how loudly to say so."""
        if not fix.usable:
            return Added.UNUSABLE
        t = fix.utc.timestamp()
        with self._lock:
            if self._times and t <= self._times[-1]:
                if t == self._times[-1]:
                    self._fixes[-1] = fix
                    return Added.UPDATED
                return Added.BACKWARDS
            self._times.append(t)
            self._fixes.append(fix)
            while self._times and t - self._times[0] > self.max_age_s:
                self._times.popleft()
                self._fixes.popleft()
        return Added.ADDED

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._fixes.clear()

    def extend(self, fixes: Iterable[Fix]) -> None:
        for f in fixes:
            self.add(f)

    def __len__(self) -> int:
        return len(self._fixes)

    def last(self) -> Fix | None:
        with self._lock:
            return self._fixes[-1] if self._fixes else None

    def position_at(self, utc: datetime) -> GeoTag | None:
        """The vehicle's position at ``utc``; None when no usable fix is near enough."""
        # Under the lock, on the history itself: copying it for every frame cost time in
        # proportion to its length (a replayed hour holds 3600 fixes; patrol-agent bench).
        with self._lock:
            return self._position_at(utc.timestamp())

    def _position_at(self, t: float) -> GeoTag | None:
        times, fixes = self._times, self._fixes
        if not fixes:
            return None
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            return self._tag(fixes[i], fixes, i, 0.0)
        if i == 0:
            # Before the first fix: only a tiny step back (a frame just before it).
            if times[0] - t > self.max_extrapolate_s:
                return None
            return self._extrapolate(fixes[0], fixes, 0, t - times[0])
        if i == len(times):
            dt = t - times[-1]
            if dt > self.max_extrapolate_s:
                return None
            return self._extrapolate(fixes[-1], fixes, len(fixes) - 1, dt)
        a, b = fixes[i - 1], fixes[i]
        ta, tb = times[i - 1], times[i]
        if tb - ta > self.max_gap_s:
            return None  # a gap in the track (tunnel, fix loss): no invented position
        w = (t - ta) / (tb - ta)
        lat = a.lat + w * (b.lat - a.lat)  # type: ignore[operator]
        lon = a.lon + w * (b.lon - a.lon)  # type: ignore[operator]
        heading = _heading(fixes, i - 1)
        speed = None
        if a.speed_mps is not None and b.speed_mps is not None:
            speed = a.speed_mps + w * (b.speed_mps - a.speed_mps)
        acc = max(a.eph_m or DEFAULT_ACCURACY_M, b.eph_m or DEFAULT_ACCURACY_M)
        return GeoTag(lat, lon, heading, speed, acc, False, min(t - ta, tb - t))

    def _tag(self, f: Fix, fixes: Sequence[Fix], i: int, age: float) -> GeoTag:
        if i + 1 < len(fixes):
            heading = _heading(fixes, i)
        elif i > 0:
            heading = _heading(fixes, i - 1)
        else:
            heading = f.track_deg if _moving(f) else None
        return GeoTag(f.lat, f.lon, heading, f.speed_mps,  # type: ignore[arg-type]
                      f.eph_m or DEFAULT_ACCURACY_M, False, age)

    def _extrapolate(self, f: Fix, fixes: Sequence[Fix], i: int, dt: float) -> GeoTag:
        base = self._tag(f, fixes, i, abs(dt))
        speed = f.speed_mps or 0.0
        heading = base.heading_deg if base.heading_deg is not None else f.track_deg
        lat, lon = f.lat, f.lon
        if heading is not None and speed > 0.5:
            lat, lon = destination(f.lat, f.lon, heading, speed * dt)  # type: ignore[arg-type]
        # Error grows with the distance guessed.
        acc = base.accuracy_m + 0.5 * speed * abs(dt)
        return GeoTag(lat, lon, heading, speed, acc, True, abs(dt))  # type: ignore[arg-type]


class ClockCheck:
    """GPS time against this machine's clocks (a Pi has no RTC until NTP or GPS sets it).

    The offset kept is GPS time minus ``time.monotonic()``: a frame stamped with its
    monotonic capture time maps to GPS time whatever NTP does to the system clock
    meanwhile. Samples come from gpsd's TOFF reports (the host's clock when the first
    sentence of a cycle arrived, against that cycle's GPS time); until a TOFF is seen,
    from fixes' arrival, which counts gpsd's delivery delay as offset. The median of
    recent samples shrugs off the odd late one.
    """

    def __init__(self, warn_s: float = 2.0, window: int = 15) -> None:
        self.warn_s = warn_s
        self._toff: deque[float] = deque(maxlen=window)
        self._arrival: deque[float] = deque(maxlen=window)
        self._warned = False
        self._said_arrival = False
        self._lock = threading.Lock()

    def observe_toff(self, gps_utc: datetime, host_utc: datetime,
                     now_utc: datetime | None = None, now_mono: float | None = None) -> None:
        """A TOFF report: the cycle of ``gps_utc`` began arriving at ``host_utc`` (the
        host's clock, as gpsd read it). ``now_*`` are for tests; default: the clocks now."""
        now_utc = now_utc or datetime.now(UTC)
        now_mono = time.monotonic() if now_mono is None else now_mono
        mono_then = now_mono - (now_utc - host_utc).total_seconds()
        with self._lock:
            self._toff.append(gps_utc.timestamp() - mono_then)
        self._check(now_utc, now_mono)

    def observe_fix(self, gps_utc: datetime, now_utc: datetime | None = None,
                    now_mono: float | None = None) -> None:
        """A fix that arrived now: a sample late by gpsd's delivery delay, used only
        while no TOFF has been seen."""
        now_utc = now_utc or datetime.now(UTC)
        now_mono = time.monotonic() if now_mono is None else now_mono
        with self._lock:
            self._arrival.append(gps_utc.timestamp() - now_mono)
            # Said once, and only of a gpsd that never sent one (not while TOFF samples
            # are gathered again after a reset).
            fallback = not self._toff and len(self._arrival) >= 5 and not self._said_arrival
            if fallback:
                self._said_arrival = True
        if fallback:
            log.info("gpsd sends no TOFF reports: frames are tied to GPS time by when its "
                     "fixes arrive, which counts its delivery delay (up to a second)")
        self._check(now_utc, now_mono)

    def _check(self, now_utc: datetime, now_mono: float) -> None:
        off = self.system_offset_s(now_utc, now_mono)
        with self._lock:
            samples = len(self._toff) or len(self._arrival)
        if off is not None and abs(off) > self.warn_s and not self._warned and samples >= 3:
            self._warned = True
            log.warning("system clock is off by %+.1f s against GPS; events are stamped "
                        "with GPS time", off)

    def reset(self) -> None:
        """Forget every sample (GPS time jumped: the old tie no longer holds)."""
        with self._lock:
            if self._toff:
                self._said_arrival = True  # TOFF will come again; no need to say otherwise
            self._toff.clear()
            self._arrival.clear()

    @property
    def source(self) -> str | None:
        """'toff', 'arrival', or None before any sample."""
        with self._lock:
            return "toff" if self._toff else ("arrival" if self._arrival else None)

    @property
    def mono_offset_s(self) -> float | None:
        """GPS time (POSIX seconds) minus ``time.monotonic()``; None before any sample."""
        with self._lock:
            samples = self._toff or self._arrival
            return statistics.median(samples) if samples else None

    def system_offset_s(self, now_utc: datetime | None = None,
                        now_mono: float | None = None) -> float | None:
        """GPS minus system time, seconds; None before any sample."""
        off = self.mono_offset_s
        if off is None:
            return None
        now_utc = now_utc or datetime.now(UTC)
        now_mono = time.monotonic() if now_mono is None else now_mono
        return off + now_mono - now_utc.timestamp()

    def time_source(self) -> str:
        """Where :meth:`frame_time` gets UTC now: 'gps' (tied to the receiver), 'ntp' (the
        system clock, set by NTP) or 'unverified' (the system clock, which may be 1970 or
        far off after a boot without a real-time clock)."""
        if self.mono_offset_s is not None:
            return "gps"
        return "ntp" if system_clock_synced() else "unverified"

    def frame_time(self, captured_utc: datetime, captured_mono: float) -> datetime:
        """The :data:`FrameClock` of a live camera: the GPS time of a frame captured at
        ``captured_mono``; its system-clock stamp until GPS time is known."""
        off = self.mono_offset_s
        if off is None:
            return captured_utc
        return datetime.fromtimestamp(captured_mono + off, UTC)


def fix_from_tpv(tpv: dict[str, Any]) -> Fix | None:
    """A Fix from one gpsd TPV report, or None when it carries no time."""
    t = tpv.get("time")
    if isinstance(t, str):
        try:
            t = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(t, datetime):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)

    def num(key: str) -> float | None:
        v = tpv.get(key)
        return float(v) if isinstance(v, int | float) and math.isfinite(v) else None

    eph = num("eph")
    if eph is None:
        ex, ey = num("epx"), num("epy")
        eph = math.hypot(ex, ey) if ex is not None and ey is not None else None
    mode = tpv.get("mode")
    return Fix(utc=t, lat=num("lat"), lon=num("lon"),
               mode=mode if isinstance(mode, int) and 0 <= mode <= 3 else 0,
               speed_mps=num("speed"), track_deg=num("track"), eph_m=eph, epv_m=num("epv"),
               alt_m=num("altMSL") if num("altMSL") is not None else num("alt"))


@dataclass
class GpsStats:
    connected: bool = False
    reports: int = 0
    fixes: int = 0
    mode: int = 0
    reconnects: int = 0
    fix_lost_since: datetime | None = None
    fix_losses: int = 0
    backwards: int = 0
    """Fixes older than the newest one (time ran backwards): not used."""
    satellites_used: int | None = None
    satellites_seen: int | None = None
    """From gpsd's SKY reports; None when the receiver does not say (absent, not zero)."""
    last_error: str = ""
    clock_offset_s: float | None = field(default=None)
    """GPS minus system time, seconds."""


# A run of this many fixes, in order among themselves but all older than the newest
# fix kept, is a new time line (a receiver that restarted, a log played again), not
# strays: the track starts again from them instead of ignoring the receiver for good.
NEW_TIMELINE_FIXES = 3

# TOFF reports (see ClockCheck) come only to clients that also ask for PPS.
WATCH = b'?WATCH={"enable":true,"json":true,"pps":true}\n'


def _gpsd_client(host: str, port: int, timeout_s: float) -> Any:
    """gpsdclient's reader, asking gpsd for TOFF reports as well as fixes."""
    from gpsdclient import GPSDClient

    class Client(GPSDClient):  # type: ignore[misc]
        # gpsdclient's own gpsd_lines() sends a fixed WATCH without "pps"; this is it
        # with ours, so that its version check and JSON layers stay as they are.
        def gpsd_lines(self) -> Iterator[str]:
            self.close()
            self.sock = socket.create_connection((self.host, int(self.port)),
                                                 timeout=self.timeout)
            self.sock.send(WATCH)
            yield from self.sock.makefile("r", encoding="utf-8")

    return Client(host, port, timeout=timeout_s)


def _toff_times(toff: dict[str, Any]) -> tuple[datetime, datetime] | None:
    """(GPS time, host time) of a TOFF report, or None when it is malformed."""
    try:
        real = float(toff["real_sec"]) + float(toff.get("real_nsec", 0)) / 1e9
        host = float(toff["clock_sec"]) + float(toff.get("clock_nsec", 0)) / 1e9
        return datetime.fromtimestamp(real, UTC), datetime.fromtimestamp(host, UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return None


class GpsdReader:
    """Reads TPV and TOFF reports from gpsd on its own thread into a FixHistory and a
    ClockCheck.

    Reconnects with backoff when gpsd goes away (restart, crash) and reports
    fix loss and regain once each, not per report.
    """

    def __init__(self, host: str, port: int, history: FixHistory,
                 clock: ClockCheck | None = None, stop: threading.Event | None = None,
                 timeout_s: float = 5.0, reconnect_min_s: float = 0.5,
                 reconnect_max_s: float = 10.0) -> None:
        self.host, self.port = host, port
        self.history = history
        self.clock = clock or ClockCheck()
        self.stop = stop or threading.Event()
        self.timeout_s = timeout_s
        self.stats = GpsStats()
        self._backoff = Backoff(reconnect_min_s, reconnect_max_s)
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self._had_fix = False
        self._lost_mono = 0.0
        self._behind: list[Fix] = []
        self.faults = Faults("gps", item="report")
        self.heartbeat = Heartbeat()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="gps", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        if self._client is not None:
            self._client.close()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1)

    def run(self) -> None:
        while not self.stop.is_set():
            self.heartbeat.beat()
            self._client = _gpsd_client(self.host, self.port, self.timeout_s)
            try:
                for report in self._client.dict_stream(convert_datetime=False,
                                                       filter=["TPV", "TOFF", "SKY"]):
                    self.heartbeat.beat()
                    if not self.stats.connected:
                        self.stats.connected = True
                        self._backoff.reset()
                        log.info("connected to gpsd at %s:%d", self.host, self.port)
                    with self.faults.guard(f"gpsd report {str(report)[:120]}"):
                        if report.get("class") == "TOFF":
                            if (times := _toff_times(report)) is not None:
                                self.clock.observe_toff(*times)
                        elif report.get("class") == "SKY":
                            self._on_sky(report)
                        else:
                            self._on_tpv(report)
                    if self.stop.is_set():
                        break
                else:
                    raise ConnectionError("gpsd closed the connection")
            except (OSError, ValueError, ConnectionError) as e:
                if self.stop.is_set():
                    break
                self.stats.last_error = str(e) or type(e).__name__
                was = self.stats.connected
                self.stats.connected = False
                self.stats.reconnects += 1
                delay = self._backoff.next_delay()
                if was:
                    log.warning("lost gpsd at %s:%d (%s); reconnecting in %.1f s", self.host,
                                self.port, self.stats.last_error, delay)
                else:
                    log.warning("cannot reach gpsd at %s:%d (%s); retrying in %.1f s",
                                self.host, self.port, self.stats.last_error, delay)
                self._lost_fix(datetime.now(UTC), "gpsd unreachable")
                deadline = time.monotonic() + delay
                while not self.stop.wait(min(1.0, max(0.0, deadline - time.monotonic()))):
                    self.heartbeat.beat()  # waiting to retry is not being stuck
                    if time.monotonic() >= deadline:
                        break
            finally:
                self._client.close()

    def _on_sky(self, sky: dict[str, Any]) -> None:
        used, seen = sky.get("uSat"), sky.get("nSat")
        sats = sky.get("satellites")
        if not isinstance(used, int) and isinstance(sats, list):
            used = sum(1 for s in sats if isinstance(s, dict) and s.get("used") is True)
            seen = len(sats)
        if isinstance(used, int) and used >= 0:
            self.stats.satellites_used = used
        if isinstance(seen, int) and seen >= 0:
            self.stats.satellites_seen = seen

    def _on_tpv(self, tpv: dict[str, Any]) -> None:
        self.stats.reports += 1
        fix = fix_from_tpv(tpv)
        if fix is None:
            return
        self.stats.mode = fix.mode
        if fix.usable:
            added = self.history.add(fix)
            if added is Added.BACKWARDS and not self._new_timeline(fix):
                return
            self._behind.clear()
            self.stats.fixes += 1
            self.clock.observe_fix(fix.utc)
            self.stats.clock_offset_s = self.clock.system_offset_s()
            if self.stats.fix_lost_since is not None:
                # measured on this machine's monotonic clock: the loss may have started
                # with gpsd unreachable, when there was no GPS time to compare with
                lost = time.monotonic() - self._lost_mono
                log.info("GPS fix regained after %.0f s", lost)
                self.stats.fix_lost_since = None
            elif not self._had_fix:
                log.info("GPS fix acquired (mode %dD)", fix.mode)
            self._had_fix = True
        else:
            self._lost_fix(fix.utc, "receiver reports no fix")

    def _new_timeline(self, fix: Fix) -> bool:
        """A fix older than the newest kept. Strays are counted and ignored (warned once
        per run of them); :data:`NEW_TIMELINE_FIXES` in a row, in order among themselves,
        restart the track from them. True when ``fix`` now stands in the history."""
        self.stats.backwards += 1
        newest = self.history.last()
        if not self._behind:
            log.warning("GPS time ran backwards: a fix at %s after one at %s (a restarted "
                        "receiver, or a log played again); ignored unless the receiver "
                        "stays on the new time", fix.utc.strftime("%H:%M:%S"),
                        newest.utc.strftime("%H:%M:%S") if newest else "?")
        if self._behind and fix.utc <= self._behind[-1].utc:
            self._behind.clear()
        self._behind.append(fix)
        if len(self._behind) < NEW_TIMELINE_FIXES:
            return False
        log.warning("GPS time stays %.0f s behind the track so far: starting the track "
                    "again from %s", (newest.utc - fix.utc).total_seconds() if newest else 0,
                    self._behind[0].utc.strftime("%H:%M:%S"))
        self.history.clear()
        self.clock.reset()
        self.history.extend(self._behind)
        self.stats.backwards -= len(self._behind)  # they are used after all
        self.stats.fixes += len(self._behind) - 1  # the caller counts this one
        return True

    def _lost_fix(self, when: datetime, why: str) -> None:
        if self.stats.fix_lost_since is None and self._had_fix:
            self.stats.fix_lost_since = when
            self._lost_mono = time.monotonic()
            self.stats.fix_losses += 1
            log.warning("GPS fix lost (%s): findings get no position until it returns", why)
