"""The fleet's broker (provisioning/broker/) against a real Mosquitto: the shipped ACL,
a config made from the shipped mosquitto.conf (only its ports, paths and the places of
persistence and the log rewritten), and certificates and accounts made by the shipped
make-ca.sh from CSRs made as provision.sh makes them.

MQTT 5 clients throughout, so that a publish the ACL refuses comes back as a PUBACK with
reason code 135, "Not authorized".
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import load_config
from agent.pipeline import Pipeline
from agent.topics import Topics
from tests.conftest import (
    MOSQUITTO,
    Mosquitto,
    free_port,
    listening,
    make_event,
    wait_until,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent
BROKER_DIR = ROOT / "provisioning" / "broker"
MAKE_CA = BROKER_DIR / "make-ca.sh"
SHIPPED_CONF = BROKER_DIR / "mosquitto.conf"
SHIPPED_ACL = BROKER_DIR / "acl"
ETC = "/etc/mosquitto/patrol/"
NOT_AUTHORIZED = 135
# Success, and "no matching subscribers" (16), which Mosquitto 2.0 answers to an MQTT 5
# publish nobody is subscribed to; neither is a failure (below 128).
ACCEPTED = (0, 16)

pytestmark = pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("mosquitto_passwd")
                                     and Path(MOSQUITTO).exists()),
                                reason="needs openssl, mosquitto and mosquitto_passwd")


def make_ca(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(MAKE_CA), *map(str, args)], capture_output=True,
                          text=True, check=check, timeout=60)


def unit_csr(d: Path, device: str, vehicle: str) -> tuple[Path, Path]:
    """A unit's key and CSR, made as provisioning/provision.sh makes them on the unit."""
    key, csr = d / f"{device}.key", d / f"{device}.csr"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(key)], check=True,
                   capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj",
                    f"/O=patrol/OU={vehicle}/CN={device}", "-out", str(csr)], check=True,
                   capture_output=True)
    return key, csr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fleet's CA, the broker's certificate, units van-1 and van-2 with certificates,
    van-3 with an account, the office's two accounts; and a rogue CA's van-2."""
    d = tmp_path_factory.mktemp("pki")
    ca = d / "ca"
    make_ca("--dir", ca, "ca")
    make_ca("--dir", ca, "server", "--host", "localhost", "--ip", "127.0.0.1")
    units = d / "units"
    units.mkdir()
    for dev, vehicle in (("van-1", "7712"), ("van-2", "7713")):
        unit_csr(units, dev, vehicle)
        out = make_ca("--dir", ca, "sign-unit", units / f"{dev}.csr").stdout
        assert f"MQTT user {dev}" in out
        shutil.copy(ca / "units" / f"{dev}.crt", units)  # beside the unit's key
    for name in ("office-collector", "office-fleet", "van-3"):
        make_ca("--dir", ca, "account", name)
    rogue = d / "rogue"
    make_ca("--dir", rogue, "ca", "--name", "not the fleet's CA")
    rogue_units = d / "rogue-units"
    rogue_units.mkdir()
    unit_csr(rogue_units, "van-2", "7713")
    make_ca("--dir", rogue, "sign-unit", rogue_units / "van-2.csr")
    shutil.copy(rogue / "units" / "van-2.crt", rogue_units)
    return {"ca": ca, "units": units, "rogue": rogue, "rogue_units": rogue_units}


def derive_conf(etc: Path, work: Path, ports: dict[int, int]) -> str:
    """The shipped mosquitto.conf with only its listeners' ports (on loopback), the fleet
    files' directory and the places of persistence and the log changed."""
    out = ["# provisioning/broker/mosquitto.conf for a test (ports, paths only).",
           # As root, mosquitto would drop to the 'mosquitto' user, which cannot read the
           # test's private files; as anyone else this line is ignored.
           "user root"]
    for line in SHIPPED_CONF.read_text().splitlines():
        if line.startswith("listener "):
            line = f"listener {ports[int(line.split()[1])]} 127.0.0.1"
        elif line.startswith("persistence_location "):
            line = f"persistence_location {work}/"
        elif line.startswith("log_dest "):
            line = f"log_dest file {work}/mosquitto.log"
        out.append(line.replace(ETC, f"{etc}/"))
    return "\n".join(out) + "\n"


