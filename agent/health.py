"""Health: systemd's notify protocol, a watchdog that vouches only for a live
pipeline, and the status line an operator reads in ``systemctl status``.

Under ``Type=notify`` systemd gives the agent a datagram socket (``$NOTIFY_SOCKET``:
a path, or a name in the abstract namespace written with a leading ``@``) and, with
``WatchdogSec=``, the interval it expects pings in (``$WATCHDOG_USEC``). The agent
sends ``READY=1`` once its outbox is open and its stages are started, ``STATUS=``
lines, ``WATCHDOG=1`` pings and ``STOPPING=1``. The protocol is a few lines of
datagrams, so it is written here rather than taken from a package.

A ping says "every stage is making progress", not "the process exists". Each stage's
loop beats a :class:`~agent.stages.Heartbeat` every time round (at least once a second
when idle, and while it waits to retry a camera or gpsd). If a running stage has not
beaten for ``health.stall_s`` (a camera driver hung in a read, an inference that never
returns, a commit stuck in the kernel) the pings stop, the stage is named in the log
once, and systemd kills and restarts the agent when ``WatchdogSec=`` runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from agent.stages import Heartbeat

log = logging.getLogger("health")

STATUS_EVERY_S = 5.0
"""How often the STATUS= line is renewed."""


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
                 status: Callable[[], str], stall_s: float, watchdog: bool = True) -> None:
        self.notifier = notifier
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
            if now >= next_status:
                next_status = now + STATUS_EVERY_S
                line = self.status()
                if stalled:
                    line = f"STALLED: {', '.join(stalled)}; {line}"
                self.notifier.send(f"STATUS={line}")
