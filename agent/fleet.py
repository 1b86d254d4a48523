"""The office's side of managing units: ``patrol-agent fleet keygen | push-config |
command | status``, over the same MQTT topics the units use (docs/mqtt.md).

- ``keygen`` makes the office's Ed25519 key pair: the private key stays in the office,
  the public key goes into every unit's ``control.trusted_keys``.
- ``push-config (--device ID | --fleet) FILE.toml [--key K]`` publishes a desired config,
  retained and signed when a key is given, then waits for each unit's report on
  ``config/reported`` and prints it. Its exit code is 0 only if every unit accepted.
- ``command DEVICE NAME [KEY=VALUE ...] [--key K]`` sends a command (signed, with a
  request id and an expiry) and prints the unit's answer.
- ``status`` reads the retained status, config report and telemetry of every unit and
  prints one line per unit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import sys
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.records import parse_iso_utc
from agent.signing import (
    expiry_in,
    new_private_key,
    public_key_text,
    read_private_key,
    sign,
    write_private_key,
)
from agent.topics import Topics

DEFAULT_COMMAND_LIFETIME_S = 300.0


class FleetError(Exception):
    """What stops a fleet command; the message says what to do."""


@dataclass
class Message:
    topic: str
    payload: bytes
    retained: bool
    correlation_data: bytes | None = None


@dataclass
class Office:
    """An MQTT 5 connection as the office: publish, and collect what arrives."""

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    inbox: queue.Queue[Message] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url if "://" in self.url else f"mqtt://{self.url}")
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise FleetError(f"--broker {self.url}: expected mqtt://HOST[:PORT] or "
                             "mqtts://HOST[:PORT]")
        tls = parts.scheme == "mqtts"
        self.host, self.port = parts.hostname, parts.port or (8883 if tls else 1883)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"patrol-fleet-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if self.username:
            self.client.username_pw_set(self.username, self.password)
        if tls:
            self.client.tls_set(ca_certs=self.ca_file)
        self.client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        self.inbox.put(Message(msg.topic, bytes(msg.payload), bool(msg.retain),
                               bytes(corr) if corr is not None else None))

    def __enter__(self) -> Office:
        try:
            rc = self.client.connect(self.host, self.port, keepalive=30)
        except OSError as e:
            raise FleetError(f"cannot reach the broker at {self.host}:{self.port}: {e}") \
                from None
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise FleetError(f"cannot connect to {self.host}:{self.port}: "
                             f"{mqtt.error_string(rc)}")
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            if time.monotonic() > deadline:
                self.client.loop_stop()
                raise FleetError(f"the broker at {self.host}:{self.port} did not accept the "
                                 "connection within 10 s (credentials?)")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, *topics: str) -> None:
        for t in topics:
            info = self.client.subscribe(t, qos=1)
            if info[0] != mqtt.MQTT_ERR_SUCCESS:
                raise FleetError(f"cannot subscribe to {t}")

    def publish(self, topic: str, body: bytes, retain: bool = False,
                correlation_data: bytes | None = None) -> None:
        props = None
        if correlation_data is not None:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation_data
        info = self.client.publish(topic, body, qos=1, retain=retain, properties=props)
        info.wait_for_publish(10)
        if not info.is_published():
            raise FleetError(f"the broker did not take the message on {topic}")

    def collect(self, seconds: float, until: Any = None) -> list[Message]:
        """Messages for ``seconds``, or until ``until(messages)`` is true."""
        got: list[Message] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(queue.Empty):
                got.append(self.inbox.get(timeout=min(left, 0.2)))
            if until is not None and until(got):
                break
        return got


def _office(args: argparse.Namespace) -> Office:
    password = os.environ.get("PATROL_MQTT_PASSWORD")
    if args.password_file:
        try:
            password = Path(args.password_file).read_text().strip()
        except OSError as e:
            raise FleetError(f"--password-file {args.password_file}: {e}") from None
    return Office(args.broker, args.username, password, args.ca_file)


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _key(args: argparse.Namespace) -> Any:
    if not args.key:
        return None
    try:
        return read_private_key(Path(args.key))
    except ValueError as e:
        raise FleetError(str(e)) from None


def _devices(office: Office, root: str, wait_s: float) -> dict[str, dict[str, Any]]:
    """Every unit the broker knows of, by its retained status: {device: status}."""
    office.subscribe(f"{root}/+/status")
    found = {}
    for m in office.collect(wait_s):
        parts = m.topic.split("/")
        dev = parts[1] if len(parts) == 3 and parts[2] == "status" else None
        if dev and (body := _json(m.payload)) is not None:
            found[dev] = body
    return found


# --- keygen -------------------------------------------------------------------------------

def cmd_keygen(args: argparse.Namespace) -> int:
    path = Path(args.out)
    key = new_private_key()
    try:
        write_private_key(key, path)
    except FileExistsError:
        raise FleetError(f"{path} exists; a new key would lock out every unit that trusts "
                         "the old one. Choose another --out.") from None
    pub = public_key_text(key.public_key())
    print(f"private key: {path} (keep it in the office; mode 0600)")
    print(f"public key:  {pub}")
    print("on every unit, in agent.toml:")
    print(f'[control]\ntrusted_keys = ["{pub}"]')
    return 0


# --- push-config --------------------------------------------------------------------------

def _read_partial(path: Path) -> tuple[int | None, dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FleetError(f"{path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise FleetError(f"{path}: not TOML ({e})") from None
    version = data.pop("version", None)
    if version is not None and (not isinstance(version, int) or version < 0):
        raise FleetError(f"{path}: version must be a whole number, 0 or more")
    for section, keys in data.items():
        if not isinstance(keys, dict):
            raise FleetError(f"{path}: {section} is not a [section]")
    return version, data


def cmd_push_config(args: argparse.Namespace) -> int:
    version, config = _read_partial(Path(args.file))
    key = _key(args)
    with _office(args) as office:
        root = args.root
        topic = (f"{root}/fleet/config/desired" if args.fleet
                 else Topics(root, args.device).config_desired)
        if version is None:  # one above what the broker holds for that topic
            office.subscribe(topic)
            held = [b for m in office.collect(1.0, lambda got: bool(got))
                    if (b := _json(m.payload))]
            version = int(held[0].get("version", 0)) + 1 if held else 1
        units = ([args.device] if not args.fleet
                 else sorted(_devices(office, root, 1.0)))
        rid = args.request_id or f"push-{uuid.uuid4().hex[:12]}"
        body: dict[str, Any] = {"version": version, "config": config, "request_id": rid}
        if key is not None:
            body = sign(body, key)
        office.subscribe(f"{root}/+/config/reported")
        office.publish(topic, json.dumps(body).encode(), retain=True,
                       correlation_data=rid.encode())
        print(f"published {'fleet' if args.fleet else args.device} config version {version} "
              f"({'signed' if key else 'unsigned'}, request {rid}); waiting up to "
              f"{args.timeout:.0f} s for {len(units)} unit(s)")
        reports: dict[str, dict[str, Any]] = {}

        def all_in(got: list[Message]) -> bool:
            for m in got:
                parts = m.topic.split("/")
                if len(parts) != 4 or parts[2:] != ["config", "reported"]:
                    continue  # e.g. our own document, back from the broker
                r = _json(m.payload)
                if r is not None and r.get("request_id") == rid:
                    reports[parts[1]] = r
            return set(units) <= set(reports)

        office.collect(args.timeout, all_in)
    ok = True
    for dev in units:
        r = reports.get(dev)
        if r is None:
            print(f"{dev}: no report within {args.timeout:.0f} s (offline? it takes the "
                  "retained document when it connects)")
            ok = False
            continue
        in_force = ", ".join(f"{s} {v}" for s, v in r.get("in_force", {}).items()) or "file"
        line = f"{dev}: {r['status']} (in force: {in_force}; hash {r['config_hash'][:12]})"
        if r.get("changed"):
            line += f"; changed {', '.join(r['changed'])}"
        if r.get("restarted"):
            line += f"; restarted {', '.join(r['restarted'])}"
        if r.get("reason"):
            line += f"; {r['reason']}"
        print(line)
        for p in r.get("problems") or []:
            print(f"  {p['key']} = {json.dumps(p.get('value'))}: {p['why']}")
        ok = ok and r["status"] == "accepted"
    return 0 if ok else 1


# --- command ------------------------------------------------------------------------------

def _arg_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # plain words need no quotes


def cmd_command(args: argparse.Namespace) -> int:
    cmd_args = {}
    for item in args.args:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise FleetError(f"{item!r}: arguments are KEY=VALUE")
        cmd_args[name] = _arg_value(value)
    key = _key(args)
    rid = f"cmd-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"request_id": rid, "args": cmd_args}
    if key is not None:
        body["expires_at"] = expiry_in(args.expires)
        body = sign(body, key)
    topics = Topics(args.root, args.device)
    with _office(args) as office:
        office.subscribe(f"{topics.cmd(args.name)}/result")
        office.publish(topics.cmd(args.name), json.dumps(body).encode(),
                       correlation_data=rid.encode())
        answer: list[dict[str, Any]] = []

        def answered(got: list[Message]) -> bool:
            answer[:] = [r for m in got if (r := _json(m.payload)) and
                         r.get("request_id") == rid]
            return bool(answer)

        office.collect(args.timeout, answered)
    if not answer:
        print(f"{args.device}: no answer to {args.name} within {args.timeout:.0f} s",
              file=sys.stderr)
        return 1
    print(json.dumps(answer[0], indent=2))
    return 0 if answer[0].get("ok") else 1


# --- status -------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    root = args.root
    with _office(args) as office:
        office.subscribe(f"{root}/+/status", f"{root}/+/config/reported",
                         f"{root}/+/telemetry")
        got = office.collect(args.wait)
    units: dict[str, dict[str, Any]] = {}
    for m in got:
        parts = m.topic.split("/")
        if len(parts) < 3 or (body := _json(m.payload)) is None:
            continue
        kind = "/".join(parts[2:])
        units.setdefault(parts[1], {})[kind] = body
    if args.json:
        print(json.dumps(units, indent=2, sort_keys=True))
        return 0
    if not units:
        print(f"no units under {root}/ on {office.host}:{office.port}")
        return 1
    now = datetime.now(UTC)
    print(f"{'unit':<16} {'state':<8} {'agent':<8} {'config':<22} {'report':<10} "
          f"{'seen':<9} {'frames/s':>8} {'backlog':>7}  gps / broker")
    for dev in sorted(units):
        u = units[dev]
        s, rep, tel = u.get("status", {}), u.get("config/reported", {}), u.get("telemetry")
        office_cfg = ",".join(f"{k[0]}{v}" for k, v in rep.get("in_force", {}).items())
        cfg = f"v{s.get('config_version', '?')} {str(s.get('config_hash', ''))[:8]}" \
            + (f" {office_cfg}" if office_cfg else "")
        seen = fps = backlog = "-"
        tail = ""
        if tel:
            try:
                seen = f"{(now - parse_iso_utc(tel['at'])).total_seconds():.0f} s ago"
            except (KeyError, ValueError):
                seen = "?"
            fps = f"{tel.get('detector', {}).get('frames_per_s', 0):.1f}"
            backlog = str(tel.get("outbox", {}).get("pending", "-"))
            g, b = tel.get("gps", {}), tel.get("broker", {})
            tail = (f"{g['mode']}D fix" if g.get("fix") else "no fix") if g else "no gps"
            if "puback_ms" in b:
                tail += f" / PUBACK {b['puback_ms']} ms"
            if tel.get("stalled"):
                tail += f" / STALLED {', '.join(tel['stalled'])}"
        print(f"{dev:<16} {s.get('state', '?'):<8} {s.get('agent_version', '?'):<8} "
              f"{cfg:<22} {rep.get('status', '-'):<10} {seen:<9} {fps:>8} {backlog:>7}  "
              f"{tail}")
    return 0


# --- the command line ---------------------------------------------------------------------

def _guarded(fn: Any) -> Any:
    """A fleet command whose FleetError is one line on stderr and exit code 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except FleetError as e:
            print(f"patrol-agent fleet: {e}", file=sys.stderr)
            return 2
    return run


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``fleet`` to the ``patrol-agent`` command."""
    fl = subparsers.add_parser("fleet", help="the office's side: keys, remote config, "
                               "commands and every unit's state, over MQTT")
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--broker", default="mqtt://127.0.0.1:1883",
                      help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (default: local)")
    conn.add_argument("--root", default="patrol", help="the units' mqtt.root")
    conn.add_argument("--username", help="the office's MQTT user")
    conn.add_argument("--password-file", help="its password (or PATROL_MQTT_PASSWORD)")
    conn.add_argument("--ca-file", help="CA certificate for mqtts://")
    sub = fl.add_subparsers(dest="fleet_command", required=True)

    k = sub.add_parser("keygen", help="make the office's signing key pair")
    k.add_argument("--out", default="office.key", help="private key file (default office.key)")
    k.set_defaults(func=_guarded(cmd_keygen))

    p = sub.add_parser("push-config", parents=[conn],
                       help="publish a desired config and print each unit's report")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--device", help="one unit's device.id")
    who.add_argument("--fleet", action="store_true", help="every unit")
    p.add_argument("file", help="TOML with the sections and keys to set (and optionally "
                   "version = N; default: one above the broker's retained document)")
    p.add_argument("--key", help="the office's private key: sign it")
    p.add_argument("--request-id", help="default: a new one")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for reports")
    p.set_defaults(func=_guarded(cmd_push_config))

    c = sub.add_parser("command", parents=[conn], help="send a command to a unit and print "
                       "its answer")
    c.add_argument("device")
    c.add_argument("name", help="ping, flush, snapshot, reload-config, restart, "
                   "purge-delivered")
    c.add_argument("args", nargs="*", help="KEY=VALUE arguments (VALUE as JSON if it is)")
    c.add_argument("--key", help="the office's private key: sign it")
    c.add_argument("--expires", type=float, default=DEFAULT_COMMAND_LIFETIME_S,
                   help="a signed command is void after this many seconds (default 300)")
    c.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    c.set_defaults(func=_guarded(cmd_command))

    s = sub.add_parser("status", parents=[conn], help="every unit's state, versions and last "
                       "telemetry, from the broker's retained messages")
    s.add_argument("--wait", type=float, default=2.0, help="seconds to collect (default 2)")
    s.add_argument("--json", action="store_true", help="everything, as JSON")
    s.set_defaults(func=_guarded(cmd_status))