class FleetBroker(Mosquitto):
    """Mosquitto with the fleet's config: ``certs`` (8883, units with certificates),
    ``office`` (8884) and ``passwords`` (8885, units with accounts) are its ports."""

    def __init__(self, workdir: Path, pki: dict[str, Path]) -> None:
        super().__init__(workdir, plain_listener=False)
        self.etc = workdir / "etc"
        self.etc.mkdir()
        ca = pki["ca"]
        for name in ("ca.pem", "crl.pem", "server.crt", "server.key", "office.passwd",
                     "units.passwd"):
            shutil.copy(ca / name, self.etc / name)
        shutil.copy(SHIPPED_ACL, self.etc / "acl")
        self.ports = {8883: free_port(), 8884: free_port(), 8885: free_port()}
        self.port = self.ports[8883]  # what start() waits for
        self.certs, self.office, self.passwords = (self.ports[p] for p in (8883, 8884, 8885))
        self.pki = pki

    def _write_conf(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(derive_conf(self.etc, self.workdir, self.ports))
        return conf

    def start(self) -> FleetBroker:
        super().start()
        for port in self.ports.values():
            wait_until(lambda p=port: listening(p), 10, f"listener {port}")
        return self

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)

    @property
    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def broker(tmp_path: Path, pki: dict[str, Path]) -> Iterator[FleetBroker]:
    b = FleetBroker(tmp_path / "broker", pki).start()
    yield b
    b.stop(signal.SIGKILL)


