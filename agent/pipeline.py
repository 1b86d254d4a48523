"""Wires the stages, their threads and hand-offs: the only module that knows them all.

```
camera ─frames─▶ perception ─tracks─▶ findings ──findings──▶ store writer ─▶ uplink ─▶ broker
(sources) slot   (detector,   ended   (place, second   │     (outbox,          (MQTT)
                  tracker)             look, dedup)    │      FULL commits)
                                          ▲            └──▶ pictures ─pictures─▶ store writer
       gps (fixes → fix history)                           (privacy, JPEG)
```

Each stage runs on its own thread (:class:`~agent.stages.Stage`) and hands small
records to the next: frames through a :class:`~agent.stages.FrameSlot`, ended tracks
through :meth:`FindingStage.put <agent.findings.FindingStage.put>`, findings through
:meth:`StoreWriter.submit <agent.writer.StoreWriter.submit>` and
:meth:`PictureStage.put <agent.pictures.PictureStage.put>`, their pictures through
:meth:`StoreWriter.attach <agent.writer.StoreWriter.attach>`, committed findings
through the outbox. The writer's and the uplink's SQLite connections are each opened
and used on their own thread only; so are the TFLite interpreters (detection; the
findings' second look; the pictures' face and plate detectors). The gps stage keeps
the fix history that frames are geotagged from; the clock check ties a camera's frame
times to GPS time.

``run`` and ``replay`` build this same pipeline. Only its :class:`Feeds` differ:
where frames come from (a camera, or a recording played as one; a recording read
frame by frame as fast as it goes) and where fixes come from (gpsd, gpsfake's gpsd
serving a log, or the log read directly).

An orderly stop (SIGTERM, SIGINT, or the end of a recording's work) goes in
data-flow order, each stage finishing what it holds before the next is told:
the camera stops; perception ends the tracks in hand; the findings stage makes
findings of them (waiting for their fixes, as always); the pictures stage makes the
pictures waiting (for at most :data:`PICTURES_STOP_S`); the writer commits them; the
uplink delivers what it can within ``mqtt.stop_delivery_s``, then publishes the
retained ``offline`` status and disconnects. Each step is bounded; in all, at most
:data:`STOP_BUDGET_S` with the defaults, normally a second or two.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import cv2
import numpy as np

from agent import __version__
from agent.config import Config, ConfigError, read_config_file
from agent.control import Control, Handler, Request, RequestError
from agent.desired import (
    Desired,
    DocumentError,
    effective,
    file_models_dir,
    forget,
    load_rolled_back,
    mark_rolled_back,
    parse_desired,
    persist,
    state_dir,
)
from agent.detector import Detector, DetectorError, Preprocess
from agent.events import BestShots, EventBuilder, RecentFindings
from agent.findings import FIX_WAIT_S, FindingStage
from agent.gps import ClockCheck, FixHistory, GpsdReader, recording_time
from agent.health import Health, Notifier, machine, without_none
from agent.model_update import (
    FetchError,
    fetch,
    is_installed,
    models_dir,
    prune,
    remove_installed,
)
from agent.perception import Perception
from agent.pictures import PictureStage
from agent.privacy import Redactor
from agent.records import ControlMessage, Event, EventIds, Fix, iso_utc, new_event_id
from agent.sampling import STANDING_READ_S
from agent.signing import Authority, SeenCommands
from agent.sources import FrameSource, OpenCVSource, SourceError, open_source
from agent.stages import Faults, FrameSlot, Heartbeat, Stage, StageState
from agent.store import Store, StoreError
from agent.timings import StageTimes, Stopwatch
from agent.topics import Topics
from agent.uplink import OFFLINE_GRACE_S, Uplink, UplinkError
from agent.writer import BUSY_TIMEOUT_S, StoreWriter

log = logging.getLogger("pipeline")

CAMERA_STOP_S = 3.0
"""A camera read in progress is given this long to return (streams time out at 5 s)."""
WRITER_STOP_S = 5.0
"""How long the writer goes on retrying an unwritable outbox once stopping."""
PICTURES_STOP_S = 2.0
"""How long the pictures waiting are given once stopping (a finding whose picture is not
made is sent without one at the next start)."""
REPLAY_DRAIN_S = 120.0
"""How long a replay waits for the broker to take its findings before it reports them
pending (they stay in the outbox)."""
STOP_BUDGET_S = (CAMERA_STOP_S + 1 + FIX_WAIT_S + 1 + PICTURES_STOP_S + WRITER_STOP_S
                 + BUSY_TIMEOUT_S + 5.0 + OFFLINE_GRACE_S + 2)
"""The longest an orderly stop takes with the default config (mqtt.stop_delivery_s 5)."""


def build_detector(cfg: Config, model: Path | None = None, every_class: bool = False,
                   threads: int | None = None, labels: Path | None = None) -> Detector:
    """The detector the config asks for (``model``, ``labels``: others instead)."""
    d = cfg.detector
    i = d.input

    def three(v: float | list[float] | None) -> tuple[float, float, float] | None:
        return None if v is None else (tuple(v) if isinstance(v, list) else (v, v, v))
    pre = Preprocess("letterbox", i.interpolation, i.channels, three(i.mean), three(i.std))
    return Detector(model or d.model_path(), labels or d.labels,
                    threads=threads or d.thread_count(),
                    runtime=d.runtime, layout=d.layout,
                    score_threshold=d.score_threshold, class_thresholds=d.class_thresholds,
                    allow=None if every_class else d.allow, iou_threshold=d.iou_threshold,
                    max_detections=d.max_detections, preprocess=pre, resize=i.resize,
                    label_offset=d.label_offset)


@dataclass(frozen=True)
class Feeds:
    """Where frames and fixes come from: the one thing ``run`` and ``replay`` do differently."""

    camera: Callable[[threading.Event], FrameSource] | None
    """Opens the frame source, given the event that stops it; None: no camera."""
    gpsd: tuple[str, int] | None = None
    """Where gpsd listens, or None."""
    fixes: Sequence[Fix] = ()
    """Fixes known before the first frame (a log read directly); nothing waits for gpsd."""
    fix_history_s: float = 300.0
    """How far back fixes are kept (a recording read fast needs all of them)."""
    every_frame: bool = False
    """Perception takes every frame (a recording read as fast as it goes) rather than the
    freshest (a camera, or a recording played as one)."""
    gpsd_retry_s: tuple[float, float] = (0.5, 10.0)
    """Reconnect backoff to gpsd, first and longest wait."""


def live_feeds(cfg: Config) -> Feeds:
    """The unit's own camera and gpsd, as its config says (``patrol-agent run``)."""
    cam = cfg.camera

    def camera(stop: threading.Event) -> FrameSource:
        return open_source(cam.kind, cam.source, width=cam.width, height=cam.height,
                           fps=cam.fps, stop=stop)

    return Feeds(camera=camera if cam.enabled else None,
                 gpsd=(cfg.gps.host, cfg.gps.port) if cfg.gps.enabled else None)


