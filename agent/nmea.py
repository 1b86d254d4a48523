"""NMEA 0183: reading receiver logs into fixes, and writing the sentences a receiver sends.

Reading is for logs from real receivers (replayed drives, routes, gpsfake inputs): they mix
talkers (GP, GN, GL, BD), leave fields empty, lose the fix, interleave proprietary ``$P...``
sentences, carry checksum errors and binary noise. A bad line is counted and skipped, never
raised. The sentences of one receiver cycle (same UTC time: RMC, GGA, GNS, GLL, VTG, GSA, GST,
ZDA) are merged into one :class:`~agent.records.Fix`.

Writing (RMC, GGA) is what the simulator uses to record the track a receiver would output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pynmea2

from agent.records import Fix

KNOT_MPS = 1852.0 / 3600.0
UERE_M = 5.0
"""Metres of horizontal error per unit of HDOP, when the receiver gives no GST."""
FIX_QUALITIES = frozenset({1, 2, 3, 4, 5, 6})
"""GGA qualities that are a real position (7 manual input and 8 simulation are not)."""


@dataclass(slots=True)
class NmeaStats:
    """What a log held: ``lines`` non-blank, non-comment lines; ``sentences`` that parsed;
    ``bad`` that did not (checksum, garbage, malformed fields); ``fixes`` produced."""

    lines: int = 0
    sentences: int = 0
    bad: int = 0
    fixes: int = 0
    date_assumed: bool = False
    """No RMC/ZDA date in the log and none given: the system's UTC date was used."""
    backwards: int = 0
    """Times the log's time went back from one receiver cycle to the next."""
    repeated: int = 0
    """Cycles whose time an earlier, not adjacent, cycle already had."""
    first_backwards: str = ""
    """Where it first went back: 'line 121: 01:30:00.000 after 01:30:59.000'."""


@dataclass(slots=True)
class _Cycle:
    """The sentences of one receiver epoch (one UTC time)."""

    tod: time
    line: int = 0
    """Line number (from 1) of its first sentence."""
    date: date | None = None
    lat: float | None = None
    lon: float | None = None
    valid: bool | None = None
    """True: some sentence says the position is a fix; False: only no-fix reports."""
    source_rank: int = 99
    alt: float | None = None
    speed: float | None = None
    track: float | None = None
    gsa_mode: int | None = None
    hdop: float | None = None
    gst_m: float | None = None
    seen: set[str] = field(default_factory=set)


def _checksum(body: str) -> str:
    c = 0
    for ch in body:
        c ^= ord(ch)
    return f"{c:02X}"


def _checksum_ok(line: str) -> bool:
    body, star, cs = line[1:].partition("*")
    return bool(star) and cs[:2].upper() == _checksum(body)


def _num(text: str) -> float | None:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _lines(source: str | Path | Iterable[str | bytes]) -> Iterable[str]:
    if isinstance(source, str | Path):
        data = Path(source).read_bytes()
        raw: Iterable[str | bytes] = data.replace(b"\r", b"\n").split(b"\n")
    else:
        raw = source
    for item in raw:
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else item
        yield from text.replace("\r", "\n").split("\n")


def _position(msg: pynmea2.NMEASentence) -> tuple[float, float] | None:
    """Latitude and longitude, or None when the fields are empty or out of range."""
    if not getattr(msg, "lat", "") or not getattr(msg, "lon", ""):
        return None
    lat, lon = float(msg.latitude), float(msg.longitude)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError("position out of range")
    return lat, lon


def _take_position(c: _Cycle, msg: pynmea2.NMEASentence, valid: bool, rank: int) -> None:
    pos = _position(msg)
    if valid and pos is not None:
        if not c.valid or rank < c.source_rank:
            c.lat, c.lon = pos
            c.source_rank = rank
        c.valid = True
    elif c.valid is None:
        c.valid = False


