"""``patrol-agent doctor``: a technician's check of a unit, one part at a time.

Each check looks at one thing the agent needs (its model, its camera, gpsd and a fix,
the clock, the broker, the card, the service) the way the agent itself would use it,
and says in plain words what it found and, when something is wrong, what to do. The
checks do not change anything: the broker is reached under a client id of its own (the
running agent's would be thrown off), and a camera the running service holds is left
alone.
"""

from __future__ import annotations

import enum
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.config import Config

SERVICE = "patrol-agent.service"
WAIT_S = 10.0
"""How long a check waits for a camera frame, a GPS fix or the broker's answer."""


class Verdict(enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    part: str
    verdict: Verdict
    found: str
    todo: str = ""
    """What to do about it (for WARN and FAIL)."""

    def line(self) -> str:
        text = f"{self.verdict.value:<4}  {self.part:<8} {self.found}"
        return text + (f"\n{'':14}-> {self.todo}" if self.todo else "")


def run_checks(cfg: Config) -> Iterator[Check]:
    """Every check, in the order a technician would go through them."""
    service_active = _service_active()
    yield check_model(cfg)
    yield check_camera(cfg, service_active)
    gps = check_gps(cfg)
    yield gps[0]
    yield check_clock(gps[1])
    yield check_broker(cfg)
    yield check_disk(cfg)
    yield check_service(service_active)


def check_model(cfg: Config) -> Check:
    from agent.detector import DetectorError
    from agent.pipeline import build_detector

    try:
        det = build_detector(cfg)
        import numpy as np

        det.detect(np.zeros((cfg.camera.height, cfg.camera.width, 3), np.uint8))
    except DetectorError as e:
        return Check("model", Verdict.FAIL, str(e), "check detector.model (and "
                     "detector.labels); the default model ships with the agent")
    return Check("model", Verdict.OK, f"{det.model_path.name} loads and runs: {det.layout}, "
                 f"{det.in_w}x{det.in_h}, {len(det.labels)} classes, "
                 f"{det.timings.invoke_ms:.1f} ms a frame")


def check_camera(cfg: Config, service_active: bool | None) -> Check:
    from agent.sources import SourceError, open_source

    cam = cfg.camera
    if not cam.enabled:
        return Check("camera", Verdict.SKIP, "camera.enabled is false")
    live = cam.kind == "picamera2" or cam.source.isdigit() or cam.source.startswith("/dev/") \
        or "://" in cam.source
    if live and service_active:
        return Check("camera", Verdict.SKIP, "the service is running and holds the camera",
                     "to test the camera here: systemctl stop patrol-agent, then doctor again")
    stop = threading.Event()
    try:
        src = open_source(cam.kind, cam.source, width=cam.width, height=cam.height,
                          fps=cam.fps, paced=False, stop=stop)
    except SourceError as e:
        return Check("camera", Verdict.FAIL, str(e), _camera_todo(cam.kind))
    got: list = []
    reader = threading.Thread(target=lambda: got.append(src.read()), daemon=True)
    reader.start()
    reader.join(WAIT_S)
    stop.set()
    reader.join(2)
    frame = got[0] if got else None
    if frame is None:
        return Check("camera", Verdict.FAIL, f"{src.name}: no frame within {WAIT_S:.0f} s "
                     f"({src.stats.last_error or 'nothing came'})", _camera_todo(cam.kind))
    src.close()
    h, w = frame.image.shape[:2]
    return Check("camera", Verdict.OK, f"{src.name} gives {w}x{h} frames")


def _camera_todo(kind: str) -> str:
    if kind == "picamera2":
        return ("is the camera cable seated, and is it listed by `rpicam-hello --list-cameras`? "
                "python3-picamera2 must be installed")
    return ("is it plugged in (`ls /dev/video*`, `v4l2-ctl --list-devices`)? For a stream, "
            "does the URL open in a player from this unit?")


def check_gps(cfg: Config) -> tuple[Check, float | None]:
    """The gpsd check, and GPS minus system time (seconds) if a fix came."""
    if not cfg.gps.enabled:
        return Check("gps", Verdict.SKIP, "gps.enabled is false"), None
    where = f"gpsd at {cfg.gps.host}:{cfg.gps.port}"
    try:
        sock = socket.create_connection((cfg.gps.host, cfg.gps.port), timeout=3)
    except OSError as e:
        return Check("gps", Verdict.FAIL, f"{where} does not answer ({e.strerror or e})",
                     "systemctl status gpsd; is the receiver plugged in (`gpsmon`)?"), None
    from agent.gps import WATCH, fix_from_tpv

    best = None
    offset = None
    toff = False
    try:
        sock.sendall(WATCH)
        sock.settimeout(1.0)
        lines = sock.makefile("r", encoding="utf-8", errors="replace")
        deadline = time.monotonic() + WAIT_S
        import json

        while time.monotonic() < deadline and not (best and best.usable and toff):
            try:
                line = lines.readline()
            except (TimeoutError, OSError):
                continue
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("class") == "TOFF":
                toff = True
            elif msg.get("class") == "TPV" and (fix := fix_from_tpv(msg)) is not None:
                if best is None or fix.usable or not best.usable:
                    best = fix
                if fix.usable:
                    offset = (fix.utc - datetime.now(UTC)).total_seconds()
    finally:
        sock.close()
    if best is None:
        return Check("gps", Verdict.FAIL, f"{where} answers, but reports no receiver time "
                     f"within {WAIT_S:.0f} s", "is the receiver plugged in and seen by gpsd "
                     "(`gpspipe -w -n 10`)? /etc/default/gpsd names its device"), None
    if not best.usable:
        return Check("gps", Verdict.WARN, f"{where}: the receiver has no fix yet",
                     "give it open sky; a cold start can take minutes. Findings made "
                     "meanwhile have no position"), None
    return Check("gps", Verdict.OK, f"{where}: {best.mode}D fix at {best.lat:.5f},"
                 f"{best.lon:.5f}" + ("" if toff else "; gpsd sends no TOFF, so the clock "
                                      "check counts its delivery delay")), offset


def check_clock(gps_offset_s: float | None) -> Check:
    from agent.gps import system_clock_synced

    now = datetime.now(UTC)
    if gps_offset_s is not None:
        if abs(gps_offset_s) > 2.0:
            return Check("clock", Verdict.WARN, f"the system clock is {gps_offset_s:+.1f} s "
                         "off GPS time", "findings are stamped with GPS time anyway; check "
                         "NTP (`timedatectl`) if it stays so")
        return Check("clock", Verdict.OK, f"the system clock agrees with GPS "
                     f"({gps_offset_s:+.2f} s)")
    if system_clock_synced():
        return Check("clock", Verdict.OK, f"set by NTP: {now:%Y-%m-%d %H:%M:%S}Z")
    return Check("clock", Verdict.WARN, f"reads {now:%Y-%m-%d %H:%M:%S}Z, with no GPS fix "
                 "and no NTP to vouch for it", "findings are marked time_source "
                 "'unverified' until GPS or NTP sets it (`timedatectl`)")


def check_broker(cfg: Config) -> Check:
    if cfg.mqtt is None:
        return Check("broker", Verdict.WARN, "no [mqtt] section: findings stay on the card",
                     "add [mqtt] with host (provisioning/provision.sh --broker)")
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.uplink import UplinkError, build_tls_context

    mq = cfg.mqtt
    where = f"{'mqtts' if mq.tls else 'mqtt'}://{mq.host}:{mq.effective_port}"
    answer: list[str] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{cfg.mqtt_client_id()}-doctor",
                         protocol=mqtt.MQTTv5 if mq.protocol == "5" else mqtt.MQTTv311)
    if mq.username:
        client.username_pw_set(mq.username, mq.password.get_secret_value()
                               if mq.password else None)

    def on_connect(c: object, u: object, flags: object, reason: object, props: object) -> None:
        answer.append(str(reason))
        done.set()

    client.on_connect = on_connect
    try:
        if mq.tls:
            client.tls_set_context(build_tls_context(mq.tls))
        client.connect(mq.host, mq.effective_port, keepalive=10)
    except UplinkError as e:
        return Check("broker", Verdict.FAIL, str(e), "fix the TLS files in [mqtt.tls]")
    except ssl.SSLCertVerificationError as e:
        return Check("broker", Verdict.FAIL, f"{where}: its certificate is not trusted "
                     f"({e.verify_message})", "mqtt.tls.ca_file must be the CA that signed "
                     "it, and mqtt.host the name in it")
    except (ssl.SSLError, OSError) as e:
        return Check("broker", Verdict.FAIL, f"{where}: cannot connect "
                     f"({getattr(e, 'strerror', None) or e})", "is the LTE link up (`ip route`, "
                     "`ping` the broker)? Is mqtt.host right?")
    client.loop_start()
    done.wait(WAIT_S)
    client.disconnect()
    client.loop_stop()
    if not answer:
        return Check("broker", Verdict.FAIL, f"{where}: no MQTT answer in {WAIT_S:.0f} s",
                     "is it an MQTT broker on that port (TLS on 8883)?")
    if answer[0] != "Success":
        return Check("broker", Verdict.FAIL, f"{where} refused the connection: {answer[0]}",
                     "check mqtt.username and the password credential "
                     "(/etc/patrol-agent/credentials/mqtt-password)")
    return Check("broker", Verdict.OK, f"{where} accepts this unit")