class Ending(enum.Enum):
    """Why :meth:`Pipeline.run` returned."""

    STOPPED = "stopped"
    """Asked to (a signal)."""
    RESTART = "restart"
    """The office asked for a restart (the ``restart`` command): a clean stop that the
    service manager (Restart=always) turns into a start."""
    DONE = "done"
    """The work ran out: the recording ended and, with until_drained, the outbox emptied."""
    FAILED = "failed"
    """A stage died or kept failing."""


@dataclass
class RunReport:
    """What a run did, from every stage's stats (for the CLI and replay's summary)."""

    ending: Ending
    failed: list[str] = field(default_factory=list)
    """'stage: why' for each stage that failed."""
    lost: int = 0
    """Findings that never reached the outbox."""
    pending: int = 0
    delivered: int = 0


CAMERA_RESTART = {"kind", "source", "width", "height", "fps"}
"""Camera keys that need the camera opened again (the others are its mounting: live)."""
DETECTOR_RELOAD = {"model", "labels", "layout", "threads", "runtime", "input", "label_offset"}
"""Detector keys that need a new interpreter (the others are filters: live)."""


@dataclass
class _Trial:
    """A change from the office that has yet to show it works (control.grace_s)."""

    scope: str
    doc: Desired
    previous: dict[str, Desired]
    needs: set[str]
    msg: ControlMessage
    deadline: float
    baseline: tuple[int, int]
    """(frames captured, frames analysed) when it came into force."""


