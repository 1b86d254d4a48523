"""The store writer: the one thread that commits findings to the outbox.

The event stage hands each finding to :meth:`StoreWriter.submit`, which never blocks
it, and its :class:`~agent.records.Picture` to :meth:`StoreWriter.attach` once made
(findings.py: the finding is committed first). The writer's thread owns the outbox's
``synchronous=FULL`` connection (a SQLite connection stays on the thread that made it),
commits what has queued up in one transaction, and then wakes the uplink. A finding
exists once it is committed (see store.py); from then on it reaches the broker at least once.

If the outbox cannot be written for a while (another process holds its lock, the SD
card is full, an I/O error), the findings are held in memory, up to ``store.max_held``
of them, and the commit is retried with backoff. The first failure and the recovery
are logged once each. A finding that arrives while ``max_held`` are already held is
lost: each one is logged as an error naming what it was, and counted. So is what is
still held when an orderly stop runs out of time.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.backoff import Backoff
from agent.records import Event, Picture
from agent.stages import Faults, Heartbeat
from agent.store import Store, StoreError
from agent.timings import StageTimes, Stopwatch

log = logging.getLogger("store")

# A commit waits this long for another process's lock before it counts as failed (and
# the findings are held and retried): short, so that an orderly stop stays bounded.
BUSY_TIMEOUT_S = 5.0


@dataclass
class WriterStats:
    committed: int = 0
    pictures: int = 0
    """Pictures attached to findings committed before them."""
    held: int = 0
    """Findings waiting for a commit now."""
    lost: int = 0
    """Findings that never reached the outbox (max_held overflowed, or a stop ran out of
    time while the outbox was unwritable)."""
    failed_commits: int = 0
    evicted_delivered: int = 0
    """Delivered findings deleted to keep the outbox within its quota."""
    evicted_images: int = 0
    """Undelivered findings whose pictures were emptied to keep within the quota."""
    last_error: str = ""
    unwritable_since: float | None = None
    """time.monotonic() of the first failed commit of the current outage; None when the
    outbox is writable."""


def _what(ev: Event) -> str:
    where = (f"{ev.position.lat:.6f},{ev.position.lon:.6f}" if ev.position else "no position")
    return f"{ev.label} {ev.score:.2f} at {where}, seen {ev.captured_utc:%Y-%m-%d %H:%M:%S}Z"


class StoreWriter:
    """Commits findings to the outbox at ``path`` from its own thread (:meth:`run`)."""

    def __init__(self, path: Path, max_held: int = 200,
                 on_commit: Callable[[], None] | None = None,
                 retry_min_s: float = 0.5, retry_max_s: float = 10.0,
                 busy_timeout_s: float = BUSY_TIMEOUT_S, quota_mb: float | None = None,
                 evict_undelivered_images: bool = True,
                 times: StageTimes | None = None) -> None:
        """``quota_mb``: after each commit the outbox is brought within it
        (:meth:`~agent.store.Store.enforce_quota`); None: no quota."""
        self.path = Path(path)
        self.times = times
        self.max_held = max_held
        self.quota_bytes = None if quota_mb is None else int(quota_mb * 1024 * 1024)
        self.evict_undelivered_images = evict_undelivered_images
        self._said_over = False
        self.on_commit = on_commit or (lambda: None)
        self.busy_timeout_s = busy_timeout_s
        self.stats = WriterStats()
        self.faults = Faults("store", item="finding")
        self.heartbeat = Heartbeat()
        self._backoff = Backoff(retry_min_s, retry_max_s)
        self._queue: deque[Event | Picture] = deque()
        self._to_follow: set[str] = set()
        """Findings accepted without their pictures, whose pictures are still to come."""
        self._released = False
        """Pictures left pending by a stopped agent have been released (:meth:`_open`)."""
        self._cond = threading.Condition()
        self._closed = False
        self._deadline = float("inf")

    # --- any thread ---------------------------------------------------------

    def submit(self, event: Event, picture_to_follow: bool = False) -> bool:
        """Queue a finding for the next commit; never waits. False if it is lost.
        ``picture_to_follow``: its picture comes later, by :meth:`attach`; it is not sent
        before."""
        with self._cond:
            if len(self._queue) >= self.max_held:
                self.stats.lost += 1
                lost = True
            else:
                self._queue.append(event)
                if picture_to_follow:
                    self._to_follow.add(event.id)
                self.stats.held = len(self._queue)
                self._cond.notify()
                lost = False
        if lost:
            log.error("FINDING LOST: %s. The outbox has not been writable for %.0f s (%s) and "
                      "%d findings are already held (store.max_held); %d lost so far",
                      _what(event), self._outage_s(), self.stats.last_error, self.max_held,
                      self.stats.lost)
        return not lost

    def attach(self, picture: Picture) -> None:
        """The picture of a finding submitted with ``picture_to_follow``; never waits.
        Always taken (one per finding accepted, so ``max_held`` bounds them too); that of
        a finding that was lost is dropped."""
        with self._cond:
            if picture.event_id not in self._to_follow:
                return
            self._queue.append(picture)
            self.stats.held = len(self._queue)
            self._cond.notify()

    def close(self, timeout_s: float) -> None:
        """No more findings will come: :meth:`run` commits what is held and returns,
        giving up (and counting them lost) after ``timeout_s`` of failing."""
        with self._cond:
            self._closed = True
            # Asked again (the supervisor asks until it has ended): the first deadline holds.
            self._deadline = min(self._deadline, time.monotonic() + timeout_s)
            self._cond.notify()

    @property
    def idle(self) -> bool:
        """Nothing held: every finding submitted so far is committed (or lost)."""
        with self._cond:
            return not self._queue

    # --- the writer's thread -----------------------------------------------

    def run(self) -> None:
        store: Store | None = None
        retry_at = 0.0
        try:
            # At once, not at the first finding: those pictures are late already. If the
            # outbox cannot be opened now, the first commit reports it, and retries.
            with contextlib.suppress(StoreError, sqlite3.Error, OSError):
                store = self._open()
            while True:
                with self._cond:
                    while True:
                        self.heartbeat.beat()
                        if not self._queue and self._closed:
                            return  # closed, and everything is committed
                        wait = retry_at - time.monotonic()
                        if self._queue and wait <= 0:
                            break
                        self._cond.wait(min(0.5, wait) if self._queue else 1.0)
                    batch = list(self._queue)
                lost = 0
                try:
                    if store is None:
                        store = self._open()
                    try:
                        with Stopwatch(self.times, "commit"):
                            self._commit(store, batch)
                    except (StoreError, sqlite3.Error, OSError):
                        raise
                    except Exception:  # noqa: BLE001 - not the outbox's doing: a finding's
                        lost = self._commit_each(store, batch)
                except (StoreError, sqlite3.Error, OSError) as e:
                    if store is not None and not isinstance(e, sqlite3.OperationalError):
                        store.close()  # a damaged connection: open a fresh one next time
                        store = None
                    retry_at = time.monotonic() + self._failed(e, len(batch))
                    if self._closed and time.monotonic() >= self._deadline:
                        self._give_up(batch)
                        return
                    continue
                self._committed(batch, lost)
                if self.quota_bytes is not None and store is not None:
                    with self.faults.guard("the outbox's quota"):
                        self._keep_quota(store)
        finally:
            if store is not None:
                store.close()

    def _commit(self, store: Store, batch: list[Event | Picture]) -> None:
        events = [x for x in batch if isinstance(x, Event)]
        pictures = [x for x in batch if isinstance(x, Picture)]
        with self._cond:
            follow = {ev.id for ev in events if ev.id in self._to_follow}
        try:
            store.add_many(events, pictures, follow)
        except sqlite3.IntegrityError:
            # One of them is in the outbox already (the same id: committed before a
            # failure was reported); commit the others one by one.
            for ev in events:
                try:
                    store.add_many([ev], pictures_to_follow=follow)
                except sqlite3.IntegrityError:
                    log.info("finding %s is in the outbox already", ev.id)
            store.add_many([], pictures)

    def _commit_each(self, store: Store, batch: list[Event | Picture]) -> int:
        """A batch failed with an error that is not the outbox's: commit its findings one
        by one. One that fails so on its own is lost: logged (with the traceback, once
        per kind of error), counted, and skipped; how many is returned. An outbox error
        is raised as usual."""
        lost = 0
        for item in batch:
            try:
                self._commit(store, [item])
            except (StoreError, sqlite3.Error, OSError):
                raise
            except Exception as e:  # noqa: BLE001 - counted and named below
                if isinstance(item, Picture):
                    log.error("the picture of finding %s cannot be stored (%s: %s); it is "
                              "sent without one once the agent restarts", item.event_id,
                              type(e).__name__, e)
                    continue
                lost += 1
                self.stats.lost += 1
                log.error("FINDING LOST: %s: it cannot be stored (%s: %s)", _what(item),
                          type(e).__name__, e)
                self.faults.record(f"finding {item.id}", e)
        return lost

    def _committed(self, batch: list[Event | Picture], lost: int = 0) -> None:
        pictures = [x.event_id for x in batch if isinstance(x, Picture)]
        with self._cond:
            for _ in batch:
                self._queue.popleft()
            self.stats.held = len(self._queue)
            self._to_follow.difference_update(pictures)
        self.stats.committed += len(batch) - len(pictures) - lost
        self.stats.pictures += len(pictures)
        if self.times is not None:
            for item in batch:
                if isinstance(item, Event):
                    self.times.end(item.id, "capture_to_commit")
                else:
                    self.times.end(item.event_id, "capture_to_picture")
        if self.stats.unwritable_since is not None:
            log.warning("the outbox is writable again after %.0f s; %d held findings "
                        "committed", self._outage_s(), len(batch))
            self.stats.unwritable_since = None
        self._backoff.reset()
        self.on_commit()

    def _open(self) -> Store:
        """The writer's connection; the first one also releases the pictures a stopped
        agent was still making, which will not come (this writer's own are all still in
        memory then)."""
        store = Store(self.path, synchronous="FULL", busy_timeout_s=self.busy_timeout_s)
        if self._released:
            return store
        try:
            ids = store.release_pictures("the agent stopped before its picture was made")
        except BaseException:
            store.close()
            raise
        self._released = True
        if ids:
            log.warning("%d findings committed before the agent stopped had no picture yet "
                        "(%s): they are sent without one", len(ids), ", ".join(ids[:5]) +
                        (" …" if len(ids) > 5 else ""))
        return store

    def _keep_quota(self, store: Store) -> None:
        assert self.quota_bytes is not None
        ev = store.enforce_quota(self.quota_bytes, self.evict_undelivered_images)
        mb = self.quota_bytes / 1024 / 1024
        if ev.delivered:
            self.stats.evicted_delivered += ev.delivered
            log.warning("the outbox reached its quota (%.0f MB): deleted the %d delivered "
                        "findings delivered longest ago (%d so far)", mb, ev.delivered,
                        self.stats.evicted_delivered)
        if ev.images:
            self.stats.evicted_images += ev.images
            log.warning("the outbox reached its quota (%.0f MB) with only undelivered "
                        "findings left: removed the pictures of the %d oldest (%d so far); "
                        "they will be delivered without them", mb, ev.images,
                        self.stats.evicted_images)
        if ev.over_bytes and not self._said_over:
            log.error("the outbox is %.1f MB over its quota (%.0f MB) with nothing it may "
                      "evict: undelivered findings are kept%s", ev.over_bytes / 1024 / 1024,
                      mb, "" if self.evict_undelivered_images
                      else " (store.evict_undelivered_images is off)")
        self._said_over = ev.over_bytes > 0

    def _failed(self, e: Exception, held: int) -> float:
        """Count and report a failed commit; the delay before the next attempt."""
        self.stats.failed_commits += 1
        self.stats.last_error = str(e) or type(e).__name__
        delay = self._backoff.next_delay()
        if self.stats.unwritable_since is None:
            self.stats.unwritable_since = time.monotonic()
            log.error("cannot write the outbox %s (%s): holding %d findings in memory (up "
                      "to %d) and retrying", self.path, self.stats.last_error, held,
                      self.max_held)
        return delay

    def _give_up(self, batch: list[Event | Picture]) -> None:
        with self._cond:
            self._queue.clear()
            self.stats.held = 0
        events = [x for x in batch if isinstance(x, Event)]
        self.stats.lost += len(events)
        for ev in events:
            log.error("FINDING LOST: %s. Stopping, and the outbox is still not writable (%s)",
                      _what(ev), self.stats.last_error)

    def _outage_s(self) -> float:
        since = self.stats.unwritable_since
        return 0.0 if since is None else time.monotonic() - since
