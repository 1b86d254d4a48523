"""Reconnect backoff: grows, is capped, and is jittered so a fleet does not reconnect in step."""

from __future__ import annotations

import random

from agent.backoff import Backoff


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    b = Backoff(1.0, 60.0, random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(30.0 <= d <= 60.0 for d in delays[7:])
    b.reset()
    assert b.next_delay() <= 1.0


def test_two_units_do_not_retry_in_lockstep() -> None:
    a, b = Backoff(1.0, 60.0, random.Random(1)), Backoff(1.0, 60.0, random.Random(2))
    pairs = [(a.next_delay(), b.next_delay()) for _ in range(10)]
    assert sum(abs(x - y) > 0.01 for x, y in pairs) >= 8
