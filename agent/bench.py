"""``patrol-agent bench``: the whole pipeline measured against the bare interpreter.

In one process and one run, on a recorded drive (the bundled sample drive by default) and
the configured model, with a private Mosquitto on a free loopback port (or ``--broker``):

* **ceiling**: ``invoke()`` in a loop on ready input, at the configured thread count: the
  fastest any pipeline could analyse frames;
* **pipeline**: the agent's own pipeline (the stages of agent/pipeline.py on their
  threads, as ``replay`` runs it: every frame, as fast as it goes) from video decode to the
  broker's PUBACK; frames per second, per-stage times, and each finding's latency from the
  moment the frame that completed it was read to its commit and to its PUBACK;
* **baseline**: the loop a user would write first, on one thread: read, detect, insert
  each detection into SQLite, publish it and wait for its PUBACK;
* **standing still**: the pipeline run at the camera's own pace twice, the vehicle moving
  and then parked, and the CPU each takes; its camera is the drive's frames as a folder of
  pictures, which like a camera costs nothing for a frame not taken;
* peak RSS of the agent replaying the drive as its own process.

It prints a table and, with ``--json FILE``, writes the figures. Everything is relative
to the same run on the same machine: no figure is judged against a constant measured
elsewhere. ``benchmarks/bench_pipeline.py`` runs the same.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agent.config import Config, MqttConfig, SamplingConfig, resolve_shipped
from agent.geo import destination
from agent.nmea import read_nmea_stats
from agent.records import Event, Fix, Frame, Position

log = logging.getLogger("bench")

SAMPLE = Path("samples/drive")
TARGETS = {"of_ceiling": 0.9, "over_baseline": 1.5, "commit_p95_invokes": 3.0,
           "peak_rss_mb": 200.0, "stationary_cpu_ratio": 0.10}
"""The aims (issue 15): ratios within one run, and the memory of a Pi's share."""


class BenchError(Exception):
    """The bench cannot run (no broker, no drive); the message says what is missing."""