def _apply(c: _Cycle, msg: pynmea2.NMEASentence) -> None:
    kind = msg.sentence_type
    c.seen.add(kind)
    if kind == "RMC":
        _take_position(c, msg, msg.status == "A" and getattr(msg, "mode_indicator", "A") != "N",
                       1)
        if msg.datestamp:
            c.date = msg.datestamp
        if (v := _num(msg.spd_over_grnd)) is not None:
            c.speed = v * KNOT_MPS
        if (v := _num(msg.true_course)) is not None:
            c.track = v % 360.0
    elif kind == "GGA":
        qual = int(msg.gps_qual) if str(msg.gps_qual).strip() not in ("", "None") else 0
        _take_position(c, msg, qual in FIX_QUALITIES, 0)
        if qual in FIX_QUALITIES and (v := _num(msg.altitude)) is not None:
            c.alt = v
        if (v := _num(msg.horizontal_dil)) is not None:
            c.hdop = v
    elif kind == "GNS":
        modes = str(msg.mode_indicator or "")
        ok = bool(modes) and any(m in "ADPRFE" for m in modes)
        _take_position(c, msg, ok, 2)
        if ok and c.alt is None and (v := _num(msg.altitude)) is not None:
            c.alt = v
        if (v := _num(msg.hdop)) is not None and c.hdop is None:
            c.hdop = v
    elif kind == "GLL":
        _take_position(c, msg, msg.status == "A" and getattr(msg, "faa_mode", "A") != "N", 3)
    elif kind == "VTG":
        if c.speed is None:
            if (v := _num(msg.spd_over_grnd_kmph)) is not None:
                c.speed = v / 3.6
            elif (v := _num(msg.spd_over_grnd_kts)) is not None:
                c.speed = v * KNOT_MPS
        if c.track is None and (v := _num(msg.true_track)) is not None:
            c.track = v % 360.0
    elif kind == "GSA":
        mode = int(msg.mode_fix_type) if str(msg.mode_fix_type).strip() in ("1", "2", "3") else None
        if mode is not None:
            c.gsa_mode = max(c.gsa_mode or 0, mode)
    elif kind == "GST":
        a, b = _num(msg.std_dev_latitude), _num(msg.std_dev_longitude)
        if a is not None and b is not None:
            c.gst_m = math.hypot(a, b)
    elif kind == "ZDA" and c.date is None and msg.day and msg.month and msg.year:
        c.date = date(int(msg.year), int(msg.month), int(msg.day))


def _assign_dates(cycles: list[_Cycle], given: date | None, stats: NmeaStats) -> list[date]:
    """A date for every cycle: its own, else carried from neighbours across midnight."""
    n = len(cycles)
    out: list[date | None] = [c.date for c in cycles]
    first = next((i for i, d in enumerate(out) if d is not None), None)
    if first is None:
        if given is None:
            stats.date_assumed = True
            given = datetime.now(UTC).date()
        out[0] = given
        first = 0
    for i in range(first + 1, n):  # forward: a time going back by half a day is midnight
        if out[i] is None:
            prev = out[i - 1]
            assert prev is not None
            back = _secs(cycles[i - 1].tod) - _secs(cycles[i].tod) > 43200
            out[i] = prev + timedelta(days=1) if back else prev
    for i in range(first - 1, -1, -1):
        nxt = out[i + 1]
        assert nxt is not None
        fwd = _secs(cycles[i].tod) - _secs(cycles[i + 1].tod) > 43200
        out[i] = nxt - timedelta(days=1) if fwd else nxt
    return [d for d in out if d is not None]


