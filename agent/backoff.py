"""Capped exponential backoff with jitter, for anything that reconnects
(the broker, the camera, gpsd): a fleet that loses its broker at once must not
come back in lockstep, and a camera that fails must not be hammered."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with 'equal jitter': half fixed, half random."""

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        cap = min(self.max_s, self.min_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def reset(self) -> None:
        self.failures = 0