# --- a private broker ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_broker(workdir: Path) -> Iterator[tuple[str, int]]:
    """A Mosquitto of our own on a free loopback port, for the run's length."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                        if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        raise BenchError("the bench needs an MQTT broker: install mosquitto, or give "
                         "--broker HOST:PORT")
    port = _free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "user root\nlog_dest none\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"mosquitto did not start on port {port}") from None
                time.sleep(0.05)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the parts --------------------------------------------------------------------------------


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cur = peak
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
    except OSError:
        pass
    return cur, peak


def agent_peak_rss_mb(cfg: Config, video: Path, nmea: Path, workdir: Path) -> float:
    """Peak RSS of the agent itself, replaying the drive as its own process (this one
    holds the bench's extra interpreters and the baseline's as well), with the bench's
    config and no broker."""
    import tomlkit
    data = cfg.model_dump(mode="json", exclude_none=True)
    data.pop("mqtt", None)
    data["store"]["path"] = str(workdir / "rss.db")
    conf = workdir / "agent.toml"
    conf.write_text(tomlkit.dumps(data), encoding="utf-8")
    cmd = [sys.executable, "-m", "agent", "replay", "--video", str(video), "--nmea",
           str(nmea), "--config", str(conf), "--quiet"]
    # its own high-water mark (VmHWM), read while it runs: the rusage of children would
    # mix it with this process's, which a child starts from
    status = None
    peak_kb = 0
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        proc_status = Path(f"/proc/{proc.pid}/status")
        while status is None:
            try:
                for line in proc_status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak_kb = max(peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            try:
                status = proc.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
        err = proc.stderr.read() if proc.stderr else ""
    if status != 0:
        raise BenchError(f"the agent's replay failed: {err.strip()[-500:]}")
    return peak_kb / 1024


def ceiling(cfg: Config, image: np.ndarray, seconds: float = 5.0,
            threads: int | None = None) -> dict[str, float]:
    """Bare ``invoke()`` on ready input at the configured thread count."""
    from agent.pipeline import build_detector
    if threads is not None:
        cfg = cfg.model_copy(update={"detector": cfg.detector.model_copy(
            update={"threads": threads})})
    det = build_detector(cfg)
    det.detect(image)  # sets the input once, warms up
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 20:
        t0 = time.perf_counter()
        det.interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ceiling_fps": 1000 / statistics.mean(times),
            "invoke_ms_median": statistics.median(times)}


def baseline(cfg: Config, video: Path, broker: tuple[str, int], workdir: Path,
             frames: int) -> dict[str, float]:
    """The single-threaded loop a user would write first: read, detect, insert, publish."""
    import paho.mqtt.client as mqtt
    import sqlite_utils
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.pipeline import build_detector
    det = build_detector(cfg)
    db = sqlite_utils.Database(workdir / "baseline.db")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-baseline")
    client.connect(*broker)
    client.loop_start()
    cap = cv2.VideoCapture(str(video))
    n = stored = 0
    t0 = time.perf_counter()
    try:
        while n < frames:
            ok, img = cap.read()
            if not ok:
                break
            n += 1
            for d in det.detect(img):
                row = {"label": d.label, "score": d.score, "frame": n,
                       "bbox": json.dumps(d.bbox),
                       "image": cv2.imencode(".jpg", img)[1].tobytes()}
                db["detections"].insert(row)
                info = client.publish("bench/baseline", json.dumps(
                    {k: v for k, v in row.items() if k != "image"}), qos=1)
                info.wait_for_publish(10)
                stored += 1
    finally:
        elapsed = time.perf_counter() - t0
        cap.release()
        client.loop_stop()
        client.disconnect()
    return {"baseline_fps": n / elapsed, "baseline_frames": n, "baseline_published": stored}


@dataclass
class PipelineRun:
    frames: int = 0
    findings: int = 0
    delivered: int = 0
    fps: float = 0.0
    stages: dict[str, dict[str, float]] = field(default_factory=dict)


def pipeline(cfg: Config, video: Path, nmea: Path, workdir: Path) -> PipelineRun:
    """The agent's pipeline as ``replay`` runs it, every frame as fast as it goes, until
    every finding is acknowledged by the broker."""
    from agent.pipeline import replay
    s = replay(cfg, video, nmea, speed="max", store_path=workdir / "pipeline.db")
    if s.failed:
        raise BenchError("the pipeline failed: " + "; ".join(s.failed))
    t = s.times
    run = PipelineRun(frames=s.analysed, findings=s.findings, delivered=s.delivered or 0,
                      stages=t.summary())
    first = t.first("decode")
    last = max(v for v in (t.last("postprocess"), t.last("capture_to_puback")) if v)
    run.fps = s.analysed / max(1e-6, last - first) if first else 0.0
    return run


def _still(fixes: list[Fix]) -> list[Fix]:
    """The drive's fixes with the vehicle parked where it started."""
    f0 = next(f for f in fixes if f.lat is not None)
    return [Fix(f.utc, f0.lat, f0.lon, 3, 0.0, None, f.eph_m) for f in fixes]


