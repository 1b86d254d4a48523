"""The pictures stage: a committed finding's redacted picture, on its own thread.

The findings stage decides a finding and hands its record to the store writer at once;
its picture is made here, after (:meth:`PictureStage.put`, never waits). The privacy
step runs two detectors (faces, plates) over the whole frame in tiles: about 0.1 s on a
PC and seconds on a Pi, many times a frame's analysis. On its own thread it delays
neither the next finding's commit nor detection. The picture goes to the store writer
(:meth:`~agent.writer.StoreWriter.attach`), and only then is the finding sent.

Frames wait here whole, so at most :data:`MAX_WAITING` do: past that the privacy step is
far behind, and a finding is sent without its picture rather than the unit running out of
memory. A picture not made when the agent stops is never made: the next start sends the
finding without one (agent/writer.py).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from agent.events import BestShot, EventBuilder
from agent.records import Event, Picture
from agent.stages import Faults, Heartbeat, Inbox
from agent.timings import StageTimes, Stopwatch

log = logging.getLogger("events")

MAX_WAITING = 16
"""Findings waiting for their pictures, each holding its frame (2.7 MB at 1280x720)."""


class PictureStage(Inbox):
    """Makes the pictures of committed findings, oldest first, and attaches them."""

    def __init__(self, builder: EventBuilder, attach: Callable[[Picture], object],
                 times: StageTimes | None = None, max_waiting: int = MAX_WAITING) -> None:
        """``attach``: the store writer's."""
        self.builder = builder
        self.attach = attach
        self.times = times
        self.max_waiting = max_waiting
        self.faults = Faults("pictures", item="picture")
        self.heartbeat = Heartbeat()
        self.made = 0
        self.behind = 0
        """Findings sent without a picture because too many were waiting for theirs."""
        self._waiting: deque[tuple[Event, BestShot]] = deque()
        super().__init__()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    # --- any thread ---------------------------------------------------------

    def put(self, event: Event, shot: BestShot) -> None:
        """A finding just handed to the writer, and the view its picture is made of."""
        with self._cond:
            full = len(self._waiting) >= self.max_waiting
            if not full:
                self._waiting.append((event, shot))
                self._cond.notify()
        if full:
            self.behind += 1
            log.error("finding %s is sent without a picture: %d findings are already "
                      "waiting for theirs (the privacy step is behind; %d so far)",
                      event.id, self.max_waiting, self.behind)
            self.attach(Picture.withheld(event.id,
                                         "too many findings waiting for their pictures"))

    # --- the stage's thread --------------------------------------------------

    def run(self) -> None:
        while True:
            self.heartbeat.beat()
            with self._cond:
                if not self._waiting:
                    if self._closed:
                        return
                    self._cond.wait(0.5)
                    continue
                event, shot = self._waiting.popleft()
            try:
                with Stopwatch(self.times, "picture"):
                    picture = self.builder.picture(event, shot)
            except Exception as e:  # noqa: BLE001 - the finding goes, without its picture
                picture = Picture.withheld(event.id, f"{type(e).__name__}: {e}")
                self.faults.record(f"the picture of finding {event.id}", e)
            else:
                self.made += 1
                self.faults.stats.in_a_row = 0
            self.attach(picture)
