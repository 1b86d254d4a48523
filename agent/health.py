"""Health: systemd's notify protocol, a watchdog that vouches only for a live
pipeline, and the status line an operator reads in ``systemctl status``.

Under ``Type=notify`` systemd gives the agent a datagram socket (``$NOTIFY_SOCKET``:
a path, or a name in the abstract namespace written with a leading ``@``) and, with
``WatchdogSec=``, the interval it expects pings in (``$WATCHDOG_USEC``). The agent
sends ``READY=1`` once its outbox is open and its stages are started, ``STATUS=``
lines, ``WATCHDOG=1`` pings and ``STOPPING=1``. The protocol is a few lines of
datagrams, so it is written here rather than taken from a package.

Every ``health.telemetry_interval_s`` the health stage also builds a telemetry report
(the stages' figures and the machine's: :func:`machine`) and publishes it at QoS 0 when
connected (a stale report is noise), and writes it as ``telemetry.json`` beside the outbox
for ``patrol-agent status``. A figure the machine does not have is left out, never 0.

A ping says "every stage is making progress", not "the process exists". Each stage's
loop beats a :class:`~agent.stages.Heartbeat` every time round (at least once a second
when idle, and while it waits to retry a camera or gpsd). If a running stage has not
beaten for ``health.stall_s`` (a camera driver hung in a read, an inference that never
returns, a commit stuck in the kernel) the pings stop, the stage is named in the log
once, and systemd kills and restarts the agent when ``WatchdogSec=`` runs out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.stages import Heartbeat

log = logging.getLogger("health")

STATUS_EVERY_S = 5.0
"""How often the STATUS= line is renewed."""
TELEMETRY_SCHEMA = 1

# Where a Raspberry Pi's kernel tells its temperature and whether it throttled.
THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
THROTTLED = Path("/sys/devices/platform/soc/soc:firmware/get_throttled")
THROTTLE_BITS = {0: "under_voltage", 1: "frequency_capped", 2: "throttled",
                 3: "soft_temperature_limit", 16: "under_voltage_since_boot",
                 17: "frequency_capped_since_boot", 18: "throttled_since_boot",
                 19: "soft_temperature_limit_since_boot"}


def cpu_temperature_c() -> float | None:
    try:
        return int(THERMAL.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def throttling() -> dict[str, bool] | None:
    """The Pi firmware's throttling flags (sysfs, else ``vcgencmd get_throttled``); None
    where there is no such firmware."""
    text = None
    try:
        text = THROTTLED.read_text().strip()
    except OSError:
        exe = shutil.which("vcgencmd")
        if exe is not None:
            try:
                out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True,
                                     timeout=2).stdout
                text = out.strip().partition("=")[2]
            except (OSError, subprocess.SubprocessError):
                text = None
    if not text:
        return None
    try:
        bits = int(text, 16)
    except ValueError:
        return None
    return {name: bool(bits >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine(store_dir: Path) -> dict[str, Any]:
    """The machine's figures; what it does not have is left out."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        out["disk_free_mb"] = round(shutil.disk_usage(store_dir).free / 1024 / 1024, 1)
    if (rss := rss_mb()) is not None:
        out["rss_mb"] = rss
    with contextlib.suppress(OSError):
        out["load_1m"] = round(os.getloadavg()[0], 2)
    if (temp := cpu_temperature_c()) is not None:
        out["cpu_temperature_c"] = round(temp, 1)
    if (flags := throttling()) is not None:
        out["throttling"] = flags
    return out


def without_none(value: Any) -> Any:
    """The report without the figures nobody has (absent, not zero or null)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    return value


class Notifier:
    """systemd's notify socket; sends nothing (and says False) when not under systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address: str | None = None
        if address:
            # '@name' is the abstract namespace: a leading NUL byte on the wire.
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        self._failed = False
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=value`` lines; False if it could not be sent."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as e:
            if not self._failed:  # said once: systemd may be restarting, or gone
                self._failed = True
                log.warning("cannot notify systemd at %s: %s", self.address.lstrip("\0"), e)
            return False
        self._failed = False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Health:
    """The health stage's loop: watchdog pings while every running stage beats, and the
    status line. ``hearts()`` gives the running stages' heartbeats by name; ``status()``
    the line to show."""

    def __init__(self, notifier: Notifier, hearts: Callable[[], dict[str, Heartbeat]],
                 status: Callable[[], str], stall_s: float, watchdog: bool = True,
                 telemetry: Callable[[], dict[str, Any]] | None = None,
                 publish: Callable[[bytes], object] | None = None,
                 telemetry_every_s: float = 30.0, state_file: Path | None = None) -> None:
        """``telemetry`` builds a report every ``telemetry_every_s``; ``publish`` sends it,
        and it is written to ``state_file`` (for ``patrol-agent status``)."""
        self.notifier = notifier
        self.telemetry = telemetry
        self.publish = publish
        self.telemetry_every_s = telemetry_every_s
        self.state_file = state_file
        self.hearts = hearts
        self.status = status
        self.stall_s = stall_s
        self.watchdog = watchdog and notifier.watchdog_s is not None
        self.heartbeat = Heartbeat()
        self.stalled: list[str] = []
        """Stages that stopped making progress (the pings have stopped)."""
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        ping_every = (self.notifier.watchdog_s or 1.0) / 2
        tick = min(1.0, ping_every)
        next_status = 0.0
        next_ping = 0.0
        next_report = time.monotonic() + min(5.0, self.telemetry_every_s)
        while not self._stop.wait(tick):
            self.heartbeat.beat()
            now = time.monotonic()
            stalled = sorted(name for name, hb in self.hearts().items()
                             if hb.age() > self.stall_s)
            if stalled and not self.stalled:
                log.error("%s made no progress for %.0f s (stuck?): no more watchdog pings, "
                          "so systemd restarts the agent", " and ".join(stalled), self.stall_s)
            elif self.stalled and not stalled:
                log.warning("%s going again", " and ".join(self.stalled))
            self.stalled = stalled
            if self.watchdog and not stalled and now >= next_ping:
                self.notifier.send("WATCHDOG=1")
                next_ping = now + ping_every
            if self.telemetry is not None and now >= next_report:
                next_report = now + self.telemetry_every_s
                self._report()
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                line = self.status()
                if stalled:
                    line = f"STALLED: {', '.join(stalled)}; {line}"
                self.notifier.send(f"STATUS={line}")

    def _report(self) -> None:
        assert self.telemetry is not None
        report = without_none({"schema": TELEMETRY_SCHEMA, **self.telemetry(),
                               "stalled": self.stalled or None})
        data = json.dumps(report, separators=(",", ":")).encode()
        if self.publish is not None:
            self.publish(data)
        if self.state_file is not None:
            tmp = self.state_file.with_name(self.state_file.name + ".new")
            try:  # no fsync: a report lost to a power cut is replaced 30 s later
                tmp.write_bytes(data)
                os.replace(tmp, self.state_file)
            except OSError as e:
                log.debug("cannot write %s: %s", self.state_file, e)