class Client:
    """An MQTT 5 client over TLS: a unit with its certificate, or an account."""

    def __init__(self, broker: FleetBroker, *, cert: str | None = None,
                 account: str | None = None, port: int | None = None,
                 client_id: str | None = None, session_s: int | None = None,
                 ca: Path | None = None, certs_dir: Path | None = None,
                 password: str | None = None, wait: bool = True) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.acks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.lock = threading.Lock()
        self.connack: Any = None
        self.session_present: bool | None = None
        self.gone = threading.Event()
        self.error = ""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        certs_dir = certs_dir or broker.pki["units"]
        self.client.tls_set(
            ca_certs=str(ca or broker.pki["ca"] / "ca.pem"),
            certfile=str(certs_dir / f"{cert}.crt") if cert else None,
            keyfile=str(certs_dir / f"{cert}.key") if cert else None)
        if account:
            pw = password if password is not None else (
                broker.pki["ca"] / "accounts" / f"{account}.password").read_text().strip()
            self.client.username_pw_set(account, pw)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.gone.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        props = None
        if session_s is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_s
        if port is None:
            port = broker.certs if cert and not account else (
                broker.office if account and account.startswith("office-")
                else broker.passwords)
        try:
            self.client.connect("127.0.0.1", port, keepalive=10,
                                clean_start=session_s is None, properties=props)
        except OSError as e:  # ssl.SSLError is an OSError: the handshake was refused
            self.error = f"{type(e).__name__}: {e}"
            self.gone.set()
            return
        self.client.loop_start()
        if wait:
            wait_until(lambda: self.connack is not None or self.gone.is_set(), 5,
                       "CONNACK or a refusal")

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connack = rc

    def _on_message(self, c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        with self.lock:
            self.acks[mid] = rc.value

    def _on_subscribe(self, c: Any, u: Any, mid: int, rcs: list[Any], p: Any) -> None:
        with self.lock:
            self.subacks[mid] = [rc.value for rc in rcs]

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure \
            and not self.gone.is_set()

    def publish(self, topic: str, payload: bytes = b"{}", retain: bool = False) -> int:
        """QoS 1: the PUBACK's reason code (0 success, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.acks, 5, f"PUBACK for {topic}")
        return self.acks[info.mid]

    def subscribe(self, *topics: str) -> list[int]:
        rc, mid = self.client.subscribe([(t, 1) for t in topics])
        assert rc == mqtt.MQTT_ERR_SUCCESS
        wait_until(lambda: mid in self.subacks, 5, f"SUBACK for {topics}")
        return self.subacks[mid]

    def got(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _, _ in self.messages}

    def wait_for(self, topic: str, payload: bytes | None = None, timeout: float = 5) -> None:
        wait_until(lambda: any(payload is None or p == payload for p in self.got(topic)),
                   timeout, f"{topic} {payload!r}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def connect(clients: list[Client], broker: FleetBroker, **kw: Any) -> Client:
    c = Client(broker, **kw)
    clients.append(c)
    return c


def refused(c: Client) -> bool:
    """Refused at connect: by TLS (handshake error or the connection closed with no
    CONNACK) or by MQTT (a CONNACK with a failure reason)."""
    wait_until(lambda: c.gone.is_set() or c.connack is not None, 5, "an answer")
    if c.connack is None:
        return True
    return bool(c.connack.is_failure)


# --- the shipped files ---------------------------------------------------------------------

def test_the_test_broker_runs_the_shipped_security_lines(tmp_path: Path) -> None:
    """Every line of the shipped config is in the test's, changed only where it names a
    port, a path of the fleet's files, the persistence directory or the log."""
    derived = derive_conf(Path("/x/etc"), Path("/x/work"), {8883: 1, 8884: 2, 8885: 3})
    shipped = SHIPPED_CONF.read_text().splitlines()
    kept = [ln for ln in shipped
            if not ln.startswith(("listener ", "persistence_location ", "log_dest "))
            and ETC not in ln]
    assert all(ln in derived.splitlines() for ln in kept)
    settings = [ln for ln in shipped if ln and not ln.startswith("#")]
    for line in ("per_listener_settings true", "require_certificate true",
                 "use_identity_as_username true", "persistence true",
                 "check_retain_source true", "crlfile /etc/mosquitto/patrol/crl.pem"):
        assert line in settings, line
    assert settings.count("allow_anonymous false") == 3
    assert settings.count("acl_file /etc/mosquitto/patrol/acl") == 3
    assert settings.count("use_username_as_clientid true") == 2
    assert not any(ln.startswith("listener 1883") for ln in settings)
    # Mosquitto 2.0.11 reads max_queued_bytes as 32 bits: 2**32 would mean no limit.
    queued = [int(ln.split()[1]) for ln in settings if ln.startswith("max_queued_bytes ")]
    assert len(queued) == 1 and 0 < queued[0] < 2**31
    # Each listener block sets its own security (per_listener_settings true).
    blocks = "\n".join(settings).split("listener ")[1:]
    assert len(blocks) == 3
    for block in blocks:
        assert "allow_anonymous false" in block and "acl_file" in block
        assert "certfile" in block and "keyfile" in block


def test_the_acl_grants_units_exactly_the_agents_topics() -> None:
    """The unit patterns are the topics agent/topics.py makes, with %u for the device."""
    t = Topics("patrol", "%u")
    writes = {t.status, t.events, t.image("+"), t.crop("+"), t.telemetry, t.config_reported,
              t.cmd_result("+"), t.snapshot("+"), t.model_progress}
    reads = {t.config_desired, t.commands, t.fleet_config_desired}
    lines = [ln.split() for ln in SHIPPED_ACL.read_text().splitlines()
             if ln.startswith("pattern ")]
    assert {ln[2] for ln in lines if ln[1] == "write"} == writes
    assert {ln[2] for ln in lines if ln[1] == "read"} == reads
    assert {ln[1] for ln in lines} == {"read", "write"}


# --- units ---------------------------------------------------------------------------------

def test_a_unit_publishing_as_another_unit_is_refused(broker: FleetBroker,
                                                      clients: list[Client]) -> None:
    collector = connect(clients, broker, account="office-collector",
                        client_id="office-collector-1", session_s=3600)
    assert collector.subscribe("$share/office/patrol/#") == [1]
    van1 = connect(clients, broker, cert="van-1")
    assert van1.connected

    assert van1.publish("patrol/van-2/events", b'{"forged": true}') == NOT_AUTHORIZED
    assert van1.publish("patrol/van-2/status", b"offline", retain=True) == NOT_AUTHORIZED
    assert van1.publish("patrol/van-1/events", b'{"id": "mine"}') in ACCEPTED
    collector.wait_for("patrol/van-1/events", b'{"id": "mine"}')
    time.sleep(0.3)
    assert collector.got("patrol/van-2/events") == []
    assert collector.got("patrol/van-2/status") == []


def test_a_unit_writes_what_the_agent_publishes_and_nothing_else(
        broker: FleetBroker, clients: list[Client]) -> None:
    van1 = connect(clients, broker, cert="van-1")
    t = Topics("patrol", "van-1")
    for topic in (t.status, t.events, t.image("e1"), t.crop("e1"), t.telemetry,
                  t.config_reported, t.cmd_result("ping"), t.snapshot("s1"),
                  t.model_progress):
        assert van1.publish(topic) in ACCEPTED, topic
    other = Topics("patrol", "van-2")
    for topic in (t.config_desired, t.cmd("ping"), t.fleet_config_desired,
                  other.events, other.image("e1"), other.cmd_result("ping"),
                  other.config_desired, other.cmd("ping"),
                  "patrol/van-1/other", "patrol/van-1/images/e1/crop/x", "patrol/fleet/status",
                  "patrol/van-1", "van-1/events", "$SYS/broker/x"):
        assert van1.publish(topic) == NOT_AUTHORIZED, topic


def test_a_unit_reads_only_its_own_commands_and_configs_and_the_fleets(
        broker: FleetBroker, clients: list[Client]) -> None:
    fleet = connect(clients, broker, account="office-fleet")
    # Retained before the units subscribe, as the office's documents are.
    assert fleet.publish("patrol/van-1/config/desired", b'{"version": 1}', retain=True) in ACCEPTED
    assert fleet.publish("patrol/van-2/config/desired", b'{"version": 2}', retain=True) in ACCEPTED
    assert fleet.publish("patrol/fleet/config/desired", b'{"version": 9}', retain=True) in ACCEPTED

    van1 = connect(clients, broker, cert="van-1")
    van2 = connect(clients, broker, cert="van-2")
    # Mosquitto's acl_file does not judge subscriptions (SUBACK grants them all); what a
    # client may read is judged on each message it would be sent.
    assert van1.subscribe("patrol/van-1/cmd/+", "patrol/van-1/config/desired",
                          "patrol/fleet/config/desired") == [1, 1, 1]
    assert van1.subscribe("patrol/van-2/cmd/+", "patrol/van-2/config/desired",
                          "patrol/+/events") == [1, 1, 1]
    assert van2.subscribe("patrol/van-2/cmd/+", "patrol/van-2/config/desired",
                          "patrol/fleet/config/desired") == [1, 1, 1]
    van1.wait_for("patrol/fleet/config/desired", b'{"version": 9}')
    van1.wait_for("patrol/van-1/config/desired", b'{"version": 1}')
    van2.wait_for("patrol/van-2/config/desired", b'{"version": 2}')

    assert fleet.publish("patrol/van-2/cmd/ping", b'{"request_id": "for-2"}') in ACCEPTED
    assert fleet.publish("patrol/van-1/cmd/ping", b'{"request_id": "for-1"}') in ACCEPTED
    assert van2.publish("patrol/van-2/events", b'{"id": "e2"}') in ACCEPTED
    van2.wait_for("patrol/van-2/cmd/ping", b'{"request_id": "for-2"}')
    van1.wait_for("patrol/van-1/cmd/ping", b'{"request_id": "for-1"}')
    time.sleep(0.3)
    assert van1.topics() == {"patrol/van-1/cmd/ping", "patrol/van-1/config/desired",
                             "patrol/fleet/config/desired"}
    assert van2.topics() == {"patrol/van-2/cmd/ping", "patrol/van-2/config/desired",
                             "patrol/fleet/config/desired"}


def test_a_unit_cannot_take_another_clients_id_or_session(broker: FleetBroker,
                                                          clients: list[Client]) -> None:
    """use_username_as_clientid: a unit's client id is its device id whatever it sends, so
    it cannot take over the collector's persistent session (whose queue would be
    dropped: the unit may not read it) nor knock another unit off."""
    collector = connect(clients, broker, account="office-collector",
                        client_id="office-collector-1", session_s=3600)
    collector.subscribe("$share/office/patrol/#")
    collector.close()
    van2 = connect(clients, broker, cert="van-2")
    assert van2.publish("patrol/van-2/events", b'{"id": "while-away"}') in ACCEPTED

    thief = connect(clients, broker, cert="van-1", client_id="office-collector-1",
                    session_s=3600)
    assert thief.connected and thief.session_present is False
    impostor = connect(clients, broker, cert="van-1", client_id="patrol-van-2")
    assert impostor.connected
    time.sleep(0.3)
    assert van2.connected  # not knocked off by a client claiming its id
    assert "as van-1 (p5" in broker.log and "as office-collector-1 (p5, c0" in broker.log
    assert "as office-collector-1 (p5, c0, k10, u'van-1')" not in broker.log

    back = connect(clients, broker, account="office-collector",
                   client_id="office-collector-1", session_s=3600)
    assert back.session_present is True
    back.wait_for("patrol/van-2/events", b'{"id": "while-away"}')
    assert thief.messages == [] and impostor.messages == []


def test_the_agent_itself_works_through_the_acl(broker: FleetBroker, tmp_path: Path,
                                                clients: list[Client]) -> None:
    """patrol-agent's uplink with van-1's certificate: its status, finding and picture go
    through, and it answers a command from the fleet tool, so the ACL misses nothing the
    agent needs."""
    collector = connect(clients, broker, account="office-collector")
    collector.subscribe("$share/office/patrol/#")
    fleet = connect(clients, broker, account="office-fleet")
    fleet.subscribe("patrol/+/cmd/+/result", "patrol/+/status")
    units = broker.pki["units"]
    cfg = load_config(write_config(
        tmp_path / "agent.toml", broker.certs, tmp_path / "outbox.db", device="van-1",
        mqtt_extra=(f'[mqtt.tls]\nca_file = "{broker.pki["ca"] / "ca.pem"}"\n'
                    f'cert_file = "{units / "van-1.crt"}"\nkey_file = "{units / "van-1.key"}"\n')))
    pipe = Pipeline(cfg)
    pipe.start()
    try:
        ev = make_event(1)
        pipe.submit(ev)
        collector.wait_for("patrol/van-1/events", timeout=20)
        collector.wait_for(f"patrol/van-1/images/{ev.id}")
        fleet.wait_for("patrol/van-1/status")
        assert fleet.publish("patrol/van-1/cmd/ping", b'{"request_id": "acl-ping"}') in ACCEPTED
        fleet.wait_for("patrol/van-1/cmd/ping/result", timeout=15)
        assert b'"ok": true' in fleet.got("patrol/van-1/cmd/ping/result")[0]
        assert pipe.uplink is not None and pipe.uplink.stats.rejected == 0
    finally:
        pipe.stop()


# --- the office ----------------------------------------------------------------------------

def test_only_the_fleet_tool_writes_desired_configs_and_commands(
        broker: FleetBroker, clients: list[Client]) -> None:
    fleet = connect(clients, broker, account="office-fleet")
    collector = connect(clients, broker, account="office-collector")
    for topic in ("patrol/van-1/config/desired", "patrol/fleet/config/desired",
                  "patrol/van-1/cmd/ping", "patrol/van-1/cmd/snapshot"):
        assert fleet.publish(topic) in ACCEPTED, topic
        assert collector.publish(topic) == NOT_AUTHORIZED, topic
    # The fleet tool speaks for the office, never for a unit.
    for topic in ("patrol/van-1/events", "patrol/van-1/status", "patrol/van-1/config/reported",
                  "patrol/van-1/cmd/ping/result", "patrol/office-fleet/events"):
        assert fleet.publish(topic) == NOT_AUTHORIZED, topic
    for topic in ("patrol/van-1/events", "patrol/office-collector/events",
                  "patrol/fleet/status"):
        assert collector.publish(topic) == NOT_AUTHORIZED, topic


def test_the_fleet_tool_reads_the_answers_and_not_the_findings(
        broker: FleetBroker, clients: list[Client]) -> None:
    fleet = connect(clients, broker, account="office-fleet")
    fleet.subscribe("patrol/#")
    van1 = connect(clients, broker, cert="van-1")
    t = Topics("patrol", "van-1")
    answers = (t.cmd_result("ping"), t.config_reported, t.status, t.telemetry,
               t.model_progress, t.snapshot("s1"))
    for topic in (t.events, t.image("e1"), t.crop("e1"), *answers):
        assert van1.publish(topic, topic.encode()) in ACCEPTED
    fleet.wait_for(t.snapshot("s1"))
    time.sleep(0.3)
    assert fleet.topics() == set(answers)


def test_the_collector_reads_everything(broker: FleetBroker, clients: list[Client]) -> None:
    collector = connect(clients, broker, account="office-collector")
    collector.subscribe("$share/office/patrol/+/events", "$share/office/patrol/+/status",
                        "patrol/+/cmd/#", "patrol/+/config/#")
    van1 = connect(clients, broker, cert="van-1")
    van3 = connect(clients, broker, account="van-3")  # a unit with a password
    fleet = connect(clients, broker, account="office-fleet")
    assert van1.publish("patrol/van-1/events", b"1") in ACCEPTED
    assert van3.publish("patrol/van-3/events", b"3") in ACCEPTED
    assert van3.publish("patrol/van-1/events", b"forged") == NOT_AUTHORIZED
    assert van1.publish("patrol/van-1/status", b"online", retain=True) in ACCEPTED
    assert fleet.publish("patrol/van-3/cmd/ping", b"p") in ACCEPTED
    assert fleet.publish("patrol/fleet/config/desired", b"d") in ACCEPTED
    assert van3.publish("patrol/van-3/cmd/ping/result", b"r") in ACCEPTED
    for topic, payload in (("patrol/van-1/events", b"1"), ("patrol/van-3/events", b"3"),
                           ("patrol/van-1/status", b"online"), ("patrol/van-3/cmd/ping", b"p"),
                           ("patrol/fleet/config/desired", b"d"),
                           ("patrol/van-3/cmd/ping/result", b"r")):
        collector.wait_for(topic, payload)
    assert b"forged" not in collector.got("patrol/van-1/events")


# The subscriptions of the office's collector (office/collector.py): findings and pictures
# shared in a group, the retained state on ordinary subscriptions.
COLLECTOR_TOPICS = ("$share/office/patrol/+/events", "$share/office/patrol/+/images/+",
                    "$share/office/patrol/+/images/+/crop", "patrol/+/status",
                    "patrol/+/telemetry", "patrol/+/config/reported")


def test_the_collectors_session_outlives_its_absence_and_a_broker_restart(
        broker: FleetBroker, clients: list[Client]) -> None:
    collector = connect(clients, broker, account="office-collector",
                        client_id="patrol-office-host", session_s=7 * 24 * 3600)
    assert collector.subscribe(*COLLECTOR_TOPICS) == [1] * len(COLLECTOR_TOPICS)
    collector.close()
    van1 = connect(clients, broker, cert="van-1")
    t = Topics("patrol", "van-1")
    sent = []
    for i in range(5):
        for topic in (t.image(f"e{i}"), t.crop(f"e{i}"), t.events):
            assert van1.publish(topic, b"%d" % i) in ACCEPTED
            sent.append((topic, b"%d" % i))
    van1.close()
    broker.stop()  # a clean stop saves the queue (persistence true)
    broker.start()
    back = connect(clients, broker, account="office-collector",
                   client_id="patrol-office-host", session_s=7 * 24 * 3600)
    assert back.session_present is True
    wait_until(lambda: len(back.messages) == len(sent), 5, "the queued findings")
    assert [(tp, p) for tp, p, _ in back.messages] == sent


def test_a_unit_in_the_collectors_share_group_takes_a_share_of_its_messages(
        broker: FleetBroker, clients: list[Client]) -> None:
    """A limit of Mosquitto 2.0 that docs/broker.md states: acl_file does not judge
    subscriptions, so a unit may join the collector's shared subscription (same group,
    same filter); the messages Mosquitto hands to it round-robin are refused by the read
    check and reach nobody. A group name the units do not know, or a plain subscription,
    is not touched."""
    plain = connect(clients, broker, account="office-collector")
    plain.subscribe("patrol/+/events")
    secret = connect(clients, broker, account="office-collector")
    secret.subscribe("$share/office-5f1c0e/patrol/+/events")
    known = connect(clients, broker, account="office-collector")
    known.subscribe("$share/office/patrol/+/events")
    van1 = connect(clients, broker, cert="van-1")
    assert van1.subscribe("$share/office/patrol/+/events") == [1]
    van2 = connect(clients, broker, cert="van-2")
    sent = [b"%d" % i for i in range(6)]
    for p in sent:
        assert van2.publish("patrol/van-2/events", p) in ACCEPTED
    wait_until(lambda: len(plain.got("patrol/van-2/events")) == 6, 5, "the plain subscriber")
    wait_until(lambda: len(secret.got("patrol/van-2/events")) == 6, 5, "the secret group")
    time.sleep(0.3)
    assert plain.got("patrol/van-2/events") == sent
    assert secret.got("patrol/van-2/events") == sent
    assert van1.messages == []
    # Round-robin between the two members: the unit's half reaches nobody.
    assert known.got("patrol/van-2/events") == sent[0::2]


def test_an_absent_collector_keeps_its_share_of_the_group(broker: FleetBroker,
                                                          clients: list[Client]) -> None:
    """Mosquitto gives a member of a shared subscription its turn even while it is away
    (its session kept): that share waits for it, and the other collector does not get it."""
    running = connect(clients, broker, account="office-collector", client_id="col-a",
                      session_s=3600)
    away = connect(clients, broker, account="office-collector", client_id="col-b",
                   session_s=3600)
    for c in (running, away):
        c.subscribe("$share/office/patrol/+/events")
    away.close()
    van1 = connect(clients, broker, cert="van-1")
    sent = [b"%d" % i for i in range(6)]
    for p in sent:
        assert van1.publish("patrol/van-1/events", p) in ACCEPTED
    wait_until(lambda: len(running.got("patrol/van-1/events")) == 3, 5, "the running half")
    back = connect(clients, broker, account="office-collector", client_id="col-b",
                   session_s=3600)
    wait_until(lambda: len(back.got("patrol/van-1/events")) == 3, 5, "the absent half")
    time.sleep(0.3)
    assert sorted(running.got("patrol/van-1/events") + back.got("patrol/van-1/events")) == sent
    assert len(running.got("patrol/van-1/events")) == 3


# --- connecting ----------------------------------------------------------------------------

def test_who_cannot_connect(broker: FleetBroker, clients: list[Client]) -> None:
    pki = broker.pki
    # A certificate from another CA, with a fleet unit's CN.
    assert refused(connect(clients, broker, cert="van-2", certs_dir=pki["rogue_units"]))
    # No certificate on the units' listener, even with the office's password.
    assert refused(connect(clients, broker, port=broker.certs))
    assert refused(connect(clients, broker, account="office-fleet", port=broker.certs))
    # A unit's account on the office's listener; the office's on the units'.
    assert refused(connect(clients, broker, account="van-3", port=broker.office))
    assert refused(connect(clients, broker, account="office-collector", port=broker.passwords))
    # A unit's certificate where a password is asked; a wrong password; anonymous.
    assert refused(connect(clients, broker, cert="van-1", port=broker.office))
    assert refused(connect(clients, broker, account="office-fleet", password="guess"))
    assert refused(connect(clients, broker, port=broker.office))
    assert refused(connect(clients, broker, port=broker.passwords))
    # And the right ones can.
    assert connect(clients, broker, cert="van-2").connected
    assert connect(clients, broker, account="van-3").connected
    assert connect(clients, broker, account="office-fleet").connected


def test_revoking_a_unit(broker: FleetBroker, clients: list[Client], tmp_path: Path,
                         pki: dict[str, Path]) -> None:
    """As docs/broker.md says: the CRL refuses its next connection once the broker has
    reloaded; a deny line in the ACL refuses what it sends at once, still connected."""
    ca = tmp_path / "ca"
    shutil.copytree(pki["ca"], ca)  # the module's CA stays as it was for other tests
    van2 = connect(clients, broker, cert="van-2")
    assert van2.publish("patrol/van-2/events") in ACCEPTED
    assert van2.publish("patrol/van-2/status", b"online", retain=True) in ACCEPTED

    out = make_ca("--dir", ca, "revoke-unit", "van-2").stdout
    assert "van-2: 1 certificate(s) revoked" in out
    shutil.copy(ca / "crl.pem", broker.etc / "crl.pem")
    with (broker.etc / "acl").open("a") as f:
        f.write("\nuser van-2\ntopic deny #\n")
    broker.reload()
    assert van2.connected  # Mosquitto does not drop a connection it already accepted
    assert van2.publish("patrol/van-2/events") == NOT_AUTHORIZED
    assert refused(connect(clients, broker, cert="van-2"))
    van1 = connect(clients, broker, cert="van-1")
    assert van1.publish("patrol/van-1/events") in ACCEPTED
    assert van1.publish("patrol/van-1/status", b"online", retain=True) in ACCEPTED
    # check_retain_source: its retained status is no longer handed out.
    fleet = connect(clients, broker, account="office-fleet")
    fleet.subscribe("patrol/+/status")
    fleet.wait_for("patrol/van-1/status", b"online")
    time.sleep(0.3)
    assert fleet.got("patrol/van-2/status") == []

    make_ca("--dir", ca, "remove-account", "van-3")
    shutil.copy(ca / "units.passwd", broker.etc / "units.passwd")
    broker.reload()
    assert refused(connect(clients, broker, account="van-3", password=(
        pki["ca"] / "accounts" / "van-3.password").read_text().strip()))


def test_make_ca_signs_only_a_unit(pki: dict[str, Path], tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    shutil.copytree(pki["ca"], ca)
    for cn in ("office-fleet", "office-collector", "fleet", "van*1"):
        key = tmp_path / "k.pem"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", str(key)], check=True,
                       capture_output=True)
        csr = tmp_path / "x.csr"
        subprocess.run(["openssl", "req", "-new", "-key", str(key), "-subj",
                        f"/O=patrol/CN={cn}", "-out", str(csr)], check=True,
                       capture_output=True)
        r = make_ca("--dir", ca, "sign-unit", csr, check=False)
        assert r.returncode == 2 and "make-ca.sh:" in r.stderr, (cn, r.stdout)
        assert not (ca / "units" / f"{cn}.crt").exists()
    r = make_ca("--dir", ca, "account", "fleet", check=False)
    assert r.returncode == 2
    # A second `ca` keeps the CA: a new one would lock out every unit.
    before = (ca / "ca.pem").read_bytes()
    assert "unchanged" in make_ca("--dir", ca, "ca").stdout
    assert (ca / "ca.pem").read_bytes() == before
    assert oct((ca / "ca.key").stat().st_mode & 0o777) == "0o600"
    assert os.access(ca / "crl.pem", os.R_OK)