def check_disk(cfg: Config) -> Check:
    from agent.store import Store, StoreError

    path = cfg.store.path
    directory = path.parent if path.parent.exists() else None
    if directory is None:
        return Check("disk", Verdict.WARN, f"{path.parent} does not exist yet",
                     "the service creates it (StateDirectory=) at its first start")
    usage = shutil.disk_usage(directory)
    free_mb = usage.free / 1024 / 1024
    quota = cfg.store.quota_mb
    parts = [f"{free_mb:.0f} MB free on the card"]
    verdict, todo = Verdict.OK, ""
    if path.exists():
        try:
            with Store(path) as s:
                counts, size = s.counts(), s.size_bytes() / 1024 / 1024
                oldest = s.oldest_pending_utc()
        except StoreError as e:
            return Check("disk", Verdict.FAIL, str(e), "keep the file for the office; move "
                         "it aside and the agent starts a new outbox")
        parts.append(f"outbox {size:.0f} MB of its {quota:.0f} MB quota, "
                     f"{counts['pending']} to deliver, {counts['delivered']} delivered")
        if oldest is not None:
            parts.append(f"oldest undelivered from {oldest:%Y-%m-%d %H:%M}Z")
    if free_mb < min(512.0, quota):
        verdict, todo = Verdict.FAIL, ("free space on the card (journalctl --vacuum-size=, old "
                                       "files); the outbox needs room below its quota")
    return Check("disk", verdict, "; ".join(parts), todo)


def _systemctl(*args: str) -> str | None:
    exe = shutil.which("systemctl")
    if exe is None or not os.path.isdir("/run/systemd/system"):
        return None
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    return r.stdout.strip()


def _service_active() -> bool | None:
    state = _systemctl("is-active", SERVICE)
    return None if state is None else state == "active"


def check_service(active: bool | None, systemctl: Callable[..., str | None] = _systemctl
                  ) -> Check:
    if active is None:
        return Check("service", Verdict.SKIP, "no systemd running here")
    enabled = systemctl("is-enabled", SERVICE)
    if not active:
        return Check("service", Verdict.FAIL, f"{SERVICE} is not running (enabled: {enabled})",
                     "journalctl -u patrol-agent -b says why; systemctl start patrol-agent")
    status = systemctl("show", "-p", "StatusText", "--value", SERVICE) or ""
    return Check("service", Verdict.OK if enabled == "enabled" else Verdict.WARN,
                 f"{SERVICE} is running ({enabled}): {status}",
                 "" if enabled == "enabled" else "systemctl enable patrol-agent, so that it "
                 "starts at boot")