def _changed_keys(old: Config, new: Config) -> list[str]:
    """``section.key`` of each value that differs (secrets compared, not shown)."""
    a, b = old.model_dump(), new.model_dump()
    out = []
    for section in sorted(set(a) | set(b)):
        sa, sb = a.get(section), b.get(section)
        if not isinstance(sa, dict) or not isinstance(sb, dict):
            if sa != sb:
                out.append(section)
            continue
        out += [f"{section}.{k}" for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    return out


class Pipeline:
    """Every stage of one unit, on its own thread. ``run()`` is the whole life cycle;
    ``start()`` and ``stop()`` are its two halves."""

    def __init__(self, cfg: Config, feeds: Feeds | None = None,
                 store_path: Path | None = None, file_data: dict[str, Any] | None = None,
                 docs: dict[str, Desired] | None = None, config_path: Path | None = None
                 ) -> None:
        """Sets up every stage; raises StoreError, UplinkError, DetectorError or
        SourceError (each says what is wrong) before any thread starts. ``file_data``
        (the config file's data) and ``docs`` (the office's documents in force over it,
        desired.load_in_force): the unit takes desired configs from the office."""
        self.cfg = cfg
        self.file_data = file_data
        self.config_path = config_path
        self.docs: dict[str, Desired] = dict(docs or {})
        self._rolled_back = load_rolled_back(state_dir(cfg)) if file_data is not None else {}
        """Per scope, the last document rolled back: it and older ones are not tried again."""
        self._rejected: dict[str, bytes] = {}
        """Per scope, the last payload rejected: its retained copy is not reported again."""
        self._reconfig = threading.RLock()
        self._trial: _Trial | None = None
        self._fetching: Desired | None = None
        """The document whose model is being downloaded."""
        feeds = feeds if feeds is not None else live_feeds(cfg)
        self.store_path = Path(store_path or cfg.store.path)
        self._models_dir = (file_models_dir(file_data) if file_data is not None
                            else models_dir(self.store_path))
        """Where models the office sends are kept (agent/model_update.py)."""
        # The outbox first: a unit with an unusable store must say so at start, not at
        # its first finding. Opened here only to check it and read what the stages
        # start from; the writer and the uplink each open their own on their thread.
        window = timedelta(hours=cfg.events.dedup_window_h)
        with Store(self.store_path) as store:
            self._counts_at_start = store.counts()
            recent = store.recent_findings(window)
            ids = EventIds(store.newest_id())
        self.history = FixHistory(max_age_s=feeds.fix_history_s)
        self.history.extend(feeds.fixes)
        self.clock = ClockCheck()
        self.stop_requested = threading.Event()
        self.uplink: Uplink | None = None
        self.control: Control | None = None
        self._restart_asked = threading.Event()
        if cfg.mqtt is not None:
            topics = Topics(cfg.mqtt.root, cfg.device.id)
            self.authority = Authority(lambda: self.cfg.control.trusted_keys,
                                       self._trusted_now,
                                       SeenCommands(state_dir(cfg) / "seen-commands.json"))
            self.control = Control(topics, self._send, self._command_handlers(),
                                   desired=self._on_desired if file_data is not None else None,
                                   tick=self._judge_trial, authority=self.authority)
            self.uplink = self._make_uplink(cfg)
        self.times = StageTimes()
        """Per-stage times and findings' latencies (patrol-agent bench, agent/timings.py)."""
        if self.uplink is not None:
            self.uplink.times = self.times
        self.writer = StoreWriter(self.store_path, cfg.store.max_held, times=self.times,
                                  on_commit=self.uplink.notify if self.uplink else None,
                                  quota_mb=cfg.store.quota_mb,
                                  evict_undelivered_images=cfg.store.evict_undelivered_images)
        self._camera_stop = threading.Event()
        self._camera_restarting = False
        self._gpsd_retry_s = feeds.gpsd_retry_s
        self.gps: GpsdReader | None = None
        if feeds.gpsd is not None:
            self.gps = self._make_gps(feeds.gpsd)
        self.slot = FrameSlot(every_frame=feeds.every_frame)
        self.frame_faults = Faults("perception", item="frame")
        self.camera_faults = Faults("camera", item="read")
        self.source: FrameSource | None = None
        self.perception: Perception | None = None
        self.findings: FindingStage | None = None
        self.pictures: PictureStage | None = None
        if feeds.camera is not None:
            detector = build_detector(cfg)
            # Its own interpreter for the second look, on the findings thread; one
            # thread is plenty for a few views per finding.
            look = build_detector(cfg, threads=1)
            self._look = look
            self.source = feeds.camera(self._camera_stop)
            recorded = self.source.timebase == "recording"
            frame_time = recording_time if recorded else self.clock.frame_time
            builder = EventBuilder(
                cfg.events, cfg.camera, self.history.position_at,
                Redactor() if cfg.events.redact else None, model=detector.model_path.stem,
                config_version=cfg.version, frame_time=frame_time,
                second_look=look.look,
                recent=RecentFindings(cfg.events.dedup_distance_m, window, recent),
                time_source=(lambda: "recording") if recorded else self.clock.time_source,
                ids=ids)
            self._builder = builder
            self.pictures = PictureStage(builder, self.writer.attach, self.times)
            self.findings = FindingStage(
                builder, self.history, frame_time, self.writer.submit, self.pictures.put,
                fix_wait_s=0.0 if feeds.fixes and feeds.gpsd is None else FIX_WAIT_S,
                times=self.times)
            self.perception = Perception(cfg, detector, self.history, self.findings.put,
                                         frame_time, self.times)
        self.stages: list[Stage] = []
        self._started_mono = 0.0
        self.notifier = Notifier()
        self._perception_beat = Heartbeat()
        self.health = Health(self.notifier, self._hearts, self._status, cfg.health.stall_s,
                             watchdog=cfg.health.watchdog, telemetry=self._telemetry,
                             publish=self._publish_telemetry,
                             telemetry_every_s=cfg.health.telemetry_interval_s,
                             state_file=self.store_path.parent / "telemetry.json")
        self._last_report = (time.monotonic(), 0, 0)  # (when, frames analysed, delivered)
        self._frames_seen = (0, time.monotonic())
        self._redactor: Redactor | None = None  # the snapshot command's (control's thread)

    # --- life cycle ---------------------------------------------------------

    def run(self, until_drained: bool = False, drain_timeout_s: float | None = None
            ) -> RunReport:
        """Start every stage, supervise them until a stop is requested, a stage fails,
        or (``until_drained``) the frames have run out and every finding is delivered,
        waiting at most ``drain_timeout_s`` for that last part; then stop them in order."""
        self.start()
        try:
            ending = self._supervise(until_drained, drain_timeout_s)
        finally:
            self.stop()
        return self.report(ending)

    def start(self) -> None:
        c = self._counts_at_start
        log.info("patrol-agent %s starting: device %s, config version %d (%s), store %s "
                 "(%d pending, %d delivered)", __version__, self.cfg.device.id,
                 self.cfg.version, self.cfg.content_hash()[:12], self.store_path,
                 c["pending"], c["delivered"])
        if self.uplink is None:
            log.warning("no [mqtt] section: findings are kept in the store, not sent")
        self._started_mono = time.monotonic()
        # Downstream first, so that nothing is handed to a stage that is not there yet.
        self._stage("store", self.writer.run, self.writer.heartbeat)
        if self.uplink is not None:
            self._stage("uplink", self.uplink.run, self.uplink.heartbeat)
        if self.control is not None:
            self._stage("control", self.control.run, self.control.heartbeat)
        if self.gps is not None:
            self._stage("gps", self.gps.run, self.gps.heartbeat)
        if self.pictures is not None:
            self._stage("pictures", self.pictures.run, self.pictures.heartbeat)
        if self.findings is not None:
            self._stage("findings", self.findings.run, self.findings.heartbeat)
        if self.perception is not None and self.source is not None:
            self._stage("perception", self._perceive, self._perception_beat)
            self._start_camera(self.source, self._camera_stop)
        self._stage("health", self.health.run, self.health.heartbeat)
        self.notifier.send("READY=1", f"STATUS=started; {self._status()}")
        if self.notifier.enabled:
            log.info("told systemd the agent is ready%s", (
                f"; watchdog pings every {self.notifier.watchdog_s / 2:.0f} s while every "
                f"stage makes progress" if self.health.watchdog and self.notifier.watchdog_s
                else ""))

    def submit(self, event: Event) -> bool:
        """Hand a finding to the store writer, as the event stage does (any thread)."""
        return self.writer.submit(event)

    def stop(self) -> None:
        """Stop every stage in data-flow order, each finishing what it holds (bounded)."""
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing the findings in hand")
        self.stop_requested.set()
        self._camera_stop.set()
        camera_stopped = self._join("camera", CAMERA_STOP_S)
        self.slot.close()  # even if the camera is stuck in a read: perception can finish
        self._join("perception", 2)
        if self.findings is not None:
            self.findings.close()
            self._join("findings", FIX_WAIT_S + 3)
        if self.pictures is not None:
            self.pictures.close()
            self._join("pictures", PICTURES_STOP_S)  # those not made: sent without
        self.writer.close(WRITER_STOP_S)
        self._join("store", WRITER_STOP_S + BUSY_TIMEOUT_S + 2)
        if self.control is not None:
            self.control.close()
            self._join("control", 3)
        if self.uplink is not None:
            self.uplink.stop()
            self._join("uplink", self.uplink.mq.stop_delivery_s + OFFLINE_GRACE_S + 3)
        if self.gps is not None:
            self.gps.close()
            self._join("gps", 2)
        if self.source is not None and camera_stopped:
            # Not under a read still in progress: OpenCV does not take that from another
            # thread; the process is ending, and the capture with it.
            self.source.close()
        self.health.stop()
        self._join("health", 3)
        frames = ""
        if self.source is not None and self.perception is not None:
            frames = (f"{self.perception.stats.frames} frames analysed, "
                      f"{self.slot.dropped + self.source.stats.skipped} not (detection "
                      f"was busy), {self.source.stats.broken} broken; ")
        log.info("stopped after %.0f s: %s%d findings committed, %d lost",
                 time.monotonic() - self._started_mono, frames,
                 self.writer.stats.committed, self.writer.stats.lost)

    def report(self, ending: Ending) -> RunReport:
        with Store(self.store_path) as store:
            counts = store.counts()
        return RunReport(ending=ending,
                         failed=[f"{s.name}: {s.error}" for s in self.stages
                                 if s.state is StageState.FAILED],
                         lost=self.writer.stats.lost, pending=counts["pending"],
                         delivered=counts["delivered"])

    # --- supervision --------------------------------------------------------

    def _supervise(self, until_drained: bool, drain_timeout_s: float | None) -> Ending:
        drain_by: float | None = None
        while not self.stop_requested.wait(0.2):
            if self._restart_asked.is_set():
                log.info("restarting, as the office asked: the service manager starts the "
                         "agent again")
                return Ending.RESTART
            if any(s.state is StageState.FAILED for s in self.stages):
                names = ", ".join(s.name for s in self.stages if s.state is StageState.FAILED)
                log.error("stage %s failed; stopping the agent so that it starts afresh", names)
                return Ending.FAILED
            # A daemon goes on (delivering, reading gpsd) after a recording ends, until
            # it is stopped. until_drained: once the frames have run out (a recording
            # ended, or there is no camera) the writer commits what it holds, then the
            # uplink delivers what is pending, and the run is done.
            if not until_drained or self._running("perception") or self._running("camera"):
                continue
            if self._running("findings"):
                assert self.findings is not None
                self.findings.close()
                continue
            if self._running("pictures"):
                assert self.pictures is not None
                self.pictures.close()
                continue
            if self._running("store"):
                self.writer.close(WRITER_STOP_S)
                continue
            if self.uplink is None or not self._running("uplink"):
                return Ending.DONE
            if drain_by is None:
                self.uplink.finish()
                drain_by = time.monotonic() + (drain_timeout_s or float("inf"))
            elif time.monotonic() > drain_by:
                log.warning("gave up waiting for the broker after %.0f s: the findings not "
                            "delivered stay in the outbox", drain_timeout_s)
                return Ending.DONE
        return Ending.STOPPED

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT ask for an orderly stop (main thread only)."""
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _stage(self, name: str, loop: Callable[[], None], heartbeat: Heartbeat) -> None:
        stage = Stage(name, loop, heartbeat)
        # A stage started again (a camera or broker changed from afar) replaces the
        # one that ended before it.
        self.stages = [s for s in self.stages if s.name != name or s.running]
        self.stages.append(stage)
        stage.start()

    def _make_uplink(self, cfg: Config) -> Uplink:
        assert self.control is not None
        # Retention counts hours on the system clock: only once it can be trusted.
        return Uplink(cfg, self.store_path, status={"model": cfg.detector.model.stem},
                      clock_trusted=lambda: self.clock.time_source() != "unverified",
                      on_control=self.control.put, subscriptions=self.control.subscriptions)

    def _make_gps(self, gpsd: tuple[str, int]) -> GpsdReader:
        return GpsdReader(*gpsd, self.history, self.clock,
                          reconnect_min_s=self._gpsd_retry_s[0],
                          reconnect_max_s=self._gpsd_retry_s[1])

    # --- the office's config (the control stage's thread) ---------------------

    def _on_desired(self, scope: str, msg: ControlMessage) -> None:
        with self._reconfig:
            self._take_desired(scope, msg)

    def _trusted_now(self) -> datetime | None:
        """UTC now from GPS or an NTP-set clock; None while neither (signed commands'
        expiry cannot be judged then)."""
        if self.clock.time_source() == "unverified":
            return None
        return self.clock.frame_time(datetime.now(UTC), time.monotonic())

    def _take_desired(self, scope: str, msg: ControlMessage) -> None:
        assert self.file_data is not None
        if not msg.payload:
            # The office cleared its retained document: nothing to apply, and what is
            # in force stays (a retained message never undoes an accepted config).
            log.info("the office cleared the %s desired config; the config in force stays",
                     scope)
            return
        if self._rejected.get(scope) == msg.payload:
            return  # the broker's retained copy of what was rejected, after a reconnect
        try:
            doc = parse_desired(scope, msg.payload, self.authority)
        except DocumentError as e:
            self._reject(scope, None, msg, reason=str(e), request_id=e.request_id)
            return
        current = self.docs.get(scope)
        if current is not None and doc.version <= current.version:
            if doc == current:
                return  # the broker's retained copy of what is in force
            self._reject(scope, doc, msg, status="stale", reason=f"version {doc.version} is "
                         f"not above the {current.version} in force for the {scope}")
            return
        failed = self._rolled_back.get(scope)
        if failed is not None and doc == failed:
            return  # the broker's retained copy of what was rolled back (and reported)
        if failed is not None and doc.version <= failed.version:
            self._reject(scope, doc, msg, status="stale", reason=f"version {doc.version} is "
                         f"not above the {failed.version} rolled back for the {scope}")
            return
        if self._trial is not None:
            # Not remembered as rejected: the same document sent again later is tried.
            self._report("rejected", scope, doc, msg, reason="the change before it is still "
                         "on trial; send it again in a moment")
            return
        if self._fetching is not None:
            if self._fetching != doc:  # (its retained copy again is no news)
                self._report("rejected", scope, doc, msg, reason="a model download for "
                             f"{self._fetching.scope} version {self._fetching.version} is "
                             "in progress; send it again when that is reported")
            return
        new_docs = {**self.docs, scope: doc}
        try:
            new_cfg = effective(self.file_data, new_docs, f"{scope} config {doc.version}")
            if doc.model is not None and not is_installed(self._models_dir, doc.model):
                self._start_fetch(scope, doc, msg)  # back here once it is in
                return
            old_model = self.cfg.detector.model_path()
            changed, restarted = self._apply(new_cfg, new_docs)
        except ConfigError as e:
            self._reject(scope, doc, msg, problems=e.details, reason="; ".join(e.problems))
            return
        except DetectorError as e:
            if doc.model is None:
                self._reject(scope, doc, msg, reason=str(e))
                return
            # A fetched model that does not load or run: the one in force never stopped;
            # the document is not tried again from its retained copy, nor downloaded.
            self._model_step(doc, msg, "rolled_back", reason=str(e))
            remove_installed(self._models_dir, doc.model)
            mark_rolled_back(state_dir(self.cfg), doc)
            self._rolled_back[scope] = doc
            self._report("rolled_back", scope, doc, msg, reason=f"the model from "
                         f"{doc.model.url} does not work ({e}); the model in force stays")
            return
        except (SourceError, UplinkError) as e:
            self._reject(scope, doc, msg, reason=str(e))
            return
        if doc.model is not None:
            self._model_step(doc, msg, "swapped", model=str(new_cfg.detector.model_path()))
            prune(self._models_dir, keep={new_cfg.detector.model_path(), old_model})
        persist(state_dir(self.cfg), doc)
        previous = self.docs
        self.docs = new_docs
        needs = self._needs(changed)
        if needs:
            self._trial = _Trial(scope, doc, previous, needs, msg,
                                 time.monotonic() + self.cfg.control.grace_s,
                                 self._trial_baseline())
            if self.perception is not None:
                # a new model or camera is judged on frames analysed, even when parked
                self.perception.sampler.analyse_all = True
        self._report("accepted", scope, doc, msg, changed=changed, restarted=restarted,
                     on_trial=sorted(needs) or None)

    def _start_fetch(self, scope: str, doc: Desired, msg: ControlMessage) -> None:
        """Download the document's model on a thread of its own (a slow link must not
        hold up commands); the control stage takes the document again when it is in."""
        assert doc.model is not None and self.control is not None
        spec, control = doc.model, self.control
        self._fetching = doc
        max_bytes = int(self.cfg.control.max_model_mb * 1024 * 1024)
        log.info("fetching the model for the %s config version %d from %s", scope,
                 doc.version, spec.url)

        def done(error: FetchError | None) -> None:  # on the control stage's thread
            with self._reconfig:
                self._fetching = None
                if error is None:
                    self._take_desired(scope, msg)
                    return
                self._model_step(doc, msg, "failed", reason=str(error))
                if error.permanent:  # the same document would fail the same way
                    self._reject(scope, doc, msg, reason=str(error))
                else:  # the link: its retained copy is tried again at the next connection
                    self._report("rejected", scope, doc, msg, reason=str(error))

        def job() -> None:
            error: FetchError | None = None
            try:
                fetch(spec, self._models_dir, max_bytes,
                      lambda step, figures: self._model_step(doc, msg, step, **figures),
                      self.stop_requested)
            except FetchError as e:
                error = e
            except Exception as e:  # a bug must not leave it "in progress" for ever
                log.exception("the model download failed")
                error = FetchError(f"download failed: {e}", permanent=False)
            control.call_soon(lambda: done(error))

        threading.Thread(target=job, name="model-fetch", daemon=True).start()

    def _model_step(self, doc: Desired, msg: ControlMessage, step: str, **figures: Any
                    ) -> None:
        """A step of a model update, retained on model/progress (docs/mqtt.md)."""
        assert doc.model is not None
        body = without_none({"step": step, "scope": doc.scope, "version": doc.version,
                             "request_id": doc.request_id, "url": doc.model.url,
                             "sha256": doc.model.sha256, **figures,
                             "at": iso_utc(datetime.now(UTC))})
        log.info("model update (%s config version %d): %s%s", doc.scope, doc.version, step,
                 "".join(f", {k} {v}" for k, v in figures.items()))
        if self.uplink is not None:
            self._send(self.uplink.topics.model_progress, json.dumps(body).encode(),
                       retain=True, correlation_data=msg.correlation_data)

    def _reject(self, scope: str, doc: Desired | None, msg: ControlMessage,
                status: str = "rejected", **why: Any) -> None:
        self._rejected[scope] = msg.payload
        self._report(status, scope, doc, msg, **why)

    def _apply(self, new: Config, docs: dict[str, Desired]) -> tuple[list[str], list[str]]:
        """Put ``new`` in force: what can change live does, what cannot restarts its
        stage. What can fail (a model, a camera, TLS files) is made ready first, so that
        a failure leaves everything as it was. Returns (keys changed, stages restarted)."""
        old = self.cfg
        changed = _changed_keys(old, new)
        keys = {tuple(k.split(".", 1)) for k in changed}
        if ("camera", "enabled") in keys:
            raise ConfigError("desired config", ["camera.enabled is set in the unit's file "
                                                 "(a camera on or off needs a new start)"])
        if old.mqtt is not None and new.mqtt is None:
            raise ConfigError("desired config", ["[mqtt] cannot be taken away from afar"])
        camera_keys = {k for s, k in keys if s == "camera"} & CAMERA_RESTART
        detector_keys = {k for s, k in keys if s == "detector"} & DETECTOR_RELOAD
        # --- made ready: each may raise, and nothing has changed yet
        detectors = None
        if self.perception is not None and detector_keys:
            detectors = (build_detector(new), build_detector(new, threads=1))
            # Run on the newest frame (what it will see), or a blank one before any.
            last = self.perception.last_frame
            detectors[0].detect(last.image if last is not None else
                                np.zeros((new.camera.height, new.camera.width, 3), np.uint8))
        elif self.perception is not None:
            d = new.detector
            for det in (self.perception.detector, self._look):
                det.set_filters(d.score_threshold, d.class_thresholds, d.allow,
                                d.iou_threshold, d.max_detections)
        camera = None
        if self.perception is not None and camera_keys and self.file_data is not None:
            stop = threading.Event()
            camera = (live_feeds(new).camera(stop), stop)  # type: ignore[misc]
        uplink = self._make_uplink(new) if any(s == "mqtt" for s, _ in keys) else None
        # --- from here on nothing fails
        self.cfg = new
        restarted = []
        if detectors is not None and self.perception is not None:
            self.perception.detector, self._look = detectors  # _apply_live hands it on
            self._builder.model = detectors[0].model_path.stem
            restarted.append("detector")
        if camera is not None:
            self._restart_camera(*camera)
            restarted.append("camera")
        if any(s == "gps" for s, _ in keys):
            self._restart_gps(new)
            restarted.append("gps")
        if uplink is not None:
            self._restart_uplink(uplink)
            restarted.append("uplink")
        self._apply_live(new)
        label = ", ".join([f"file version {new.version}"]
                          + [f"{d.scope} {d.version}" for d in docs.values()])
        log.info("config in force: %s (%s changed%s)", label,
                 ", ".join(changed) or "nothing",
                 f"; restarted {', '.join(restarted)}" if restarted else "")
        return changed, restarted

    def _apply_live(self, new: Config) -> None:
        """What every stage reads item by item: swapped between items, no frame lost."""
        if self.perception is not None:
            b = self._builder
            b.cfg, b.camera, b.config_version = new.events, new.camera, new.version
            b.recent.distance_m = new.events.dedup_distance_m
            b.recent.window = timedelta(hours=new.events.dedup_window_h)
            if new.events.redact and b.redactor is None:
                b.redactor = Redactor()
            elif not new.events.redact:
                b.redactor = None
            b.second_look = self._look.look if new.events.confirm_score > 0 else None
            self.perception.shots.keep = BestShots.for_config(new.events).keep
            self.perception.sampler.cfg = new.sampling
        self.writer.max_held = new.store.max_held
        self.writer.quota_bytes = int(new.store.quota_mb * 1024 * 1024)
        self.writer.evict_undelivered_images = new.store.evict_undelivered_images
        if self.uplink is not None:
            self.uplink.reconfigure(new)
        self.health.stall_s = new.health.stall_s
        self.health.telemetry_every_s = new.health.telemetry_interval_s
        logging.getLogger().setLevel(new.logging.level)

    def _restart_camera(self, source: FrameSource, stop: threading.Event) -> None:
        self._camera_restarting = True
        self._camera_stop.set()
        if self._join("camera", CAMERA_STOP_S) and self.source is not None:
            self.source.close()
        self._camera_restarting = False
        self.source, self._camera_stop = source, stop
        self._start_camera(source, stop)

    def _restart_gps(self, new: Config) -> None:
        if self.gps is not None:
            self.gps.close()
            self._join("gps", 2)
            self.gps = None
        if new.gps.enabled:
            self.gps = self._make_gps((new.gps.host, new.gps.port))
            self._stage("gps", self.gps.run, self.gps.heartbeat)

    def _restart_uplink(self, uplink: Uplink) -> None:
        if self.uplink is not None:
            self.uplink.stop(0)
            self._join("uplink", OFFLINE_GRACE_S + 3)
        self.uplink = uplink
        uplink.times = self.times
        self.writer.on_commit = uplink.notify
        self._stage("uplink", uplink.run, uplink.heartbeat)

    def _needs(self, changed: list[str]) -> set[str]:
        """What must be seen working before a change is kept."""
        needs = set()
        sections = {c.split(".")[0] for c in changed}
        if "mqtt" in sections:
            needs.add("broker")
        if self.perception is not None and any(
                c.split(".")[1] in CAMERA_RESTART for c in changed if c.startswith("camera.")):
            needs.add("camera")
        if self.perception is not None and any(
                c.split(".")[1] in DETECTOR_RELOAD for c in changed
                if c.startswith("detector.")):
            needs.add("model")
        return needs

    def _trial_baseline(self) -> tuple[int, int]:
        frames = self.source.stats.frames if self.source is not None else 0
        analysed = self.perception.stats.frames if self.perception is not None else 0
        return frames, analysed

    def _judge_trial(self) -> None:
        """Once a second: has the change on trial shown it works? Past control.grace_s
        without that, it is rolled back."""
        trial = self._trial
        if trial is None:
            return
        frames, analysed = self._trial_baseline()
        ok = {"broker": self.uplink is not None and self.uplink.stats.connected,
              "camera": frames > trial.baseline[0] + 5,
              "model": analysed > trial.baseline[1] + 5
              and self.frame_faults.stats.in_a_row == 0}
        if all(ok[n] for n in trial.needs):
            log.info("the %s config version %d works (%s)", trial.scope, trial.doc.version,
                     ", ".join(sorted(trial.needs)))
            self._end_trial()
            return
        if time.monotonic() < trial.deadline:
            return
        failing = sorted(n for n in trial.needs if not ok[n])
        why = "; ".join(self._why_not(n) for n in failing)
        with self._reconfig:
            self._roll_back(trial, why)

    def _end_trial(self) -> None:
        self._trial = None
        if self.perception is not None:
            self.perception.sampler.analyse_all = False

    def _why_not(self, need: str) -> str:
        if need == "broker":
            err = self.uplink.stats.last_error if self.uplink is not None else ""
            return f"the broker was not reached with it ({err or 'no answer'})"
        if need == "camera":
            err = self.source.stats.last_error if self.source is not None else ""
            return f"the camera gave no frames with it ({err or 'none came'})"
        return f"the model did not run ({self.frame_faults.stats.last_error or 'no frames'})"

    def _roll_back(self, trial: _Trial, why: str) -> None:
        assert self.file_data is not None
        self._end_trial()
        log.error("rolling the %s config version %d back within %.0f s: %s", trial.scope,
                  trial.doc.version, self.cfg.control.grace_s, why)
        previous = effective(self.file_data, trial.previous, "the config before")
        self._apply(previous, trial.previous)
        before = trial.previous.get(trial.scope)
        directory = state_dir(self.cfg)
        # The document before first: a power cut in between leaves it in force, and the
        # failed one is only tried (and rolled back) once more.
        if before is not None:
            persist(directory, before)
        else:
            forget(directory, trial.scope)
        mark_rolled_back(directory, trial.doc)
        self._rolled_back[trial.scope] = trial.doc
        self.docs = dict(trial.previous)
        self._report("rolled_back", trial.scope, trial.doc, trial.msg, reason=why)

    def _report(self, status: str, scope: str, doc: Desired | None, msg: ControlMessage,
                reason: str | None = None, problems: list[dict[str, Any]] | None = None,
                changed: list[str] | None = None, restarted: list[str] | None = None,
                on_trial: list[str] | None = None, request_id: str | None = None) -> None:
        """The config report (retained on config/reported, docs/mqtt.md); ``request_id``
        for a payload that could not be read as a document."""
        body = without_none({
            "status": status, "scope": scope, "version": doc.version if doc else None,
            "request_id": doc.request_id if doc else request_id,
            "in_force": {s: d.version for s, d in self.docs.items()},
            "config_version": self.cfg.version, "config_hash": self.cfg.content_hash(),
            "changed": changed or None, "restarted": restarted or None,
            "on_trial": on_trial, "reason": reason,
            "problems": [{k: v for k, v in p.items()} for p in problems] if problems else None,
            "at": iso_utc(datetime.now(UTC))})
        level = logging.INFO if status == "accepted" else logging.WARNING
        log.log(level, "%s config %s: %s%s", scope, status,
                f"version {doc.version}" if doc else "a document",
                f" ({reason})" if reason else "")
        if self.uplink is not None:
            self._send(self.uplink.topics.config_reported,
                       json.dumps(body, default=str).encode(), retain=True,
                       correlation_data=msg.correlation_data)

    def reload_config(self, config_path: Path) -> dict[str, Any]:
        """The ``reload-config`` command: the file read again, the kept documents over it."""
        with self._reconfig:
            file_data = read_config_file(config_path)
            new_cfg = effective(file_data, self.docs, str(config_path))
            changed, restarted = self._apply(new_cfg, self.docs)
            self.file_data = file_data
        return {"changed": changed, "restarted": restarted, "config_version": new_cfg.version,
                "config_hash": new_cfg.content_hash()}

    # --- commands (the control stage's thread) --------------------------------

    def _send(self, topic: str, payload: bytes, retain: bool = False,
              correlation_data: bytes | None = None) -> None:
        if self.uplink is not None:
            self.uplink.send(topic, payload, retain, correlation_data)

    def _command_handlers(self) -> dict[str, Handler]:
        handlers: dict[str, Handler] = {
            "ping": self._cmd_ping, "flush": self._cmd_flush,
            "purge-delivered": self._cmd_purge_delivered, "snapshot": self._cmd_snapshot,
            "restart": self._cmd_restart, "send-image": self._cmd_send_image}
        if self.config_path is not None:
            handlers["reload-config"] = self._cmd_reload_config
        return handlers

    def _cmd_reload_config(self, req: Request) -> dict[str, Any]:
        assert self.config_path is not None
        try:
            return self.reload_config(self.config_path)
        except (ConfigError, DetectorError, SourceError, UplinkError) as e:
            raise RequestError(f"not reloaded, the config in force stays: {e}") from None

    def _cmd_ping(self, req: Request) -> dict[str, Any]:
        return {"device": self.cfg.device.id, "agent_version": __version__,
                "uptime_s": round(time.monotonic() - self._started_mono, 3),
                "config_version": self.cfg.version}

    def _cmd_flush(self, req: Request) -> dict[str, Any]:
        if self.uplink is not None:
            self.uplink.notify()
        with Store(self.store_path) as store:
            return {"pending": store.counts()["pending"]}

    def _cmd_send_image(self, req: Request) -> dict[str, Any]:
        """A finding's full picture, now, whatever link.images says (the office asked)."""
        event_id = req.args.get("event_id")
        if not isinstance(event_id, str) or not 0 < len(event_id) <= 64:
            raise RequestError("args.event_id must name a finding (its id)")
        with Store(self.store_path) as store:
            stored = store.get(event_id)
        if stored is None:
            raise RequestError(f"no finding {event_id} on this unit (pruned, or never here)")
        if not stored.event.image_jpeg:
            raise RequestError(f"finding {event_id} has no picture any more (evicted to keep "
                               "the outbox within store.quota_mb)")
        assert self.uplink is not None
        self.uplink.request_image(event_id)
        return {"event_id": event_id, "topic": self.uplink.topics.image(event_id),
                "bytes": len(stored.event.image_jpeg), "sha256": stored.image_sha256,
                "queued": True}

    def _cmd_purge_delivered(self, req: Request) -> dict[str, Any]:
        with Store(self.store_path) as store:
            return {"deleted": store.purge_delivered(), **store.counts()}

    def _cmd_snapshot(self, req: Request) -> dict[str, Any]:
        frame = self.perception.last_frame if self.perception is not None else None
        if frame is None:
            raise RequestError("no frame yet: the camera is off, or has not given one")
        if self._redactor is None:
            self._redactor = Redactor()
        image, report = self._redactor.redact(frame.image)  # never an unredacted picture
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY,
                                               self.cfg.events.jpeg_quality])
        if not ok:
            raise RequestError("the picture could not be encoded")
        jpeg = buf.tobytes()
        snapshot_id = new_event_id()
        assert self.uplink is not None
        self._send(self.uplink.topics.snapshot(snapshot_id), jpeg)
        assert self.findings is not None
        when = self.findings.frame_time(frame.captured_utc, frame.captured_mono)
        return {"topic": self.uplink.topics.snapshot(snapshot_id), "bytes": len(jpeg),
                "sha256": hashlib.sha256(jpeg).hexdigest(), "captured_at": iso_utc(when),
                "redaction": report.as_dict()}

    def _cmd_restart(self, req: Request) -> dict[str, Any]:
        self._restart_asked.set()
        return {"restarting": True}

    # --- health (the health stage's thread) ----------------------------------

    def _hearts(self) -> dict[str, Heartbeat]:
        """The running stages' heartbeats (a finished recording's camera is not stuck)."""
        return {s.name: s.heartbeat for s in self.stages if s.running and s.name != "health"}

    def _publish_telemetry(self, data: bytes) -> None:
        if self.uplink is not None:
            self.uplink.send_now(self.uplink.topics.telemetry, data)

    def _telemetry(self) -> dict[str, Any]:
        """The telemetry report (docs/mqtt.md): every stage's figures since the last one."""
        now = time.monotonic()
        since, frames_before, delivered_before = self._last_report
        dt = max(1e-3, now - since)
        report: dict[str, Any] = {
            "device": self.cfg.device.id, "at": iso_utc(datetime.now(UTC)),
            "agent_version": __version__, "config_version": self.cfg.version,
            "config_hash": self.cfg.content_hash(),
            "config_in_force": {s: d.version for s, d in self.docs.items()},
            "uptime_s": round(now - self._started_mono, 1), "interval_s": round(dt, 1)}
        analysed = 0
        if self.perception is not None and self.source is not None:
            p, src = self.perception, self.source
            analysed = p.stats.frames
            times = sorted(p.invoke_ms)
            report["camera"] = {
                "source": src.name, "running": self._running("camera"),
                "frames_captured": src.stats.frames,
                "frames_dropped": self.slot.dropped + src.stats.skipped,
                "frames_broken": src.stats.broken + p.stats.broken_frames,
                "frames_analysed": analysed, "reopens": src.stats.reopens,
                "frames_not_analysed": {"stationary": p.sampler.stats.stationary,
                                        "distance": p.sampler.stats.distance}}
            report["detector"] = {
                "frames_per_s": round((analysed - frames_before) / dt, 2),
                "invoke_ms_p50": round(times[len(times) // 2], 2) if times else None,
                "invoke_ms_p95": round(times[int(len(times) * 0.95)], 2) if times else None}
        if self.findings is not None:
            ev = self.findings.stats
            report["findings"] = {"made": ev.findings, "repeats": ev.repeats,
                                  "not_findings": ev.dropped}
            if self.pictures is not None:
                report["findings"]["pictures_waiting"] = self.pictures.waiting
                report["findings"]["without_picture"] = (
                    ev.unredactable + ev.unencodable + self.pictures.behind)
        with Store(self.store_path) as store:
            pending, size, oldest = store.backlog()
            counts = store.counts()
        report["outbox"] = {
            "pending": pending, "pending_mb": round(size / 1024 / 1024, 2),
            "oldest_pending_age_s": round((datetime.now(UTC) - oldest).total_seconds(), 1)
            if oldest else None,
            "delivered": counts["delivered"],
            "delivered_since_last": (self.uplink.stats.delivered - delivered_before
                                     if self.uplink else None),
            "held": self.writer.stats.held, "lost": self.writer.stats.lost,
            "evicted": self.writer.stats.evicted_delivered + self.writer.stats.evicted_images}
        if self.gps is not None:
            g = self.gps.stats
            report["gps"] = {"connected": g.connected, "mode": g.mode,
                             "fix": g.mode >= 2 and g.fix_lost_since is None,
                             "satellites_used": g.satellites_used,
                             "satellites_seen": g.satellites_seen,
                             "clock_offset_s": None if g.clock_offset_s is None
                             else round(g.clock_offset_s, 3),
                             "time_source": self.clock.time_source()}
            last = self.gps.history.last()
            if last is not None and last.lat is not None and last.lon is not None:
                # The office's fleet panel puts the unit on the map from this.
                report["gps"]["position"] = {
                    "lat": round(last.lat, 6), "lon": round(last.lon, 6),
                    "at": last.utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        if self.uplink is not None:
            u = self.uplink.stats
            report["broker"] = {"connected": u.connected, "puback_ms": u.puback_ms,
                                "reconnects": u.reconnects, "rejected": u.rejected,
                                "last_error": u.last_error or None}
            link, lc = self.uplink.link, self.cfg.link
            report["link"] = {
                "cheap": link.cheap, "interface": link.interface, "images": lc.images,
                "used_mb_today": link.used_mb_today,
                "budget_mb_per_day": lc.budget_mb_per_day,
                "used_mb_month": link.used_mb_month,
                "budget_mb_per_month": lc.budget_mb_per_month, "rate_kbps": lc.rate_kbps,
                "images_held": link.images_held,
                "telemetry_skipped": link.telemetry_skipped, "holding": link.holding}
        report["machine"] = machine(self.store_path.parent)
        self._last_report = (now, analysed, self.uplink.stats.delivered if self.uplink else 0)
        return report

    def _status(self) -> str:
        """One line for ``systemctl status``: frames, backlog, GPS, broker."""
        parts = []
        if self.perception is not None:
            frames, since = self._frames_seen
            # frames through perception, analysed or not: a parked unit's camera still works
            st = self.perception.stats
            now, n = time.monotonic(), st.frames + st.skipped
            self._frames_seen = (n, now)
            if self._running("camera"):
                parts.append(f"{(n - frames) / max(1e-3, now - since):.1f} frames/s")
            else:
                parts.append("camera ended" if self.stages else "camera starting")
        try:
            with Store(self.store_path) as store:
                pending = store.counts()["pending"]
            parts.append(f"{pending} findings to deliver")
        except StoreError as e:
            parts.append(f"outbox unreadable ({e})")
        if self.gps is not None:
            g = self.gps.stats
            parts.append("gpsd unreachable" if not g.connected else
                         f"GPS {g.mode}D fix" if g.mode >= 2 and g.fix_lost_since is None
                         else "GPS: no fix")
        if self.uplink is not None:
            u = self.uplink.stats
            parts.append("broker connected" if u.connected
                         else f"broker not connected ({u.last_error or 'connecting'})")
        if self.perception is not None and self.perception.sampler.standing:
            parts.append("parked: frames not analysed")
        return ", ".join(parts)

    def _running(self, name: str) -> bool:
        return any(s.name == name and s.running for s in self.stages)

    def _join(self, name: str, timeout: float) -> bool:
        """Wait for a stage to end; False (and said) if it is still running."""
        for s in self.stages:
            if s.name == name and not s.join(timeout):
                log.warning("%s did not stop within %.0f s; leaving it", name, timeout)
                return False
        return True

    # --- the camera and perception threads ----------------------------------

    def _start_camera(self, source: FrameSource, stop: threading.Event) -> None:
        self._stage("camera", lambda: self._capture(source, stop), source.heartbeat)

    def _capture(self, source: FrameSource, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                if source.drops_unread and self._standing() and stop.wait(STANDING_READ_S):
                    break
                with self.camera_faults.guard(f"a read of {source.name}"):
                    with Stopwatch(self.times, "decode"):
                        frame = source.read()
                    if frame is None:
                        if not stop.is_set():
                            log.info("camera %s ended", source.name)
                        return
                    self.slot.put(frame)
        finally:
            if not self._camera_restarting:  # a new camera takes over the slot
                self.slot.close()

    def _standing(self) -> bool:
        """The vehicle stands and frames are taken at the camera's pace (not a recording
        read frame by frame): a camera that drops unread frames need not be read at its
        full rate (a stream, which would buffer them, always is)."""
        return (self.perception is not None and self.perception.sampler.standing
                and not self.slot.every_frame)

    def _perceive(self) -> None:
        assert self.perception is not None
        perception = self.perception
        while not self.slot.finished:
            frame = self.slot.take(timeout=0.5)
            self._perception_beat.beat()
            if frame is not None:
                with self.frame_faults.guard(f"frame {frame.index}"):
                    perception.process(frame)
        perception.flush()


# --- replay of a recorded drive ----------------------------------------------------

@dataclass
class ReplaySummary:
    frames: int = 0
    """Frames through perception, analysed or not."""
    analysed: int = 0
    not_analysed_stationary: int = 0
    not_analysed_distance: int = 0
    seconds: float = 0.0
    wall_s: float = 0.0
    detections: int = 0
    frames_without_fix: int = 0
    broken_frames: int = 0
    skipped_frames: int = 0
    findings: int = 0
    repeats: int = 0
    dropped_tracks: int = 0
    fixes: int = 0
    gps_fix_losses: int = 0
    gpsd_reconnects: int = 0
    delivered: int | None = None
    lost: int = 0
    failed: list[str] = field(default_factory=list)
    gps_mode: str = "direct"
    notes: list[str] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    """Per-stage times and findings' latencies (patrol-agent bench)."""


def replay(cfg: Config, video: Path, nmea: Path, speed: str = "max",
           start_utc: datetime | None = None, store_path: Path | None = None,
           gpsd: tuple[str, int] | None = None) -> ReplaySummary:
    """A recorded drive through the same pipeline as ``run``: camera → perception →
    store (→ uplink, until every finding is delivered if a broker is configured).

    ``speed`` "max": every frame, as fast as it goes, with the NMEA log read directly.
    "1": the video played as a camera at its own rate and the log served by a real gpsd
    through gpsfake. ``gpsd``: fixes from this gpsd (already serving the drive's log,
    e.g. a technician's own gpsfake); implies real time. The NMEA file is still read for
    the video's start time, the fix count and warnings about the log.
    """
    from agent.gpsfake import Gpsfake
    from agent.nmea import describe_disorder, read_nmea_stats

    t_wall = time.monotonic()
    summary = ReplaySummary()
    fixes, nstats = read_nmea_stats(nmea)
    summary.fixes = sum(f.usable for f in fixes)
    if nstats.bad:
        summary.notes.append(f"{nstats.bad} unreadable NMEA lines skipped")
    if disorder := describe_disorder(nmea, nstats):
        log.warning("%s", disorder)
        summary.notes.append(disorder)
    if start_utc is None:
        if not fixes:
            raise ValueError(f"{nmea}: no timed NMEA sentences; give the video's start time")
        start_utc = fixes[0].utc  # the recorder starts the video and the log together
    real_time = gpsd is not None or speed != "max"
    gpsfake: Gpsfake | None = None
    if gpsd is not None:
        summary.gps_mode = f"gpsd at {gpsd[0]}:{gpsd[1]}"
    elif real_time:
        summary.gps_mode = "gpsd (gpsfake)"
        span = (fixes[-1].utc - fixes[0].utc).total_seconds() if len(fixes) > 1 else 1.0
        gpsfake = Gpsfake(nmea, cycle_s=max(0.01, span / max(1, nstats.sentences)))
        gpsd = ("127.0.0.1", gpsfake.port)

    def camera(stop: threading.Event) -> FrameSource:
        return OpenCVSource(str(video), fps=cfg.camera.fps, start_utc=start_utc,
                            paced=real_time, stop=stop)

    feeds = Feeds(camera=camera, gpsd=gpsd, fixes=() if real_time else fixes,
                  fix_history_s=float("inf"), every_frame=not real_time,
                  gpsd_retry_s=(0.2, 1.0))
    try:
        pipe = Pipeline(cfg, feeds, store_path=store_path)
        pipe.install_signal_handlers()
        report = pipe.run(until_drained=True, drain_timeout_s=REPLAY_DRAIN_S)
    finally:
        if gpsfake is not None:
            gpsfake.stop()
    assert pipe.perception is not None and pipe.source is not None
    assert pipe.findings is not None
    p, src, ev = pipe.perception, pipe.source, pipe.findings.stats
    summary.frames = p.stats.frames + p.stats.skipped
    summary.analysed = p.stats.frames
    summary.not_analysed_stationary = p.sampler.stats.stationary
    summary.not_analysed_distance = p.sampler.stats.distance
    summary.seconds = (src.stats.frames + src.stats.skipped) / (
        getattr(src, "fps", None) or cfg.camera.fps)
    summary.detections = p.stats.detections
    summary.frames_without_fix = p.stats.frames_without_fix
    summary.broken_frames = p.stats.broken_frames + src.stats.broken
    summary.skipped_frames = src.stats.skipped + pipe.slot.dropped
    summary.findings = ev.findings
    summary.repeats = ev.repeats
    summary.dropped_tracks = ev.dropped
    summary.lost = report.lost
    summary.times = pipe.times
    summary.failed = report.failed
    if pipe.gps is not None:
        summary.fixes = pipe.gps.stats.fixes
        summary.gps_fix_losses = pipe.gps.stats.fix_losses
        summary.gpsd_reconnects = pipe.gps.stats.reconnects
    if cfg.mqtt is not None:
        summary.delivered = report.delivered
    summary.wall_s = time.monotonic() - t_wall
    return summary
