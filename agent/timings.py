"""Per-stage times and end-to-end latencies: where a frame's and a finding's time goes.

Each stage adds its own durations (``add``); a finding's latency is marked where it starts
(``start``: the moment the frame that decided it was read) and read where it ends
(``end``: committed to the outbox, acknowledged by the broker). Kept in memory, the last
``keep`` of each, for ``patrol-agent bench``; appending to a deque is safe
from any thread.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque


class StageTimes:
    """Milliseconds by name: stage durations and latencies."""

    def __init__(self, keep: int = 5000) -> None:
        self.keep = keep
        self._ms: dict[str, deque[float]] = {}
        self._started: dict[str, float] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()  # findings' clocks are started, moved and read by 4 stages

    def add(self, name: str, ms: float) -> None:
        now = time.monotonic()
        q = self._ms.get(name)
        if q is None:
            q = self._ms.setdefault(name, deque(maxlen=self.keep))
            self._first.setdefault(name, now - ms / 1e3)
        q.append(ms)
        self._last[name] = now

    def first(self, name: str) -> float | None:
        """time.monotonic() when the first ``name`` began (None: none yet)."""
        return self._first.get(name)

    def last(self, name: str) -> float | None:
        """time.monotonic() when the latest ``name`` ended."""
        return self._last.get(name)

    def start(self, key: str, t_mono: float) -> None:
        """A finding's clock starts at ``t_mono`` (time.monotonic())."""
        with self._lock:
            if len(self._started) >= self.keep:  # never ended (no broker): the oldest goes
                self._started.pop(next(iter(self._started)))
            self._started[key] = t_mono

    def end(self, key: str, name: str, forget: bool = False) -> None:
        """The time since ``key`` started, as ``name``."""
        with self._lock:
            t0 = self._started.pop(key, None) if forget else self._started.get(key)
        if t0 is not None:
            self.add(name, (time.monotonic() - t0) * 1e3)

    def rekey(self, old: str, new: str) -> None:
        """The clock of ``old`` goes on as ``new`` (a track became a finding)."""
        with self._lock:
            t0 = self._started.pop(old, None)
            if t0 is not None:
                self._started[new] = t0

    def forget(self, key: str) -> None:
        """``key``'s clock stops unread (a track that made no finding)."""
        with self._lock:
            self._started.pop(key, None)

    def values(self, name: str) -> list[float]:
        return list(self._ms.get(name, ()))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per name: count, median and 95th percentile (ms)."""
        out = {}
        for name, q in list(self._ms.items()):
            v = sorted(q)
            if v:
                out[name] = {"n": len(v), "median_ms": round(statistics.median(v), 2),
                             "p95_ms": round(v[min(len(v) - 1, int(0.95 * len(v)))], 2)}
        return out


class Stopwatch:
    """``with Stopwatch(times, "decode"):`` adds the block's duration."""

    def __init__(self, times: StageTimes | None, name: str) -> None:
        self.times, self.name = times, name

    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.times is not None:
            self.times.add(self.name, (time.perf_counter() - self.t0) * 1e3)