def _secs(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _to_fix(c: _Cycle, day: date) -> Fix | None:
    if not c.seen & {"RMC", "GGA", "GNS", "GLL"}:
        return None  # a cycle of satellites or depth only says nothing about position
    utc = datetime.combine(day, c.tod.replace(tzinfo=None), tzinfo=UTC)
    if c.valid:
        mode = c.gsa_mode if c.gsa_mode in (2, 3) else (3 if c.alt is not None else 2)
        eph = c.gst_m if c.gst_m is not None else (c.hdop * UERE_M if c.hdop else None)
        return Fix(utc=utc, lat=c.lat, lon=c.lon, mode=mode, speed_mps=c.speed,
                   track_deg=c.track, eph_m=eph, alt_m=c.alt)
    return Fix(utc=utc, lat=None, lon=None, mode=1, speed_mps=None, track_deg=None)


def read_nmea_stats(source: str | Path | Iterable[str | bytes], date: date | None = None
                    ) -> tuple[list[Fix], NmeaStats]:
    """Fixes (time order) and counts from a log file or an iterable of lines.

    `date` is the UTC date for logs without RMC or ZDA dates (GGA-only receivers); without
    it such logs take the system's UTC date, as gpsd does, and say so in the stats.
    Raises OSError only when a given file cannot be read.
    """
    stats = NmeaStats()
    cycles: list[_Cycle] = []
    cur: _Cycle | None = None
    for lineno, line in enumerate(_lines(source), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stats.lines += 1
        start = line.find("$")
        if start < 0:
            stats.bad += 1
            continue
        line = line[start:]
        try:
            try:
                msg = pynmea2.parse(line)
            except pynmea2.SentenceTypeError:
                if not _checksum_ok(line):
                    raise
                stats.sentences += 1  # well-formed, of a type we have no use for
                continue
            if isinstance(msg, pynmea2.ProprietarySentence):
                stats.sentences += 1
                continue
            tod = getattr(msg, "timestamp", None)
            if not isinstance(tod, time):
                tod = None
            if tod is not None and (cur is None or tod != cur.tod):
                cur = _Cycle(tod, lineno)
                cycles.append(cur)
            if cur is not None and (tod is not None or msg.sentence_type in ("VTG", "GSA",
                                                                             "GST")):
                _apply(cur, msg)
            elif tod is None and msg.sentence_type in ("RMC", "GGA", "GNS", "GLL"):
                pass  # no time, no fix to report (receivers do this before their first fix)
        except (pynmea2.ParseError, pynmea2.ChecksumError, pynmea2.SentenceTypeError,
                ValueError, TypeError, AttributeError, IndexError, OverflowError):
            stats.bad += 1
            continue
        stats.sentences += 1
    fixes: list[Fix] = []
    if cycles:
        days = _assign_dates(cycles, date, stats)
        _count_disorder(cycles, days, stats)
        for c, day in zip(cycles, days, strict=True):
            fx = _to_fix(c, day)
            if fx is not None:
                fixes.append(fx)
    fixes.sort(key=lambda f: f.utc)
    merged: list[Fix] = []
    for fx in fixes:  # the same epoch twice (a receiver's repeat): keep the better one
        if merged and merged[-1].utc == fx.utc:
            if fx.mode > merged[-1].mode:
                merged[-1] = fx
            continue
        merged.append(fx)
    stats.fixes = len(merged)
    return merged, stats


def _count_disorder(cycles: list[_Cycle], days: list[date], stats: NmeaStats) -> None:
    """Count where the log's time runs backwards or repeats (a receiver reset, two logs
    joined, a log played twice): the fixes are used in time order, but it is said."""
    seen: set[datetime] = set()
    prev: datetime | None = None
    for c, day in zip(cycles, days, strict=True):
        t = datetime.combine(day, c.tod.replace(tzinfo=None))
        if prev is not None and t < prev:
            stats.backwards += 1
            if not stats.first_backwards:
                stats.first_backwards = f"line {c.line}: {_clock(t)} after {_clock(prev)}"
        if t in seen:
            stats.repeated += 1
        seen.add(t)
        prev = t


def _clock(t: datetime) -> str:
    return t.strftime("%H:%M:%S.%f")[:-3]


def describe_disorder(path: str | Path, stats: NmeaStats) -> str | None:
    """One line on a log whose time runs backwards or repeats; None when it does not."""
    if not stats.backwards and not stats.repeated:
        return None
    parts = []
    if stats.backwards:
        times = "once" if stats.backwards == 1 else f"{stats.backwards} times"
        parts.append(f"its time runs backwards {times} (first at {stats.first_backwards})")
    if stats.repeated:
        parts.append(f"{stats.repeated} receiver cycles repeat an earlier time")
    return (f"NMEA log {path}: " + " and ".join(parts) + "; its fixes are used once each, "
            "in time order, which is wrong if it joins two different drives")


def read_nmea(source: str | Path | Iterable[str | bytes], date: date | None = None
              ) -> list[Fix]:
    """Fixes in time order from an NMEA log (see :func:`read_nmea_stats`)."""
    return read_nmea_stats(source, date)[0]


# --- writing --------------------------------------------------------------------------

def _sentence(body: str) -> str:
    return f"${body}*{_checksum(body)}"


def _hms(ts: datetime) -> str:
    ts = ts.astimezone(UTC)
    return ts.strftime("%H%M%S") + f".{ts.microsecond // 10000:02d}"


def _angle(value: float, deg_digits: int, pos: str, neg: str) -> tuple[str, str]:
    """Degrees -> NMEA (d)ddmm.mmmmmm and hemisphere; six decimals of minutes is ~2 mm."""
    total = round(abs(value) * 60.0, 6)
    d = int(total // 60)
    m = total - d * 60
    return f"{d:0{deg_digits}d}{m:09.6f}", (pos if value >= 0 else neg)


def format_rmc(fix: Fix, talker: str = "GP") -> str:
    """An RMC sentence (no CR/LF) for a fix: status 'V' and empty position without a fix."""
    ok = fix.usable
    lat = lon = ("", "")
    if ok:
        assert fix.lat is not None and fix.lon is not None
        lat = _angle(fix.lat, 2, "N", "S")
        lon = _angle(fix.lon, 3, "E", "W")
    spd = f"{fix.speed_mps / KNOT_MPS:.2f}" if ok and fix.speed_mps is not None else ""
    crs = f"{fix.track_deg % 360.0:.2f}" if ok and fix.track_deg is not None else ""
    body = ",".join([f"{talker}RMC", _hms(fix.utc), "A" if ok else "V", *lat, *lon, spd, crs,
                     fix.utc.astimezone(UTC).strftime("%d%m%y"), "", "", "A" if ok else "N"])
    return _sentence(body)


def format_gga(fix: Fix, talker: str = "GP", satellites: int = 9, hdop: float = 0.9,
               geoid_m: float = 20.0) -> str:
    """A GGA sentence (no CR/LF) for a fix: quality 0 and empty fields without a fix."""
    ok = fix.usable
    if ok:
        assert fix.lat is not None and fix.lon is not None
        lat, lon = _angle(fix.lat, 2, "N", "S"), _angle(fix.lon, 3, "E", "W")
        alt = f"{fix.alt_m:.1f}" if fix.alt_m is not None else ""
        fields = [*lat, *lon, "1", f"{satellites:02d}", f"{hdop:.1f}", alt, "M",
                  f"{geoid_m:.1f}", "M", "", ""]
    else:
        fields = ["", "", "", "", "0", "00", "", "", "M", "", "M", "", ""]
    return _sentence(",".join([f"{talker}GGA", _hms(fix.utc), *fields]))
