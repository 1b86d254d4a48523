"""What every stage thread shares: the hand-off of frames, surviving one bad item, and
telling a stage that finished from one that died.

* :class:`FrameSlot` hands frames from the camera to perception. For a camera
  (``every_frame=False``) ``put`` never waits: an unread frame is replaced by the
  newer one and counted as dropped, so capture never blocks on detection. For a
  recording read as fast as it can be (``every_frame=True``) ``put`` waits until
  the frame is taken, so none is lost.
* :class:`Faults` guards one item (a frame, a batch of findings) of one stage: an
  unexpected error is logged with its traceback the first time it is seen (once per
  kind of error and place in the code), counted, and the item skipped. A stage that
  fails on ``limit`` items in a row is broken, not unlucky: :class:`StageFailed`
  stops it, and the pipeline stops the agent with that message.
* :class:`Stage` runs one stage's loop on a named thread and records how it ended:
  ``finished`` (its input ended: a recording, or the stage before it) or ``failed``.
* :class:`Heartbeat`: each stage's loop beats it every time round (at least once a
  second when idle, and while it waits to retry a device), so a stage that is stuck
  (a hung camera driver, an inference that never returns) is told apart from one that
  is idle or retrying: the watchdog (health.py) stops pinging systemd.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from agent.records import Frame

log = logging.getLogger("pipeline")

# Repeats of an error already shown with its traceback are summed up at most this often.
REPEAT_LOG_S = 30.0


class Heartbeat:
    """When a stage's loop last went round (``time.monotonic()``)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def age(self) -> float:
        """Seconds since the last beat."""
        return time.monotonic() - self.last


class Inbox:
    """What a stage's thread is handed, under one condition: :meth:`close` says nothing
    more will come, and the thread finishes what it holds and returns."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = False

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class StageFailed(Exception):
    """A stage that keeps failing; the message says which and with what."""


@dataclass
class FaultStats:
    errors: int = 0
    """Items skipped because of an unexpected error, in all."""
    in_a_row: int = 0
    last_error: str = ""


class Faults:
    """Survives an unexpected error on one item of a stage (see the module docstring)."""

    def __init__(self, stage: str, item: str = "frame", limit: int = 50) -> None:
        self.stage = stage
        self.item = item
        self.limit = limit
        self.stats = FaultStats()
        self._seen: dict[tuple[str, str], tuple[int, float]] = {}  # kind -> (count, last log)

    @contextlib.contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """``with faults.guard("frame 12"): ...``: an Exception inside is handled here."""
        try:
            yield
        except Exception as e:  # noqa: BLE001 - the point: one bad item must not stop a stage
            self.record(what, e)
        else:
            self.stats.in_a_row = 0

    def record(self, what: str, e: Exception) -> None:
        """Count and report an unexpected error on ``what`` (which the caller skips);
        StageFailed once ``limit`` items in a row have failed."""
        self.stats.errors += 1
        self.stats.in_a_row += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        tb = traceback.extract_tb(e.__traceback__)
        where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
        kind = (type(e).__name__, where)
        now = time.monotonic()
        count, last = self._seen.get(kind, (0, 0.0))
        if count == 0:
            log.error("%s: unexpected error on %s, which is skipped (traceback shown once; "
                      "repeats are counted)", self.stage, what, exc_info=e)
            last = now
        elif now - last >= REPEAT_LOG_S:
            log.warning("%s: %s again on %s, skipped (%d times so far)", self.stage,
                        self.stats.last_error, what, count + 1)
            last = now
        self._seen[kind] = (count + 1, last)
        if self.stats.in_a_row >= self.limit:
            raise StageFailed(f"{self.stage} failed on {self.stats.in_a_row} {self.item}s in "
                              f"a row (last: {self.stats.last_error})") from e


class FrameSlot:
    """Camera → perception: the freshest frame (a camera) or every frame (a recording)."""

    def __init__(self, every_frame: bool = False) -> None:
        self.every_frame = every_frame
        self.dropped = 0
        """Frames replaced before perception took them (capture outran detection)."""
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self.every_frame:
                while self._frame is not None and not self._closed:
                    self._cond.wait()
            elif self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def take(self, timeout: float = 0.5) -> Frame | None:
        """The next frame, or None when none came within ``timeout`` (or the slot is
        :attr:`finished`)."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """No more frames will come; a waiting ``put`` returns."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def finished(self) -> bool:
        """Closed, and its last frame taken."""
        with self._cond:
            return self._closed and self._frame is None


class StageState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    FINISHED = "finished"
    """Its loop returned: its input ended (a recording, the stage before it), or it
    was told to stop."""
    FAILED = "failed"


class Stage:
    """One stage's loop on its own named thread, and the heartbeat that loop beats."""

    def __init__(self, name: str, loop: Callable[[], None], heartbeat: Heartbeat) -> None:
        self.name = name
        self.heartbeat = heartbeat
        self.state = StageState.NEW
        self.error = ""
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.state = StageState.RUNNING
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the loop to end; False if it is still running after ``timeout``."""
        if self.state is StageState.NEW:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self.state is StageState.RUNNING

    def _run(self) -> None:
        try:
            self._loop()
        except StageFailed as e:
            self.error = str(e)
            self.state = StageState.FAILED
            log.error("%s", e)
            return
        except Exception as e:  # reported; the pipeline then stops the agent
            self.error = f"{type(e).__name__}: {e}"
            self.state = StageState.FAILED
            log.exception("%s stopped by an unexpected error", self.name)
            return
        self.state = StageState.FINISHED
