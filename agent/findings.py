"""The findings stage: ended tracks → findings, on its own thread.

Perception hands each ended track here (:meth:`FindingStage.put`, never waits). A
live track first waits for the GPS: gpsd reports a fix up to a second after its
time, so when a track ends its last views may lie past the newest fix, where their
geotags could only be extrapolated. It is held until a fix at or after its last
frame has arrived, at most :data:`FIX_WAIT_S` (a recording's fixes are all known
at once: nothing waits). Then :class:`~agent.events.EventBuilder` decides whether
it is a finding (place, second look, dedup).

A finding goes to the store writer at once, without its picture, and to the pictures
stage (pictures.py), which makes its redacted picture and attaches it after: the
privacy step takes many times a frame's analysis, and meanwhile the finding should be
on the SD card, safe from a crash or a power cut, and the next track decided.

The second look runs the model again, so this stage has an interpreter of its own:
a TFLite interpreter is not to be shared between threads.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from agent.events import BestShot, EndedTrack, EventBuilder, EventStats
from agent.gps import FixHistory, FrameClock
from agent.records import Event
from agent.stages import Faults, Heartbeat, Inbox
from agent.timings import StageTimes, Stopwatch

log = logging.getLogger("events")

FIX_WAIT_S = 2.0
"""How long an ended track waits for the fix after its last frame: a 1 Hz receiver's
next fix plus gpsd's delivery of it, with room to spare."""


class FindingStage(Inbox):
    """Holds ended tracks until their fixes are in, then makes findings of them."""

    def __init__(self, builder: EventBuilder, history: FixHistory, frame_time: FrameClock,
                 submit: Callable[[Event, bool], object],
                 pictures: Callable[[Event, BestShot], object],
                 fix_wait_s: float = FIX_WAIT_S, times: StageTimes | None = None) -> None:
        """``submit(finding, picture_to_follow)``: the store writer's; ``pictures(finding,
        view)``: the pictures stage's; ``fix_wait_s``: 0 when every fix is known before the
        frames (a log read directly)."""
        self.builder = builder
        self.pictures = pictures
        self.times = times
        self.history = history
        self.frame_time = frame_time
        self.submit = submit
        self.fix_wait_s = fix_wait_s
        self.faults = Faults("findings", item="track")
        self.heartbeat = Heartbeat()
        self._incoming: deque[tuple[EndedTrack, float]] = deque()
        self._waiting: list[tuple[EndedTrack, float]] = []  # and until when each waits
        super().__init__()

    @property
    def stats(self) -> EventStats:
        return self.builder.stats

    # --- any thread ---------------------------------------------------------

    def put(self, ended: EndedTrack) -> None:
        """An ended track from perception; it waits for its fix here."""
        with self._cond:
            self._incoming.append((ended, time.monotonic() + self.fix_wait_s))
            self._cond.notify()

    # --- the stage's thread --------------------------------------------------

    def run(self) -> None:
        while True:
            self.heartbeat.beat()
            with self._cond:
                if not self._incoming and not self._waiting and self._closed:
                    return
                if not self._incoming:
                    self._cond.wait(0.1 if self._waiting else 0.5)
                self._waiting += self._incoming
                self._incoming.clear()
            self._release()

    def _release(self) -> None:
        if not self._waiting:
            return
        newest = self.history.last()
        now = time.monotonic()
        keep = []
        for ended, deadline in self._waiting:
            last = ended.track.last
            covered = newest is not None and \
                newest.utc >= self.frame_time(last.captured_utc, last.captured_mono)
            if covered or now >= deadline:
                self._finish(ended)
            else:
                keep.append((ended, deadline))
        self._waiting = keep

    def _finish(self, ended: EndedTrack) -> None:
        with self.faults.guard(f"track {ended.track.id}"):
            with Stopwatch(self.times, "finding"):
                decided = self.builder.decide([ended])
            key = f"track {ended.track.id}"
            for ev, shot in decided:
                if self.times is not None:
                    self.times.rekey(key, ev.id)
                pos = (f"{ev.position.lat:.6f},{ev.position.lon:.6f} "
                       f"±{ev.position.accuracy_m:.0f} m ({ev.position.source})"
                       if ev.position else "no GPS fix")
                log.info("finding: %s %.2f at %s, %d frames", ev.label, ev.score, pos,
                         ev.attributes.get("frames", 0))
                self.submit(ev, True)
                self.pictures(ev, shot)
            if self.times is not None and not decided:
                self.times.forget(key)  # a track that made no finding: nothing to time
