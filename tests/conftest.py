"""Real parts for the tests: a Mosquitto each test starts on a free loopback port,
a real subscriber, real SQLite files, real JPEGs.

Nothing here touches a system service or a fixed port: the machine's own
Mosquitto on 1883 (if any) is never used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.records import Event, Position

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Something accepts TCP connections on this loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Mosquitto:
    """A private Mosquitto broker that a test can stop, kill and start again on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "",
                 plain_listener: bool = True) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.plain_listener = plain_listener
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            "per_listener_settings false",
            # As root, mosquitto would drop to the 'mosquitto' user, which cannot
            # write the test's private directory; as anyone else this is ignored.
            "user root",
            # Persistence, so that a broker restart keeps the subscriber's queued
            # messages, as a production broker would.
            "persistence true",
            f"persistence_location {self.workdir}/",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if self.plain_listener:
            lines.append(f"listener {self.port} 127.0.0.1")
        if "allow_anonymous" not in self.extra_conf:
            lines.append("allow_anonymous true")
        conf.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")
        return conf

    def start(self) -> Mosquitto:
        conf = self._write_conf()
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start: {err} {log}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


GPSFAKE = shutil.which("gpsfake") or "/usr/bin/gpsfake"
NMEA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nmea"


class Gpsfake:
    """A real gpsd on a free loopback port, fed an NMEA log by gpsfake."""

    def __init__(self, log: Path, port: int | None = None, cycle_s: float = 0.02,
                 loop: bool = False) -> None:
        self.log = log
        self.port = port or free_port()
        self.cycle_s = cycle_s
        self.loop = loop
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Gpsfake:
        args = [GPSFAKE, "-q", "-P", str(self.port), "-c", str(self.cycle_s)]
        if not self.loop:
            args.append("-1")
        else:
            args.append("-l")
        # Its own session, so that stopping it also stops the gpsd it started.
        self.proc = subprocess.Popen([*args, str(self.log)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("gpsfake/gpsd did not start listening")

    def wait_reporting(self, timeout: float = 30) -> None:
        """Until gpsd reports the receiver's time (gpsfake adds its device a moment after
        gpsd listens; on a busy machine, seconds): a receiver that is really there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                buf = b""
                while b'"class":"TPV"' not in buf or b'"time"' not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    buf = buf[-8192:] + chunk
                else:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"gpsd on port {self.port} reported no receiver time in {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


class Subscriber:
    """A real MQTT client that records what the agent publishes (persistent session, QoS 1)."""

    def __init__(self, port: int, topic: str = "patrol/#", client_id: str | None = None,
                 tls: dict[str, Any] | None = None) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-sub-{port}",
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("subscriber could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def event_ids(self) -> set[str]:
        with self.lock:
            return {json.loads(p)["id"] for t, p, _ in self.messages if t.endswith("/events")}

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/events")]

    def images(self) -> dict[str, bytes]:
        """Full pictures by event id (``…/images/{id}``; crops are one level deeper)."""
        with self.lock:
            return {t.split("/")[-1]: p for t, p, _ in self.messages
                    if t.split("/")[-2:-1] == ["images"]}

    def crops(self) -> dict[str, bytes]:
        """Object crops by event id (``…/images/{id}/crop``)."""
        with self.lock:
            return {t.split("/")[-2]: p for t, p, _ in self.messages
                    if "/images/" in t and t.endswith("/crop")}

    def topics(self) -> list[str]:
        """Every topic received, in arrival order."""
        with self.lock:
            return [t for t, _, _ in self.messages]

    def statuses(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/status")]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Office:
    """The office's MQTT 5 client for one unit (``base``: ``{root}/{dev}``): sends
    commands and desired configs, collects answers, reports and pictures."""

    def __init__(self, port: int, base: str, auth: tuple[str, str] | None = None) -> None:
        self.base = base
        self.messages: list[tuple[str, bytes, Properties | None]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"office-{uuid.uuid4()}",
                                  protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        topics = [(f"{base}/cmd/+/result", 1), (f"{base}/snapshots/+", 1),
                  (f"{base}/status", 1), (f"{base}/config/reported", 1)]
        # On every connection: a broker restarted under the test forgets the session.
        self.client.on_connect = lambda c, *a: c.subscribe(topics)
        if auth is not None:
            self.client.username_pw_set(*auth)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.properties))

    def send(self, name: str, payload: bytes | dict, correlation: bytes | None = None,
             retain: bool = False) -> None:
        props = None
        if correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        wait_until(self.client.is_connected, 15, "the office's connection")
        self.client.publish(f"{self.base}/cmd/{name}", data, qos=1, retain=retain,
                            properties=props).wait_for_publish(5)

    def answers(self, name: str | None = None) -> list[tuple[dict, Properties | None]]:
        with self.lock:
            return [(json.loads(p), props) for t, p, props in self.messages
                    if t.endswith("/result")
                    and (name is None or t == f"{self.base}/cmd/{name}/result")]

    def answer(self, request_id: str, timeout: float = 15) -> tuple[dict, Properties | None]:
        found: list = []

        def seen() -> bool:
            found[:] = [a for a in self.answers() if a[0].get("request_id") == request_id]
            return bool(found)

        wait_until(seen, timeout, f"the answer to {request_id}")
        return found[0]

    def ask(self, name: str, args: dict | None = None) -> dict:
        return self.answer_within(name, 15, args)

    def answer_within(self, name: str, timeout: float, args: dict | None = None) -> dict:
        rid = str(uuid.uuid4())
        self.send(name, {"request_id": rid, **({"args": args} if args else {})})
        return self.answer(rid, timeout)[0]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def desire(self, doc: dict | bytes, fleet: bool = False, root: str = "patrol") -> None:
        """Publish a desired config, retained, as the office does."""
        topic = f"{root}/fleet/config/desired" if fleet else f"{self.base}/config/desired"
        data = json.dumps(doc).encode() if isinstance(doc, dict) else doc
        wait_until(self.client.is_connected, 15, "the office's connection")
        self.client.publish(topic, data, qos=1, retain=True).wait_for_publish(5)

    def reports(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages
                    if t == f"{self.base}/config/reported"]

    def report(self, pred: Callable[[dict], bool], timeout: float = 20) -> dict:
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [r for r in self.reports() if pred(r)]
            return bool(found)

        wait_until(seen, timeout, "the config report")
        return found[-1]

    def statuses(self) -> list[dict]:
        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages if t == f"{self.base}/status"]

    def onlines(self) -> int:
        """How many times the unit has said it is online (its retained status)."""
        return sum(st.get("state") == "online" for st in self.statuses())

    def wait_online(self, timeout: float, more_than: int = 0) -> None:
        """Until the unit says it is online (once more than ``more_than`` times), as the
        office waits before it sends a command: the unit subscribes before it says so."""
        wait_until(lambda: self.onlines() > more_than, timeout, "the unit's online status")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """cli.main() sets up logging on the stderr of the moment, which pytest closes
    after the test; put the root logger back so later tests do not log into it."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop(signal.SIGKILL)


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    subs: list[Subscriber] = []

    def make(port: int, **kw: Any) -> Subscriber:
        s = Subscriber(port, **kw)
        subs.append(s)
        return s

    yield make
    for s in subs:
        s.close()


_JPEG_CACHE: dict[int, bytes] = {}


def make_jpeg(seed: int = 0, size: int = 64) -> bytes:
    """A real (small) JPEG: noise on a gradient, so no two seeds encode the same."""
    if seed not in _JPEG_CACHE:
        rng = np.random.default_rng(seed)
        img = np.linspace(0, 255, size * size * 3).reshape(size, size, 3).astype(np.uint8)
        img = cv2.add(img, rng.integers(0, 40, img.shape, dtype=np.uint8))
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        _JPEG_CACHE[seed] = buf.tobytes()
    return _JPEG_CACHE[seed]


def make_event(i: int = 0, label: str = "garbage") -> Event:
    return Event(
        label=label,
        score=0.5 + (i % 50) / 100,
        bbox=(0.1, 0.2, 0.3, 0.4),
        captured_utc=datetime.now(UTC),
        captured_mono=time.monotonic(),
        image_jpeg=make_jpeg(i % 8),
        position=Position(37.6584 + i * 1e-5, 126.8320, 4.0, "vehicle"),
        model="test-model",
        config_version=3,
        attributes={"n": i},
    )


def write_config(path: Path, port: int | None, db: Path, extra: str = "",
                 mqtt_extra: str = "", device: str = "unit-1", store_extra: str = "") -> Path:
    # No camera and no gpsd: these tests are about the store and the uplink, and
    # must never reach the machine's own gpsd port.
    text = (f'version = 3\n[device]\nid = "{device}"\n[camera]\nenabled = false\n'
            f'[gps]\nenabled = false\n[store]\npath = "{db}"\n{store_extra}\n')
    if port is not None:
        text += (f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreconnect_min_s = 0.2\n'
                 f'reconnect_max_s = 1.0\nkeepalive_s = 5\n{mqtt_extra}\n')
    path.write_text(text + extra)
    return path


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent", *args]


def start_agent(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """The agent as its own process, as systemd would run it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("JOURNAL_STREAM", None)
    logf = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(agent_cmd("run", "--config", str(config)), stdout=logf,
                            stderr=subprocess.STDOUT, env=env)


class Unit:
    """``patrol-agent run`` as its own process, as systemd runs it, with its log kept line
    by line (and when each line arrived, for tests that act on what the agent says)."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        run_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        run_env.pop("JOURNAL_STREAM", None)
        self.started = time.time()
        self.proc = subprocess.Popen(agent_cmd("run", "--config", str(config), *args),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=run_env)
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.time(), line.rstrip("\n")))

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(text for _, text in self.lines)

    def seen(self, text: str) -> float | None:
        """When a line containing ``text`` arrived, or None."""
        with self._lock:
            return next((t for t, line in self.lines if text in line), None)

    def wait_for(self, text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (t := self.seen(text)) is None:
            if self.proc.poll() is not None and self.seen(text) is None:
                self._reader.join(2)
                if (t := self.seen(text)) is not None:
                    return t
                raise AssertionError(f"agent exited ({self.proc.returncode}) before "
                                     f"saying {text!r}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"agent did not say {text!r} in {timeout:.0f} s:\n"
                                     f"{self.log}")
            time.sleep(0.02)
        return t

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[int, float]:
        """Signal it and wait: (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not exit within {timeout} s of {sig}:\n"
                                 f"{self.log}") from None
        self._reader.join(5)
        return rc, time.monotonic() - t0

    def wait(self, timeout: float) -> int:
        """Wait for it to exit by itself: its exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"agent did not exit within {timeout} s:\n{self.log}"
                                 ) from None
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def unit_config(path: Path, *, device: str, camera: str | None, db: Path,
                gps_port: int | None = None, broker_port: int | None = None,
                extra: str = "", store_extra: str = "") -> Path:
    """A unit's config as provisioning writes it: its camera, its gpsd, its broker."""
    text = f'version = 1\n[device]\nid = "{device}"\n'
    text += (f'[camera]\nsource = "{camera}"\n' if camera is not None
             else "[camera]\nenabled = false\n")
    text += (f'[gps]\nhost = "127.0.0.1"\nport = {gps_port}\n' if gps_port is not None
             else "[gps]\nenabled = false\n")
    text += f'[store]\npath = "{db}"\n{store_extra}'
    if broker_port is not None:
        text += (f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nreconnect_min_s = 0.2\n'
                 'reconnect_max_s = 1.0\nkeepalive_s = 5\n')
    path.write_text(text + extra)
    return path


# --- the office --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One PostgreSQL 15 + PostGIS cluster for the session; each test takes a new database."""
    from tests.office_rig import Postgres
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The office store's URL, once for each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/office.sqlite"
    return request.getfixturevalue("postgres").new_database()
