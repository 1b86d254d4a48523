"""The link's meter: what a unit on a metered (LTE) link may send now, and what first.

``[link]`` in the config sets a byte budget per UTC day and/or month, an average rate,
how full pictures travel, and which network interfaces cost nothing. The order when the
budget or the link is short (docs/mqtt.md, Metered links):

1. findings (the event and its crop): while any budget has room; when one is used up
   they wait, in the outbox, for the next day or month (none is dropped);
2. full pictures: only while less than ``link.images_below`` of every budget is used
   (and ``link.images`` lets them go at all); a finding whose picture cannot go now is
   delivered without it, and the picture is held until it can (or the office asks);
3. telemetry: only while less than ``link.telemetry_below`` of every budget is used.

Over a cheap interface (the depot's Wi-Fi) everything goes and nothing is counted. The
rate limit is a token bucket over everything sent: a message may overdraw it, and then
nothing more goes until it has refilled, so the average stays at the rate.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from agent.config import LinkConfig

Kind = Literal["finding", "image", "telemetry"]
MB = 1024 * 1024
_SIOCGIFADDR = 0x8915


def interface_of(sock: socket.socket | None) -> str | None:
    """The network interface a connected socket goes out through (by its local IPv4
    address), or None if that cannot be told."""
    if sock is None:
        return None
    try:
        local = sock.getsockname()[0]
    except OSError:
        return None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                req = struct.pack("256s", name.encode()[:15])
                addr = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, req)[20:24])
            except OSError:
                continue  # no IPv4 address on it
            if addr == local:
                return name
    finally:
        probe.close()
    return None


def periods(now: datetime | None = None) -> tuple[str, str]:
    now = now or datetime.now(UTC)
    return f"day:{now:%Y-%m-%d}", f"month:{now:%Y-%m}"


@dataclass
class LinkReport:
    """What telemetry and ``status`` say about the link."""

    cheap: bool = False
    interface: str | None = None
    used_mb_today: float = 0.0
    used_mb_month: float = 0.0
    images_held: int = 0
    telemetry_skipped: int = 0
    holding: list[str] = field(default_factory=list)
    """What is held back now, and why, in words."""


class Meter:
    """Decides, message by message, whether it may go now. Used by the uplink's thread
    only; ``usage`` gives the bytes counted in a period (from the outbox)."""

    def __init__(self, cfg: LinkConfig) -> None:
        self.cfg = cfg
        self.cheap = False
        self.interface: str | None = None
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self.telemetry_skipped = 0

    def on_connect(self, sock: socket.socket | None) -> None:
        self.interface = interface_of(sock) if self.cfg.cheap_interfaces else None
        self.cheap = self.interface is not None and self.interface in self.cfg.cheap_interfaces

    def _budgets(self, used_day: int, used_month: int) -> list[tuple[str, int, float]]:
        out = []
        if self.cfg.budget_mb_per_day is not None:
            out.append(("daily", used_day, self.cfg.budget_mb_per_day * MB))
        if self.cfg.budget_mb_per_month is not None:
            out.append(("monthly", used_month, self.cfg.budget_mb_per_month * MB))
        return out

    def allows(self, kind: Kind, nbytes: int, used_day: int, used_month: int) -> bool:
        """May ``nbytes`` of ``kind`` go now, given what was used (budgets only)?"""
        if self.cheap:
            return True
        share = {"finding": 1.0, "image": self.cfg.images_below,
                 "telemetry": self.cfg.telemetry_below}[kind]
        for _, used, budget in self._budgets(used_day, used_month):
            if kind == "finding":
                if used + nbytes > budget:
                    return False
            elif used >= share * budget or used + nbytes > budget:
                return False
        return True

    def rate_ok(self) -> bool:
        """Whether the rate limit lets anything go now (the bucket is not overdrawn)."""
        if self.cfg.rate_kbps is None or self.cheap:
            return True
        now = time.monotonic()
        rate = self.cfg.rate_kbps * 1000 / 8
        self._tokens = min(rate * 2.0, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        return self._tokens >= 0

    def spent(self, nbytes: int) -> None:
        if self.cfg.rate_kbps is not None and not self.cheap:
            self._tokens -= nbytes

    def counts(self) -> bool:
        """Whether what is sent now counts against the budgets."""
        return not self.cheap

    def holding(self, used_day: int, used_month: int, images_held: int) -> list[str]:
        out = []
        if images_held:
            if self.cfg.images == "on_request":
                out.append(f"{images_held} pictures held: link.images = on_request (the "
                           "office asks with send-image)")
            elif self.cfg.images == "cheap_link" and not self.cheap:
                out.append(f"{images_held} pictures held until a cheap link "
                           f"({', '.join(self.cfg.cheap_interfaces) or 'none configured'})")
            else:
                out.append(f"{images_held} pictures held: over {self.cfg.images_below:.0%} of "
                           "the budget is used")
        if not self.cheap:
            for name, used, budget in self._budgets(used_day, used_month):
                if used >= budget:
                    out.append(f"the {name} budget is used up: findings wait")
        return out
