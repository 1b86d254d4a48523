"""``patrol-agent`` commands: run, check-config, events.

Exit codes: 0 success, 1 a runtime fault (store, broker), 2 bad config or usage.
Expected faults print one line naming the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from agent.export import from_record, write_csv, write_geojson, write_jsonl
from agent.logs import setup_logging
from agent.store import Store, StoredEvent, StoreError
from agent.uplink import UplinkError, build_tls_context

log = logging.getLogger("cli")


def _fail(msg: str, code: int = 1) -> int:
    print(f"patrol-agent: {msg}", file=sys.stderr)
    return code


def _config_error(e: ConfigError) -> int:
    print(f"patrol-agent: invalid config {e.source}:", file=sys.stderr)
    for p in e.problems:
        print(f"  {p}", file=sys.stderr)
    return 2


# --- run ----------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    # The daemon's imports (TFLite, OpenCV, paho) are not needed by the other commands.
    from agent.desired import load_in_force
    from agent.detector import DetectorError
    from agent.pipeline import Ending, Feeds, Pipeline
    from agent.sources import SourceError

    setup_logging("INFO")
    # The file, with what the office last gave this unit over it (in force before the
    # broker is reached: an offline start works with the last accepted config).
    cfg, file_data, docs = load_in_force(Path(args.config))
    setup_logging(cfg.logging.level)
    try:
        pipe = Pipeline(cfg, store_path=args.db, file_data=file_data, docs=docs,
                        config_path=Path(args.config))
    except (StoreError, UplinkError) as e:
        return _fail(str(e))
    except (DetectorError, SourceError) as e:
        # The camera or the model cannot be used: one line, and what is already stored
        # is still delivered, so a unit with a bad model does not sit on its findings.
        print(f"patrol-agent: cannot start the camera and detector: {e}", file=sys.stderr)
        pending = _pending(cfg, args.db)
        if cfg.mqtt is None or not pending:
            return 2
        print(f"patrol-agent: delivering the {pending} stored findings first (the camera "
              "stays off), then exiting", file=sys.stderr)
        pipe = Pipeline(cfg, Feeds(camera=None), store_path=args.db)
        pipe.install_signal_handlers()
        pipe.run(until_drained=True)
        return 2
    if args.until_drained and pipe.source is not None and pipe.source.live:
        log.warning("--until-drained with a live camera: it never runs out of frames, so "
                    "the agent runs until it is stopped")
    pipe.install_signal_handlers()
    report = pipe.run(until_drained=args.until_drained)
    if report.ending is Ending.RESTART:
        return 0  # the service manager (Restart=always) starts it again
    if report.ending is Ending.FAILED:
        return _fail("stopped because " + "; ".join(report.failed))
    if report.lost:
        return _fail(f"{report.lost} findings were lost: the outbox could not be written "
                     "(see the log)")
    if args.until_drained and report.pending:
        why = ("there is no [mqtt] section to deliver them to" if cfg.mqtt is None
               else "the broker did not take them, or they cannot be read back (see the log)")
        return _fail(f"{report.pending} findings are still pending: {why}")
    return 0


def _pending(cfg: Config, db: str | None) -> int:
    path = Path(db) if db else cfg.store.path
    if not path.exists():
        return 0
    with Store(path) as store:
        return store.counts()["pending"]


# --- detect -------------------------------------------------------------------

def cmd_detect(args: argparse.Namespace) -> int:
    """Camera + model check for a technician: what the detector sees, frame by frame."""
    import cv2

    from agent.detector import DetectorError
    from agent.pipeline import build_detector
    from agent.sources import SourceError, open_source

    cfg = load_config(args.config) if args.config else Config()
    try:
        det = build_detector(cfg, model=Path(args.model) if args.model else None,
                             # A model tried alone: its own classes, not the config's.
                             every_class=args.all_classes or bool(args.model
                                                                  and not args.config),
                             labels=Path(args.labels) if args.labels else None)
        # As fast as it goes: a technician checking a recording wants every frame now.
        src = open_source(cfg.camera.kind, args.source or cfg.camera.source,
                          width=cfg.camera.width, height=cfg.camera.height,
                          fps=cfg.camera.fps, paced=False)
    except (DetectorError, SourceError) as e:
        return _fail(str(e), 2)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    n = found = 0
    try:
        while (args.frames is None or n < args.frames) and (frame := src.read()) is not None:
            dets = det.detect(frame.image)
            n += 1
            found += len(dets)
            if args.json:
                print(json.dumps(_detections_json(frame, dets, src)), flush=True)
            for dt in [] if args.json else dets:
                print(f"frame {frame.index:5d} {frame.captured_utc:%H:%M:%S.%f}"[:-3]
                      + f"  {dt.label:<13} {dt.score:.2f}  "
                      + " ".join(f"{v:.3f}" for v in dt.bbox))
            if out and dets:
                img = frame.image.copy()
                h, w = img.shape[:2]
                for dt in dets:
                    x1, y1, x2, y2 = (int(dt.bbox[0] * w), int(dt.bbox[1] * h),
                                      int(dt.bbox[2] * w), int(dt.bbox[3] * h))
                    cv2.rectangle(img, (x1, y1), (x2, y2), (0, 0, 255), 2)
                    cv2.putText(img, f"{dt.label} {dt.score:.2f}", (x1, max(12, y1 - 4)),
                                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 255), 1)
                cv2.imwrite(str(out / f"frame{frame.index:05d}.jpg"), img)
    finally:
        src.close()
    t = det.timings
    print(f"{n} frames, {found} detections; last frame: preprocess {t.preprocess_ms:.1f} ms, "
          f"invoke {t.invoke_ms:.1f} ms, postprocess {t.postprocess_ms:.1f} ms", file=sys.stderr)
    return 0


def _detections_json(frame: Any, dets: list[Any], src: Any) -> dict[str, Any]:
    """One frame for ``detect --json``: each detection's label, score and pixel box."""
    h, w = frame.image.shape[:2]
    image = src.image_path(frame.index) if hasattr(src, "image_path") else None
    return {"frame": frame.index, "image": str(image) if image else None,
            "width": w, "height": h,
            "detections": [{"label": d.label, "score": round(d.score, 4),
                            "box": [round(d.bbox[0] * w), round(d.bbox[1] * h),
                                    round(d.bbox[2] * w), round(d.bbox[3] * h)]}
                           for d in dets]}


