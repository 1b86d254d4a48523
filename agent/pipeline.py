"""Wires the stages, their threads and queues: the only module that knows them all.

Today the pipeline is store → uplink; the perception stages (camera, detector,
tracker, events) plug in ahead of the store as later work adds them. A stage
that is not built yet is simply absent.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from agent import __version__
from agent.config import Config
from agent.records import Event
from agent.store import Store
from agent.uplink import Uplink

log = logging.getLogger("pipeline")


class Pipeline:
    def __init__(self, cfg: Config, store_path: Path | None = None) -> None:
        self.cfg = cfg
        self.store_path = Path(store_path or cfg.store.path)
        self.stop_event = threading.Event()
        # Open (and migrate) the store before anything else: a unit with an
        # unusable store must say so at start, not at its first finding.
        self._store = Store(self.store_path, synchronous="FULL")
        self.uplink: Uplink | None = None
        if cfg.mqtt is not None:
            self.uplink = Uplink(cfg, self.store_path,
                                 status={"model": cfg.detector.model.stem})
        self._threads: list[threading.Thread] = []

    def submit(self, event: Event) -> None:
        """Commit a finding durably, then wake the uplink (called by the event stage)."""
        self._store.add(event)
        if self.uplink is not None:
            self.uplink.notify()

    def start(self, until_drained: bool = False) -> None:
        counts = self._store.counts()
        log.info("patrol-agent %s starting: device %s, config version %d (%s), store %s "
                 "(%d pending, %d delivered)", __version__, self.cfg.device.id,
                 self.cfg.version, self.cfg.content_hash()[:12], self.store_path,
                 counts["pending"], counts["delivered"])
        if self.uplink is None:
            log.warning("no [mqtt] section: findings are kept in the store, not sent")
        else:
            t = threading.Thread(target=self._run_uplink, args=(until_drained,),
                                 name="uplink", daemon=True)
            self._threads.append(t)
            t.start()

    def _run_uplink(self, until_drained: bool) -> None:
        assert self.uplink is not None
        try:
            self.uplink.run(self.stop_event, until_drained=until_drained)
        except Exception:
            log.exception("uplink stopped by an unexpected error")
        finally:
            if until_drained:
                self.stop_event.set()

    def wait(self) -> bool:
        """Block until a stop is requested (signal, or the uplink drained).
        False if a stage thread died on its own: the caller exits non-zero so
        that systemd restarts the agent."""
        while not self.stop_event.wait(1.0):
            if self._threads and not any(t.is_alive() for t in self._threads):
                log.error("every stage thread has stopped; exiting so the service restarts")
                return False
        return True

    def stop(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=10)
        self._store.close()
        log.info("stopped")

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