def camera_frames(video: Path, out: Path) -> Path:
    """The recording's frames as a folder of JPEGs: played at its pace, such a folder, like
    a camera, costs nothing for a frame nobody takes (a video file must decode every frame
    to reach the next, which no camera does)."""
    out.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    try:
        i = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            cv2.imwrite(str(out / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            i += 1
    finally:
        cap.release()
    if i == 0:
        raise BenchError(f"{video}: no frame can be read")
    return out


def cpu_at_pace(cfg: Config, frames: Path, fixes: list[Fix], workdir: Path, name: str,
                warm_s: float, window_s: float) -> float:
    """CPU seconds per second of this process while the pipeline runs at the camera's own
    pace on ``frames`` (a folder: :func:`camera_frames`), after ``warm_s``, over
    ``window_s``."""
    from agent.pipeline import Feeds, Pipeline
    from agent.sources import OpenCVSource
    start = fixes[0].utc

    def camera(stop: threading.Event) -> OpenCVSource:
        return OpenCVSource(str(frames), fps=cfg.camera.fps, start_utc=start, paced=True,
                            stop=stop)

    feeds = Feeds(camera=camera, gpsd=None, fixes=fixes, fix_history_s=float("inf"),
                  every_frame=False)
    pipe = Pipeline(cfg.model_copy(update={"mqtt": None}), feeds,
                    store_path=workdir / f"{name}.db")
    pipe.start()
    try:
        time.sleep(warm_s)
        c0, t0 = time.process_time(), time.monotonic()
        time.sleep(window_s)
        return (time.process_time() - c0) / (time.monotonic() - t0)
    finally:
        pipe.stop()


# --- cost as work grows ----------------------------------------------------------------------


class LoopedDrive:
    """A long drive made of a short recording played over and over (re-read each time: no
    frame is held in memory), its frames stamped on one continuous timeline, for the
    growth figures: hours of frames without hours of rendering."""

    live = False
    timebase = "recording"
    drops_unread = False

    def __init__(self, video: Path, frames: int, start: datetime, fps: float,
                 stop: threading.Event) -> None:
        from agent.sources import SourceStats
        from agent.stages import Heartbeat
        self.video, self.total, self.start, self.fps, self._stop = video, frames, start, fps, stop
        self.name = f"looped:{video.name}"
        self.stats = SourceStats()
        self.heartbeat = Heartbeat()
        self._cap = cv2.VideoCapture(str(video))
        self._i = 0

    def read(self) -> Frame | None:
        self.heartbeat.beat()
        if self._i >= self.total or self._stop.is_set():
            return None
        ok, img = self._cap.read()
        if not ok:  # the end of the recording: round again
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self.video))
            ok, img = self._cap.read()
            if not ok:
                return None
        t = self._i / self.fps
        f = Frame(img, self.start + timedelta(seconds=t), t, self._i, self.name)
        self._i += 1
        self.stats.frames += 1
        return f

    def close(self) -> None:
        self._cap.release()


def long_drive(cfg: Config, video: Path, minutes: float, broker: tuple[str, int],
               workdir: Path) -> dict[str, float]:
    """``minutes`` of driving at 10 m/s (the sample drive's frames over and over, so every
    lap's objects are new findings 600 m on), every frame analysed as fast as it goes and
    every finding delivered: RSS and time per frame in the first and the last minute."""
    from agent.pipeline import Feeds, Pipeline
    fps = cfg.camera.fps
    total = int(minutes * 60 * fps)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    lat0, lon0 = 37.5, 127.0
    fixes = []
    for k in range(int(minutes * 60) + 2):  # 1 Hz, north at 10 m/s
        lat, lon = destination(lat0, lon0, 0.0, 10.0 * k)
        fixes.append(Fix(start + timedelta(seconds=k), lat, lon, 3, 10.0, 0.0, 3.0))
    feeds = Feeds(camera=lambda stop: LoopedDrive(video, total, start, fps, stop),  # type: ignore[arg-type,return-value]
                  fixes=fixes, fix_history_s=float("inf"), every_frame=True)
    mq = MqttConfig(host=broker[0], port=broker[1], client_id="bench-long")
    pipe = Pipeline(cfg.model_copy(update={"mqtt": mq}), feeds,
                    store_path=workdir / "long.db")
    samples: list[tuple[float, int, float]] = []  # (wall, frames analysed, rss MB)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):  # a minute of frames goes by in a few seconds here
            assert pipe.perception is not None
            samples.append((time.monotonic(), pipe.perception.stats.frames, _rss_mb()[0]))

    watcher = threading.Thread(target=watch, name="bench-watch", daemon=True)
    watcher.start()
    try:
        pipe.run(until_drained=True, drain_timeout_s=120)
    finally:
        done.set()
        watcher.join(2)
    per_min = 60 * fps

    def minute(first: bool) -> tuple[float, float]:
        # frames strictly inside the minute: once the last frame is analysed the pipeline
        # only drains (the last findings, the broker), which is not time per frame
        lo, hi = (0, per_min) if first else (total - per_min, total)
        inside = [s for s in samples if lo <= s[1] < hi] or samples[:2]
        a, b = inside[0], inside[-1]
        ms = (b[0] - a[0]) * 1e3 / max(1, b[1] - a[1])
        return ms, max(s[2] for s in inside)

    (ms0, rss0), (ms1, rss1) = minute(True), minute(False)
    assert pipe.findings is not None and pipe.uplink is not None
    return {"long_minutes": minutes, "long_frames": total,
            "long_findings": pipe.findings.stats.findings,
            "long_delivered": pipe.uplink.stats.delivered,
            "long_frame_ms_first_min": ms0, "long_frame_ms_last_min": ms1,
            "long_rss_mb_first_min": rss0, "long_rss_mb_last_min": rss1}