# --- replay and evaluate --------------------------------------------------------

def _host_port(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (the last colon splits, so a bare IPv6 host works), or None."""
    host, _, port = value.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _replay_config(args: argparse.Namespace) -> Config:
    from agent.config import parse_config

    data: dict = {}
    if args.config:
        cfg = load_config(args.config)
        data = cfg.model_dump(mode="json")
        if cfg.mqtt and cfg.mqtt.password:
            data["mqtt"]["password"] = cfg.mqtt.password.get_secret_value()
    if args.db:
        data.setdefault("store", {})["path"] = args.db
    elif not args.config:
        data.setdefault("store", {})["path"] = "replay.db"
    if args.broker:
        broker = _host_port(args.broker)
        if broker is None:
            raise ConfigError("--broker", [f"--broker = {args.broker!r}: expected HOST:PORT"])
        mq = data.get("mqtt") or {}
        mq.update({"host": broker[0], "port": broker[1]})
        data["mqtt"] = mq
    return parse_config(data, source=args.config or "replay options")


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from agent.bench import BenchError, default_drive, run, table
    from agent.config import parse_config
    from agent.detector import DetectorError

    setup_logging("WARNING")
    data: dict = {}
    if args.config:
        data = load_config(args.config).model_dump(mode="json")
    data.pop("mqtt", None)  # the bench's own broker, or --broker
    det = data.setdefault("detector", {})
    if args.model:
        det["model"] = args.model
    if args.threads:
        det["threads"] = args.threads
    cfg = parse_config(data, source=args.config or "bench options")
    video, nmea = default_drive()
    video = Path(args.video) if args.video else video
    nmea = Path(args.nmea) if args.nmea else nmea
    broker = _host_port(args.broker) if args.broker else None
    if args.broker and broker is None:
        return _fail(f"--broker {args.broker!r}: expected HOST:PORT", 2)
    print(f"benchmarking {cfg.detector.model_path().name} on {video} "
          f"({cfg.detector.thread_count()} threads); a few minutes", file=sys.stderr)
    try:
        r = run(cfg, video, nmea, broker, baseline_frames=args.baseline_frames,
                minutes=args.minutes, backlog_sizes=(100, args.backlog))
    except (BenchError, DetectorError) as e:
        return _fail(str(e), 2)
    print(table(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n",
                                   encoding="utf-8")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from datetime import datetime

    from agent.detector import DetectorError
    from agent.gpsfake import GpsfakeError
    from agent.pipeline import replay
    from agent.sources import SourceError

    cfg = _replay_config(args)
    setup_logging(cfg.logging.level if not args.quiet else "WARNING")
    start = None
    if args.start:
        try:
            start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
        except ValueError:
            return _fail(f"--start {args.start!r}: not an ISO 8601 time", 2)
    for p in (args.video, args.nmea):
        if not Path(p).is_file():
            return _fail(f"{p}: no such file", 2)
    gpsd = _host_port(args.gpsd) if args.gpsd else None
    if args.gpsd and gpsd is None:
        return _fail(f"--gpsd {args.gpsd!r}: expected HOST:PORT", 2)
    try:
        s = replay(cfg, Path(args.video), Path(args.nmea), speed=args.speed, start_utc=start,
                   store_path=cfg.store.path, gpsd=gpsd)
    except (DetectorError, SourceError, GpsfakeError) as e:
        return _fail(str(e), 2)
    except (StoreError, UplinkError) as e:
        return _fail(str(e))
    except ValueError as e:  # the log has no time to start the video at
        return _fail(str(e), 2)
    print(f"replayed {s.frames} frames ({s.seconds:.0f} s of driving) in {s.wall_s:.1f} s; "
          f"GPS {s.gps_mode}: {s.fixes} fixes, {s.frames_without_fix} frames without a "
          f"usable fix")
    if s.analysed < s.frames:
        print(f"{s.analysed} frames analysed; not analysed: {s.not_analysed_stationary} while "
              f"the vehicle stood, {s.not_analysed_distance} before it had gone "
              f"sampling.every_m ({cfg.sampling.every_m:g} m)")
    if s.gps_fix_losses or s.gpsd_reconnects:
        print(f"GPS fix lost {s.gps_fix_losses} times, gpsd reconnected {s.gpsd_reconnects} "
              "times during the drive")
    print(f"{s.detections} detections -> {s.findings} findings stored in {cfg.store.path} "
          f"({s.repeats} repeats of earlier findings, {s.dropped_tracks} tracks too short, "
          f"weak, far or unconfirmed, {s.broken_frames} broken frames, {s.skipped_frames} "
          "frames skipped)")
    if s.delivered is not None and cfg.mqtt is not None:
        print(f"{s.delivered} findings delivered to {cfg.mqtt.host}:{cfg.mqtt.effective_port}")
    for n in s.notes:
        print(n)
    if s.failed:
        return _fail("the replay stopped early: " + "; ".join(s.failed))
    if s.lost:
        return _fail(f"{s.lost} findings could not be stored and are lost: the outbox "
                     f"{cfg.store.path} was not writable (see the log)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from agent.evaluate import load_truth, score

    try:
        truth = load_truth(Path(args.truth))
    except ValueError as e:
        return _fail(str(e), 2)
    if not Path(args.db).exists():
        return _fail(f"no store at {args.db}", 2)
    with Store(args.db) as store:
        evs = [(s.event.label, s.event.position.lat if s.event.position else None,
                s.event.position.lon if s.event.position else None)
               for s in store.iter_events()]
    sc = score(truth, evs, match_radius_m=args.radius)
    if args.json:
        out = sc.as_json()
        print(json.dumps({k: out[k] for k in ("recall", "precision", "events_per_object",
                                               "position_error_m_p50",
                                               "position_error_m_p95")}
                         | {"objects": sc.objects, "events": sc.events, "missed": sc.missed}))
        return 0
    print(f"objects {sc.objects}, findings {sc.events}, matched {sc.matched} "
          f"(within {args.radius:.0f} m, same class)")
    print(f"recall {sc.recall:.3f}  precision {sc.precision:.3f}  "
          f"events per object {sc.events_per_object:.2f}")
    if sc.position_error_m_p50 is not None:
        print(f"position error: median {sc.position_error_m_p50:.1f} m, "
              f"95th percentile {sc.position_error_m_p95:.1f} m")
    if sc.missed:
        print("missed: " + ", ".join(sc.missed))
    return 0


# --- check-config -------------------------------------------------------------

def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    if cfg.mqtt and cfg.mqtt.tls:
        try:  # a wrong key passphrase or a bad PEM is found here, not in the vehicle
            build_tls_context(cfg.mqtt.tls)
        except UplinkError as e:
            raise ConfigError(str(args.file), [str(e)]) from None
    print(json.dumps(cfg.masked(), indent=2))
    print(f"config {args.file} is valid: version {cfg.version}, hash {cfg.content_hash()}",
          file=sys.stderr)
    return 0


# --- calibrate ----------------------------------------------------------------

def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure the camera's mounting from a board in front of the vehicle."""
    import threading

    import cv2

    from agent.calibrate import (
        MAX_RMS_PX,
        CalibrationError,
        describe,
        draw_grid,
        find_board,
        fit,
        write_config,
    )
    from agent.simulate.board import Board
    from agent.sources import SourceError, open_source

    cfg = load_config(args.config) if Path(args.config).exists() or args.write else Config()
    try:
        cols, rows = (int(v) for v in args.board.lower().split("x"))
    except ValueError:
        return _fail(f"--board {args.board!r}: expected COLSxROWS of inner corners, e.g. 9x6",
                     2)
    board = Board(cols, rows, args.square, args.lowest_corner)
    cam = cfg.camera
    try:
        src = open_source(cam.kind, args.source or cam.source, width=cam.width,
                          height=cam.height, fps=cam.fps, paced=False,
                          stop=threading.Event())
    except SourceError as e:
        return _fail(str(e), 2)
    views, last = [], None
    try:
        for _ in range(args.max_frames):
            frame = src.read()
            if frame is None:
                break
            corners = find_board(frame.image, board)
            if corners is not None:
                views.append(corners)
                last = frame.image
                if len(views) >= args.frames:
                    break
    finally:
        src.close()
    if last is None:
        return _fail(f"no {cols}x{rows} board in {args.max_frames} frames from {src.name}: "
                     "is it in the picture, upright, and lit without glare?")
    h, w = last.shape[:2]
    try:
        m = fit(views, board, args.distance, args.mount_height, w, h, args.offset,
                start=(cam.hfov_deg, cam.tilt_deg, cam.roll_deg, cam.heading_offset_deg))
    except CalibrationError as e:
        return _fail(str(e))
    print(describe(m))
    print("[camera]\n" + "\n".join(f"{k} = {v}" for k, v in m.config_values().items()))
    if args.draw:
        cv2.imwrite(args.draw, draw_grid(last, m))
        print(f"the road grid this mounting implies is drawn on {args.draw}: its lines should "
              "lie along the road's markings", file=sys.stderr)
    if m.rms_px > MAX_RMS_PX:
        return _fail(f"the board fits no camera well ({m.rms_px:.1f} px): was it upright, "
                     f"centred, {args.distance} m away, and the board as given? Not written")
    if args.write:
        write_config(Path(args.config), m)
        print(f"written to [camera] in {args.config}", file=sys.stderr)
    return 0


# --- status -------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    """The running agent's last telemetry report, for a technician at the unit."""
    from datetime import UTC, datetime

    from agent.records import parse_iso_utc

    cfg = load_config(args.config) if Path(args.config).exists() else Config()
    path = cfg.store.path.parent / "telemetry.json"
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return _fail(f"no report at {path}: the agent has not run here yet, or not for "
                     f"{min(5, cfg.health.telemetry_interval_s):.0f} s "
                     "(systemctl status patrol-agent)")
    if args.json:
        print(json.dumps(r, indent=2))
    age = (datetime.now(UTC) - parse_iso_utc(r["at"])).total_seconds()
    office = ", ".join(f"{s} {v}" for s, v in (r.get("config_in_force") or {}).items())
    print(f"unit {r['device']} (agent {r['agent_version']}, config {r['config_version']}"
          f"{f'; from the office: {office}' if office else ''}), "
          f"report from {age:.0f} s ago, up {r['uptime_s']:.0f} s")
    lines = _status_lines(r)
    if not args.json:
        for part, text in lines:
            print(f"{part:<9} {text}")
    if age > 3 * cfg.health.telemetry_interval_s + 10:
        return _fail(f"that report is {age:.0f} s old: is the agent running? "
                     "(systemctl status patrol-agent)")
    return 0


def _status_lines(r: dict) -> list[tuple[str, str]]:
    out = []
    if cam := r.get("camera"):
        det = r.get("detector", {})
        out.append(("camera", f"{cam['source']}: {det.get('frames_per_s', 0):.1f} frames/s "
                    f"analysed; {cam['frames_captured']} captured, {cam['frames_dropped']} "
                    f"dropped, {cam['frames_broken']} broken"
                    + ("" if cam.get("running") else "; not running")))
        if "invoke_ms_p50" in det:
            out.append(("detector", f"invoke {det['invoke_ms_p50']} ms (median), "
                        f"{det['invoke_ms_p95']} ms (95th percentile)"))
    if f := r.get("findings"):
        out.append(("findings", f"{f['made']} made, {f['repeats']} repeats of earlier ones"))
    o = r["outbox"]
    oldest = (f", oldest {o['oldest_pending_age_s']:.0f} s" if "oldest_pending_age_s" in o
              else "")
    out.append(("outbox", f"{o['pending']} to deliver ({o['pending_mb']} MB{oldest}), "
                f"{o['delivered']} delivered; {o['held']} held, {o['lost']} lost, "
                f"{o['evicted']} evicted"))
    if g := r.get("gps"):
        fix = f"{g['mode']}D fix" if g.get("fix") else ("no fix" if g["connected"]
                                                         else "gpsd unreachable")
        sats = (f", {g['satellites_used']} of {g.get('satellites_seen', '?')} satellites"
                if "satellites_used" in g else "")
        clock = (f", clock off GPS by {g['clock_offset_s']:+.2f} s"
                 if "clock_offset_s" in g else "")
        out.append(("gps", f"{fix}{sats}{clock} (time from {g['time_source']})"))
    if b := r.get("broker"):
        out.append(("broker", ("connected" if b["connected"] else
                               f"not connected ({b.get('last_error', 'connecting')})")
                    + (f", PUBACK in {b['puback_ms']} ms" if "puback_ms" in b else "")
                    + f", {b['reconnects']} connections"))
    if link := r.get("link"):
        used = [f"{link['used_mb_today']} of {link['budget_mb_per_day']} MB today"
                if "budget_mb_per_day" in link else f"{link['used_mb_today']} MB today",
                f"{link['used_mb_month']} of {link['budget_mb_per_month']} MB this month"
                if "budget_mb_per_month" in link else None]
        via = (f" via {link['interface']}{' (cheap)' if link.get('cheap') else ''}"
               if link.get("interface") else "")
        out.append(("link", ", ".join(u for u in used if u) + via
                    + f"; pictures {link['images']}"))
        for why in link.get("holding", []):
            out.append(("HELD", why))
    m = r.get("machine", {})
    bits = [f"disk {m['disk_free_mb']:.0f} MB free" if "disk_free_mb" in m else None,
            f"RSS {m['rss_mb']:.0f} MB" if "rss_mb" in m else None,
            f"load {m['load_1m']}" if "load_1m" in m else None,
            f"CPU {m['cpu_temperature_c']} C" if "cpu_temperature_c" in m else None]
    if "throttling" in m:
        now = [k for k, v in m["throttling"].items() if v and not k.endswith("since_boot")]
        bits.append("throttled: " + ", ".join(now) if now else "not throttled")
    out.append(("machine", ", ".join(b for b in bits if b)))
    if r.get("stalled"):
        out.append(("STALLED", ", ".join(r["stalled"])))
    return out


# --- doctor -------------------------------------------------------------------

def cmd_doctor(args: argparse.Namespace) -> int:
    """Check each part of the unit in turn; 1 if any is wrong."""
    from agent.doctor import Verdict, run_checks

    cfg = load_config(args.config)
    print(f"patrol-agent {__version__} doctor: unit {cfg.device.id} ({args.config})")
    failed = 0
    for check in run_checks(cfg):
        print(check.line(), flush=True)
        failed += check.verdict is Verdict.FAIL
    print("all is well" if not failed else f"{failed} part(s) need attention")
    return 1 if failed else 0


# --- events -------------------------------------------------------------------

def _store_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.config:
        return load_config(args.config).store.path
    if DEFAULT_CONFIG_PATH.exists():
        return load_config(DEFAULT_CONFIG_PATH).store.path
    return Config().store.path


def _open_store(args: argparse.Namespace, must_exist: bool = True) -> Store:
    path = _store_path(args)
    if must_exist and not path.exists():
        raise StoreError(f"no store at {path} (give --db PATH or --config FILE)")
    return Store(path)


def _line(s: StoredEvent) -> str:
    ev = s.event
    where = (f"{ev.position.lat:.6f},{ev.position.lon:.6f}" if ev.position else "no-fix")
    return (f"{ev.id}  {ev.captured_utc:%Y-%m-%d %H:%M:%S}  {ev.label:<14} {ev.score:5.2f}  "
            f"{where:<22} {s.state:<9} {s.attempts}")


def cmd_events_list(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        rows = list(store.iter_events(state=args.state, label=args.label, limit=args.limit,
                                      newest_first=True))
        counts = store.counts()
    print(f"{'id':<36}  {'captured (UTC)':<19}  {'label':<14} {'score':>5}  "
          f"{'position':<22} {'state':<9} attempts")
    for s in reversed(rows):
        print(_line(s))
    print(f"{len(rows)} shown; {counts['pending']} pending, {counts['delivered']} delivered")
    return 0


def cmd_events_show(args: argparse.Namespace) -> int:
    from agent.export import to_record

    with _open_store(args) as store:
        matches = store.find(args.id)
    if not matches:
        return _fail(f"no event with id {args.id!r}")
    if len(matches) > 1:
        return _fail(f"id {args.id!r} is ambiguous: " + ", ".join(m.event.id for m in matches))
    s = matches[0]
    print(json.dumps(to_record(s), indent=2))
    if args.image:
        if s.evicted_utc is not None:
            return _fail(f"event {s.event.id}'s pictures were evicted on "
                         f"{s.evicted_utc:%Y-%m-%d %H:%M}Z to keep the outbox within "
                         "store.quota_mb")
        if not s.event.image_jpeg:  # its picture is being made, or could not be
            why = s.event.attributes.get("redaction", {})
            return _fail(f"event {s.event.id} has no picture" + (
                f": {why['failed']}" if isinstance(why, dict) and why.get("failed")
                else " yet: the privacy step is still making it"))
        Path(args.image).write_bytes(s.event.image_jpeg)
        print(f"image written to {args.image} ({len(s.event.image_jpeg)} bytes)", file=sys.stderr)
    if args.crop:
        crop = s.event.crop_jpeg
        if crop is None:  # stored before crops existed, or its crop failed to encode
            return _fail(f"event {s.event.id} has no crop; only its full image (--image)")
        Path(args.crop).write_bytes(crop)
        print(f"crop written to {args.crop} ({len(crop)} bytes)", file=sys.stderr)
    return 0


def cmd_events_export(args: argparse.Namespace) -> int:
    with _open_store(args) as store:
        events = store.iter_events(state=args.state, label=args.label)
        out = open(args.out, "w", newline="") if args.out else sys.stdout  # noqa: SIM115
        try:
            if args.format == "jsonl":
                n = write_jsonl(events, out, args.with_images)
            elif args.format == "geojson":
                n = write_geojson(events, out)
            else:
                n = write_csv(events, out)
        finally:
            if out is not sys.stdout:
                out.close()
    print(f"exported {n} events as {args.format}" + (f" to {args.out}" if args.out else ""),
          file=sys.stderr)
    return 0


def cmd_events_import(args: argparse.Namespace) -> int:
    try:
        lines = Path(args.file).read_bytes().decode("utf-8").splitlines()
    except OSError as e:
        return _fail(f"cannot read {args.file}: {e.strerror}")
    except UnicodeDecodeError as e:
        return _fail(f"{args.file} is not a JSON Lines export from `events export` (not UTF-8 "
                     f"text: byte {e.start} is {e.object[e.start]:#04x}); nothing imported", 2)
    events, bad = [], 0
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            events.append(from_record(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as e:
            bad += 1
            print(f"patrol-agent: {args.file}:{no}: skipped: {e}", file=sys.stderr)
    with _open_store(args, must_exist=False) as store:
        new = [e for e in events if store.get(e.id) is None]
        store.add_many(new)
    print(f"imported {len(new)} events ({len(events) - len(new)} already present, {bad} bad)",
          file=sys.stderr)
    return 1 if bad else 0


# --- wiring -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patrol-agent",
                                description="Field collection agent for city patrol vehicles.")
    p.add_argument("--version", action="version", version=f"patrol-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the agent (the daemon)")
    r.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file")
    r.add_argument("--db", help="outbox SQLite file (overrides store.path)")
    r.add_argument("--until-drained", action="store_true",
                   help="exit once every stored event is delivered")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("detect", help="run the detector on an image, image folder, video or "
                       "camera: does this model work?")
    d.add_argument("source", nargs="?", help="an image, a folder of images, a video, a camera "
                   "(instead of the config's camera.source)")
    d.add_argument("--config", help="TOML config (camera and detector sections)")
    d.add_argument("--model", help="a .tflite to use instead of detector.model")
    d.add_argument("--labels", help="its label file, instead of detector.labels (any form: "
                   "one per line, with ids, .pbtxt)")
    d.add_argument("--frames", type=int, help="stop after this many frames")
    d.add_argument("--out", "--draw", dest="out",
                   help="write frames with detections drawn into this folder")
    d.add_argument("--json", action="store_true",
                   help="one JSON line per frame: each detection's label, score and pixel box")
    d.add_argument("--all-classes", action="store_true",
                   help="show every class, not only detector.allow")
    d.set_defaults(func=cmd_detect)

    rp = sub.add_parser("replay", help="run the whole pipeline on a recorded drive")
    rp.add_argument("--video", required=True, help="the drive's video file")
    rp.add_argument("--nmea", required=True, help="the receiver's NMEA log of the drive")
    rp.add_argument("--config", help="TOML config (default: built-in defaults)")
    rp.add_argument("--speed", choices=["1", "max"], default="max",
                    help="1: real time, GPS through gpsd/gpsfake; max: as fast as possible")
    rp.add_argument("--gpsd", help="HOST:PORT of a gpsd already serving the drive's log "
                    "(instead of starting gpsfake; implies --speed 1)")
    rp.add_argument("--db", help="outbox to write (default: store.path, or ./replay.db)")
    rp.add_argument("--broker", help="HOST:PORT of an MQTT broker to deliver to")
    rp.add_argument("--start", help="UTC time of the first video frame (default: the log's "
                    "first time)")
    rp.add_argument("--quiet", action="store_true", help="only warnings in the log")
    rp.set_defaults(func=cmd_replay)

    be = sub.add_parser("bench", help="measure the whole pipeline against the bare "
                        "interpreter and a single-threaded loop, on a recorded drive")
    be.add_argument("--config", help="TOML config (detector, camera, sampling sections)")
    be.add_argument("--model", help="a .tflite instead of detector.model")
    be.add_argument("--threads", type=int, help="interpreter threads instead of "
                    "detector.threads")
    be.add_argument("--video", help="the drive's video (default: the bundled sample drive)")
    be.add_argument("--nmea", help="its NMEA log (default: the sample drive's)")
    be.add_argument("--broker", help="HOST:PORT of a broker (default: a private mosquitto "
                    "on a free loopback port)")
    be.add_argument("--baseline-frames", type=int, default=200,
                    help="frames the single-threaded baseline runs (default 200)")
    be.add_argument("--minutes", type=float, default=60.0,
                    help="length of the long drive whose first and last minutes are "
                    "compared (default 60; 0: skip it)")
    be.add_argument("--backlog", type=int, default=100_000,
                    help="the large outbox backlog compared with one of 100 (default 100000)")
    be.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    be.set_defaults(func=cmd_bench)

    ev = sub.add_parser("evaluate", help="score stored findings against a drive's ground truth")
    ev.add_argument("--truth", required=True, help="truth.json of a generated drive")
    ev.add_argument("--db", required=True, help="the outbox the replay wrote")
    ev.add_argument("--radius", type=float, default=15.0, help="match radius in metres")
    ev.add_argument("--json", action="store_true", help="one JSON object")
    ev.set_defaults(func=cmd_evaluate)

    from agent.simulate.drive import add_parser as add_simulate_drive

    add_simulate_drive(sub)

    from agent.fleet import add_parser as add_fleet

    add_fleet(sub)

    ca = sub.add_parser("calibrate", help="measure the camera's mounting from a printed board "
                        "standing on the road in front of the vehicle")
    ca.add_argument("source", nargs="?", help="camera.source to use instead of the config's")
    ca.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file")
    ca.add_argument("--distance", type=float, required=True, metavar="M",
                    help="from the point on the road under the camera to the board")
    ca.add_argument("--mount-height", type=float, required=True, metavar="M",
                    help="the camera's height above the road (a tape)")
    ca.add_argument("--board", default="9x6", help="inner corners across x up (default 9x6)")
    ca.add_argument("--square", type=float, default=0.15, metavar="M",
                    help="a square's side (default 0.15)")
    ca.add_argument("--lowest-corner", type=float, default=0.6, metavar="M",
                    help="height of the lowest inner corners above the road (default 0.6)")
    ca.add_argument("--offset", type=float, default=0.0, metavar="M",
                    help="the board's centre right of the vehicle's axis (default 0)")
    ca.add_argument("--frames", type=int, default=10, help="frames with the board to use")
    ca.add_argument("--max-frames", type=int, default=300, help="frames to look through")
    ca.add_argument("--draw", metavar="FILE", help="write a frame with the road grid drawn")
    ca.add_argument("--write", action="store_true", help="write the values to [camera]")
    ca.set_defaults(func=cmd_calibrate)

    st = sub.add_parser("status", help="the running agent's last report: frames, detector, "
                        "outbox, GPS, broker, machine")
    st.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file")
    st.add_argument("--json", action="store_true", help="the report as it is published")
    st.set_defaults(func=cmd_status)

    dr = sub.add_parser("doctor", help="check camera, gpsd and fix, model, broker, clock, "
                        "disk and the service, and say what is wrong")
    dr.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="TOML config file")
    dr.set_defaults(func=cmd_doctor)

    c = sub.add_parser("check-config", help="validate a config and print it, secrets masked")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    e = sub.add_parser("events", help="look at the local outbox")
    src = argparse.ArgumentParser(add_help=False)
    src.add_argument("--config", help="take the store path from this config")
    src.add_argument("--db", help="outbox SQLite file")
    esub = e.add_subparsers(dest="events_command", required=True, metavar="ACTION")

    el = esub.add_parser("list", parents=[src], help="recent events, one line each")
    el.add_argument("--state", choices=["pending", "delivered"])
    el.add_argument("--label")
    el.add_argument("--limit", type=int, default=50)
    el.set_defaults(func=cmd_events_list)

    es = esub.add_parser("show", parents=[src], help="one event in full")
    es.add_argument("id", help="event id, or a unique prefix of it")
    es.add_argument("--image", metavar="FILE", help="also write the event's JPEG here")
    es.add_argument("--crop", metavar="FILE", help="also write the object's crop JPEG here")
    es.set_defaults(func=cmd_events_show)

    ex = esub.add_parser("export", parents=[src], help="events as JSON Lines, GeoJSON or CSV")
    ex.add_argument("--format", choices=["jsonl", "geojson", "csv"], default="jsonl")
    ex.add_argument("--out", help="file to write (default: standard output)")
    ex.add_argument("--state", choices=["pending", "delivered"])
    ex.add_argument("--label")
    ex.add_argument("--with-images", action="store_true",
                    help="jsonl only: embed each JPEG and crop (base64), for events import "
                    "elsewhere")
    ex.set_defaults(func=cmd_events_export)

    ei = esub.add_parser("import", parents=[src],
                         help="add events exported with --with-images (ids are kept)")
    ei.add_argument("file")
    ei.set_defaults(func=cmd_events_import)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        setup_logging("WARNING")
    try:
        return int(args.func(args))
    except ConfigError as e:
        return _config_error(e)
    except StoreError as e:
        return _fail(str(e))
    except BrokenPipeError:  # `patrol-agent events export | head`
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
