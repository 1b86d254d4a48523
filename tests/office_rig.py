"""The office's test world: a real PostgreSQL + PostGIS cluster made with initdb/pg_ctl, the
office as a ``patrol-office serve`` process, and a unit's messages published to a real
Mosquitto exactly as the agent publishes them (image, crop, then the event)."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import free_port, make_jpeg, wait_until

PG_BIN = Path(os.environ.get("PATROL_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Postgres:
    """A throw-away PostgreSQL 15 cluster on a free loopback port. PostgreSQL refuses to
    run as root, so as root it runs as the ``postgres`` system user (or ``nobody``)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb missing): "
                               "apt-get install postgresql-15 postgresql-15-postgis-3")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="patrol-pg-"))
        self.user: str | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.user = name
                os.chown(self.dir, pw.pw_uid, pw.pw_gid)
                break
        self._n = 0

    def _run(self, *cmd: str) -> None:
        full = ["runuser", "-u", self.user, "--", *cmd] if self.user else list(cmd)
        r = subprocess.run(full, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed: {r.stdout}{r.stderr}")

    def start(self) -> Postgres:
        data = self.dir / "data"
        self._run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--locale=C.UTF-8")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"), "-w",
                  "-t", "60", "-o",
                  # fsync off: a test cluster need not survive the machine, only its own
                  # crash (pause), which the operating system's cache covers.
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")
        return self

    def new_database(self) -> str:
        """A fresh database with PostGIS available; returns its URL."""
        import psycopg
        self._n += 1
        name = f"office_{os.getpid()}_{self._n}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def pause(self) -> None:
        """The server goes away (a crash, a restart for an upgrade); the data stays."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate",
                  "-w", "stop")

    def resume(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                  str(self.dir / "log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                  "start")

    def stop(self) -> None:
        self.pause()
        shutil.rmtree(self.dir, ignore_errors=True)


def office_cmd(*args: str) -> list[str]:
    """The installed console script, as an office PC runs it."""
    return [str(Path(sys.executable).with_name("patrol-office")), *args]


class OfficeServer:
    """``patrol-office serve`` as a process, as an office PC runs it."""

    def __init__(self, tmp: Path, broker_port: int, store_url: str, *, config: str = "",
                 client_id: str = "office-test", name: str = "office") -> None:
        self.http_port = free_port()
        self.conf = tmp / f"{name}.toml"
        self.conf.write_text(f'[broker]\nclient_id = "{client_id}"\n{config}')
        self.log_path = tmp / f"{name}.log"
        self.args = ["serve", "--config", str(self.conf), "--broker",
                     f"127.0.0.1:{broker_port}", "--store", store_url, "--http",
                     f"127.0.0.1:{self.http_port}"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> OfficeServer:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(office_cmd(*self.args), stdout=self._log,
                                     stderr=subprocess.STDOUT)
        wait_until(lambda: "connected to" in self.log() or self.proc.poll() is not None, 30,
                   "the office's collector to connect")
        assert self.proc.poll() is None, self.log()
        wait_until(self._http_up, 15, "the office's page")
        return self

    def _http_up(self) -> bool:
        try:
            self.get("/healthz")
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            body = r.read()
            return json.loads(body) if "json" in r.headers.get("Content-Type", "") else body

    def status(self, path: str, method: str = "GET", body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self._log.close()
        return rc


@dataclass
class Sent:
    id: str
    device: str
    label: str
    lat: float | None
    lon: float | None
    captured_at: str
    image: bytes
    crop: bytes


class FakeFleet:
    """Units' messages on a real broker, as the agent publishes them (docs/mqtt.md)."""

    def __init__(self, port: int, client_id: str = "fleet-sim") -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self._lock = threading.Lock()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1,
                retain: bool = False) -> None:
        with self._lock:
            info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(10)

    def finding(self, device: str, label: str, lat: float | None, lon: float | None,
                at: datetime, seed: int = 0, score: float = 0.9,
                image_first: bool = True, event_id: str | None = None) -> Sent:
        eid = event_id or str(uuid.UUID(int=_uuid7_int(at, seed)))
        image, crop = make_jpeg(seed, 96), make_jpeg(seed + 1000, 48)
        s = Sent(eid, device, label, lat, lon, _iso(at), image, crop)
        if image_first:
            self.send_pictures(s)
            self.send_event(s, score)
        else:
            self.send_event(s, score)
            self.send_pictures(s)
        return s

    def send_pictures(self, s: Sent) -> None:
        self.publish(f"patrol/{s.device}/images/{s.id}", s.image)
        self.publish(f"patrol/{s.device}/images/{s.id}/crop", s.crop)

    def send_event(self, s: Sent, score: float = 0.9) -> None:
        self.publish(f"patrol/{s.device}/events", json.dumps(event_payload(s, score)))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def event_payload(s: Sent, score: float = 0.9) -> dict[str, Any]:
    def ref(kind: str, data: bytes) -> dict[str, Any]:
        suffix = "/crop" if kind == "crop" else ""
        return {"topic": f"patrol/{s.device}/images/{s.id}{suffix}",
                "content_type": "image/jpeg", "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}
    return {"schema": 1, "id": s.id, "device": s.device, "captured_at": s.captured_at,
            "label": s.label, "score": score, "bbox": [0.2, 0.3, 0.5, 0.6],
            "position": None if s.lat is None else {"lat": s.lat, "lon": s.lon,
                                                     "accuracy_m": 5.0, "source": "object"},
            "model": "civil-complaint", "config_version": 1,
            "image": ref("image", s.image), "crop": ref("crop", s.crop),
            "attributes": {"time_source": "gps"}}


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid7_int(at: datetime, seed: int) -> int:
    """A UUIDv7 for ``at`` whose random part is ``seed``: time-ordered like the agent's."""
    ms = int(at.timestamp() * 1000)
    return (ms << 80) | (0x7 << 76) | ((seed & 0xFFF) << 64) | (0b10 << 62) | (seed & (2**62 - 1))


def at(day: int = 0, second: float = 0.0) -> datetime:
    return datetime(2026, 11, 2, 9, 0, tzinfo=UTC) + timedelta(days=day, seconds=second)


def wait_counts(server: OfficeServer, timeout: float = 30, **want: int) -> dict[str, int]:
    last: dict[str, int] = {}

    def ok() -> bool:
        nonlocal last
        try:
            last = server.get("/api/stats")["store"]
        except urllib.error.HTTPError as e:  # 503 while the store is away
            assert e.code == 503, e
            return False
        return all(last.get(k) == v for k, v in want.items())
    try:
        wait_until(ok, timeout, f"the office to hold {want}", step=0.2)
    except AssertionError:
        raise AssertionError(f"the office holds {last}, not {want}\n{server.log()[-3000:]}"
                             ) from None
    return last