BACKLOG_SPACING_S = 6.0
"""100,000 findings in a week: one every six seconds."""


def _backlog_event(i: int, jpeg: bytes) -> Event:
    return Event(label="garbage", score=0.9, bbox=(0.1, 0.2, 0.3, 0.4),
                 captured_utc=datetime(2026, 1, 1, tzinfo=UTC)
                 + timedelta(seconds=i * BACKLOG_SPACING_S),
                 captured_mono=float(i), image_jpeg=jpeg,
                 position=Position(37.5 + i * 1e-5, 127.0, 4.0, "vehicle"), model="bench")


def backlog(cfg: Config, size: int, broker: tuple[str, int], workdir: Path,
            deliver: int = 300) -> dict[str, float]:
    """An outbox holding ``size`` undelivered findings (a week in an LTE dead zone): the
    time to commit one more, to pick the next batch to send, to start a unit on it, and
    the delivery rate of its first ``deliver``."""
    from agent.pipeline import Feeds, Pipeline
    from agent.store import Store
    from agent.uplink import Uplink
    path = workdir / f"backlog-{size}.db"
    jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes()
    with Store(path) as store:
        for k in range(0, size, 2000):
            store.add_many([_backlog_event(i, jpeg) for i in range(k, min(size, k + 2000))])
        commit, pick = [], []
        for j in range(30):
            ev = _backlog_event(size + j, jpeg)
            t0 = time.perf_counter()
            store.add_many([ev])
            commit.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            store.pending(32)
            pick.append((time.perf_counter() - t0) * 1e3)
    mq = MqttConfig(host=broker[0], port=broker[1], client_id=f"bench-backlog-{size}")
    unit = cfg.model_copy(update={"mqtt": mq, "store": cfg.store.model_copy(
        update={"path": path})})
    t0 = time.perf_counter()
    pipe = Pipeline(unit, Feeds(camera=None), store_path=path)
    startup_ms = (time.perf_counter() - t0) * 1e3
    del pipe
    up = Uplink(unit, path)
    runner = threading.Thread(target=up.run, name="bench-uplink", daemon=True)
    t0 = time.perf_counter()
    runner.start()
    want = min(deliver, size)
    deadline = time.monotonic() + 120
    while up.stats.delivered < want and time.monotonic() < deadline:
        time.sleep(0.01)
    rate = up.stats.delivered / (time.perf_counter() - t0)
    up.stop(0)
    runner.join(10)
    return {"commit_ms": statistics.median(commit), "pick_ms": statistics.median(pick),
            "startup_ms": startup_ms, "delivery_per_s": rate}


# --- the whole bench -------------------------------------------------------------------------


def run(cfg: Config, video: Path, nmea: Path, broker: tuple[str, int] | None = None,
        baseline_frames: int = 200, ceiling_s: float = 5.0, pace_s: float = 8.0,
        minutes: float = 60.0, backlog_sizes: tuple[int, int] = (100, 100_000)
        ) -> dict[str, Any]:
    """Every figure, as a flat dict (the ``--json`` file)."""
    for p in (video, nmea):
        if not p.is_file():
            raise BenchError(f"{p}: no such file (the drive to measure on)")
    fixes, _stats = read_nmea_stats(nmea)
    if not fixes:
        raise BenchError(f"{nmea}: no timed fixes")
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    cap.release()
    if not ok:
        raise BenchError(f"{video}: no frame can be read")
    # sampling off for the throughput figures: every frame analysed, as the ceiling is
    every_frame = cfg.model_copy(update={"sampling": SamplingConfig(stationary_speed_mps=0.0,
                                                                    every_m=0.0)})
    out: dict[str, Any] = {"model": str(cfg.detector.model_path()),
                           "threads": cfg.detector.thread_count(), "video": str(video),
                           "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="patrol-bench-") as tmp:
        work = Path(tmp)
        with nullcontext(broker) if broker else private_broker(work) as b:
            mq = MqttConfig(host=b[0], port=b[1], client_id="bench-unit")
            with_broker = every_frame.model_copy(update={"mqtt": mq})
            out.update(ceiling(cfg, first, ceiling_s))
            # the thread count chosen by measurement: the same bare loop at 1, 2 and 4
            out["ceiling_fps_by_threads"] = {
                n: ceiling(cfg, first, ceiling_s / 2, threads=n)["ceiling_fps"]
                for n in (1, 2, 4)}
            out.update(baseline(cfg, video, b, work, baseline_frames))
            p = pipeline(with_broker, video, nmea, work)
            if minutes > 0:
                out.update(long_drive(every_frame, video, minutes, b, work))
            out["backlog"] = {n: backlog(cfg, n, b, work) for n in backlog_sizes}
        out.update({"pipeline_fps": p.fps, "pipeline_frames": p.frames,
                    "findings": p.findings, "delivered": p.delivered, "stages": p.stages})
        lat = p.stages.get("capture_to_commit", {})
        out["commit_latency_ms_median"] = lat.get("median_ms")
        out["commit_latency_ms_p95"] = lat.get("p95_ms")
        pub = p.stages.get("capture_to_puback", {})
        out["puback_latency_ms_median"] = pub.get("median_ms")
        out["puback_latency_ms_p95"] = pub.get("p95_ms")
        # moving: the drive's first stretch; parked: the same frames, the vehicle still
        # (its default sampling: analysis pauses after sampling.stationary_after_s)
        warm = cfg.sampling.stationary_after_s + 1.0
        frames = camera_frames(video, work / "frames")
        moving = cpu_at_pace(cfg, frames, fixes, work, "moving", warm, pace_s)
        still = cpu_at_pace(cfg, frames, _still(fixes), work, "still", warm, pace_s)
        out.update({"moving_cpu": moving, "stationary_cpu": still,
                    "stationary_cpu_ratio": still / moving if moving > 0 else None})
        out["peak_rss_mb"] = agent_peak_rss_mb(cfg, video, nmea, work)
    out["bench_rss_mb"], out["bench_peak_rss_mb"] = _rss_mb()
    out["pipeline_over_ceiling"] = out["pipeline_fps"] / out["ceiling_fps"]
    out["pipeline_over_baseline"] = out["pipeline_fps"] / out["baseline_fps"]
    if out["commit_latency_ms_p95"] is not None:
        out["commit_p95_invokes"] = out["commit_latency_ms_p95"] / out["invoke_ms_median"]
    return out


def table(r: dict[str, Any]) -> str:
    """The figures as a Markdown table, each beside its aim where it has one."""
    def f(v: object, fmt: str = ".1f") -> str:
        return "n/a" if v is None else format(v, fmt)

    def aim(ok: bool | None) -> str:
        return "" if ok is None else ("met" if ok else "NOT met")

    t = TARGETS
    rows = [
        ("bare invoke (ceiling)", f"{f(r['ceiling_fps'])} fps", f"invoke median "
         f"{f(r['invoke_ms_median'], '.2f')} ms", ""),
        ("pipeline, decode to PUBACK", f"{f(r['pipeline_fps'])} fps",
         f"{f(r['pipeline_over_ceiling'], '.2f')} of the ceiling",
         aim(r["pipeline_over_ceiling"] >= t["of_ceiling"])),
        ("single-threaded baseline", f"{f(r['baseline_fps'])} fps",
         f"pipeline {f(r['pipeline_over_baseline'], '.2f')}x it",
         aim(r["pipeline_over_baseline"] >= t["over_baseline"])),
        ("capture to commit", f"median {f(r['commit_latency_ms_median'])} ms, "
         f"p95 {f(r['commit_latency_ms_p95'])} ms",
         f"p95 = {f(r.get('commit_p95_invokes'), '.1f')} invokes",
         aim(None if r.get("commit_p95_invokes") is None
             else r["commit_p95_invokes"] <= t["commit_p95_invokes"])),
        ("capture to PUBACK", f"median {f(r['puback_latency_ms_median'])} ms, "
         f"p95 {f(r['puback_latency_ms_p95'])} ms", "", ""),
        ("peak RSS of the agent (replaying the drive)", f"{f(r['peak_rss_mb'])} MB",
         f"this bench process: {f(r['bench_peak_rss_mb'])} MB",
         aim(r["peak_rss_mb"] <= t["peak_rss_mb"])),
        ("CPU standing still", f"{f(r['stationary_cpu'], '.3f')} of a core",
         f"{f(r['stationary_cpu_ratio'], '.2f')} of moving ({f(r['moving_cpu'], '.3f')})",
         aim(None if r["stationary_cpu_ratio"] is None
             else r["stationary_cpu_ratio"] <= t["stationary_cpu_ratio"])),
    ]
    lines = ["| measured | figure | ratio | aim |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    lines += ["", "| stage | n | median ms | p95 ms |", "| --- | --- | --- | --- |"]
    for name, s in r["stages"].items():
        lines.append(f"| {name} | {s['n']} | {s['median_ms']:.2f} | {s['p95_ms']:.2f} |")
    if "long_frames" in r:
        lines += ["", f"As work grows: a {r['long_minutes']:g}-minute drive "
                  f"({r['long_frames']} frames, {r['long_findings']} findings, "
                  f"{r['long_delivered']} delivered):",
                  "", "| | first minute | last minute |", "| --- | --- | --- |",
                  f"| time per frame | {r['long_frame_ms_first_min']:.2f} ms | "
                  f"{r['long_frame_ms_last_min']:.2f} ms |",
                  f"| RSS | {r['long_rss_mb_first_min']:.0f} MB | "
                  f"{r['long_rss_mb_last_min']:.0f} MB |"]
    sizes = list(r["backlog"])
    lines += ["", "An outbox backlog (undelivered findings):", "",
              "| | " + " | ".join(f"{int(n):,} waiting" for n in sizes) + " |",
              "| --- |" + " --- |" * len(sizes)]
    for key, label, fmt in (("commit_ms", "commit one finding", "{:.2f} ms"),
                            ("pick_ms", "pick the next batch", "{:.2f} ms"),
                            ("startup_ms", "start a unit on it", "{:.0f} ms"),
                            ("delivery_per_s", "delivery", "{:.0f} findings/s")):
        lines.append(f"| {label} | " + " | ".join(fmt.format(r["backlog"][n][key])
                                                  for n in sizes) + " |")
    lines.append("")
    lines.append("Bare invoke by interpreter threads: " + ", ".join(
        f"{n}: {fps:.0f} fps" for n, fps in r["ceiling_fps_by_threads"].items()) + ".")
    lines.append(f"{r['pipeline_frames']} frames, {r['findings']} findings "
                 f"({r['delivered']} delivered), model {Path(r['model']).name}, "
                 f"{r['threads']} interpreter threads, {r['cpus']} CPUs")
    return "\n".join(lines)


def default_drive() -> tuple[Path, Path]:
    base = resolve_shipped(SAMPLE)
    return base / "video.mp4", base / "track.nmea"

