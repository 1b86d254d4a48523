"""MQTT uplink: delivers the outbox to the broker, at least once.

One thread owns the paho client and drives it with ``client.loop()``, so paho's
callbacks, our publishing and our SQLite bookkeeping all happen on that thread:
no locks, no queue between the PUBACK and the "delivered" mark.

Delivery rules (the contract in docs/mqtt.md):

* Each event is two or three QoS 1 messages: its redacted JPEG on
  ``images/{id}``, the object's crop on ``images/{id}/crop`` if it has one, then
  its JSON on ``events`` (last, so that a receiver holding the JSON can expect
  the pictures). The event is marked delivered only when the broker has
  acknowledged all of them (paho's ``on_publish`` for those message ids, with a
  success reason code), never when ``publish()`` returns.
* At most ``mqtt.inflight_window`` events are unacknowledged at once.
* On every (re)connect, whatever paho still held unacknowledged is dropped and
  sent again from the store; the store, not paho's memory, is the truth, so a
  restart of the process behaves exactly like a reconnect.
* A backlog is sent oldest first, but half the window is kept for events
  committed since the connection came up, so a unit coming out of a dead zone
  reports what it sees now while the backlog drains.
* Reconnects use capped exponential backoff with jitter, so a fleet that loses
  its broker does not come back in lockstep.
* Control (agent/control.py): on every connection it subscribes to the unit's control
  topics and hands what arrives to ``on_control`` (which must not block); what the
  control stage answers it publishes with :meth:`Uplink.send`, and a retained answer
  again on every reconnect. These are answers, not findings: they are not in the outbox.
* It ends one of two ways. :meth:`Uplink.finish` (nothing more will be committed:
  a replay, ``run --until-drained``) delivers what is pending and returns.
  :meth:`Uplink.stop` (SIGTERM) goes on delivering for ``mqtt.stop_delivery_s``
  at most, then publishes the retained ``offline`` status and disconnects; what
  is left stays pending in the outbox for the next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.backoff import Backoff
from agent.config import Config, MqttConfig, TlsConfig
from agent.link import MB, LinkReport, Meter, periods
from agent.records import EVENT_SCHEMA_VERSION, ControlMessage, iso_utc
from agent.stages import Heartbeat
from agent.store import Store, StoredEvent
from agent.timings import StageTimes
from agent.topics import Topics

log = logging.getLogger("uplink")

# How often the outbox is polled for events added by another process (the CLI,
# a second agent after a crash); events added in-process wake the uplink at once.
POLL_INTERVAL_S = 0.5
# A rejected publish (e.g. an ACL denies the topic) is retried this much later.
REJECT_RETRY_S = 60.0
# After the last delivery, wait this long for the broker to acknowledge "offline".
OFFLINE_GRACE_S = 1.0


class UplinkError(Exception):
    """The uplink cannot be set up from this config; the message says why."""


def build_tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSLContext for the broker, or UplinkError naming the file that is wrong."""
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (ssl.SSLError, OSError) as e:
        raise UplinkError(f"mqtt.tls.ca_file = {str(tls.ca_file)!r}: not a usable CA file ({e})"
                          ) from None
    if tls.cert_file and tls.key_file:
        pw = tls.key_password.get_secret_value() if tls.key_password else None
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file), password=pw)
        except (ssl.SSLError, OSError) as e:
            raise UplinkError(
                f"mqtt.tls.cert_file / key_file ({tls.cert_file}, {tls.key_file}): cannot load the "
                f"client certificate and key ({e}); check the files and the key passphrase"
            ) from None
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def event_message(stored: StoredEvent, device_id: str, topics: Topics,
                  image_held: bool = False) -> dict[str, Any]:
    """The JSON published on ``{root}/{dev}/events`` (schema in docs/mqtt.md);
    ``image_held``: the full picture does not come with it but later (a metered link)."""
    ev = stored.event
    pos = None
    if ev.position is not None:
        pos = {"lat": ev.position.lat, "lon": ev.position.lon,
               "accuracy_m": ev.position.accuracy_m, "source": ev.position.source}
    return {
        "schema": EVENT_SCHEMA_VERSION,
        "id": ev.id,
        "device": device_id,
        "captured_at": iso_utc(ev.captured_utc),
        "label": ev.label,
        "score": round(ev.score, 4),
        "bbox": list(ev.bbox),
        "position": pos,
        "model": ev.model,
        "config_version": ev.config_version,
        # null once evicted to keep the outbox within its quota (store.quota_mb): the
        # finding is still reported, without its pictures.
        "image": None if not ev.image_jpeg else {
            "topic": topics.image(ev.id), "content_type": "image/jpeg",
            "bytes": len(ev.image_jpeg), "sha256": stored.image_sha256,
            **({"held": True} if image_held else {})},
        # null, not absent, when there is no crop (stored before crops existed, or it
        # failed to encode): the receiver must not wait for one that will never come.
        "crop": None if ev.crop_jpeg is None else {
            "topic": topics.crop(ev.id), "content_type": "image/jpeg",
            "bytes": len(ev.crop_jpeg), "sha256": stored.crop_sha256},
        "attributes": ev.attributes,
    }


@dataclass
class UplinkStats:
    """What health reporting and the CLI show about delivery."""

    connected: bool = False
    delivered: int = 0
    published: int = 0
    reconnects: int = 0
    rejected: int = 0
    inflight: int = 0
    last_error: str = ""
    puback_ms: float | None = None
    """How long the broker took to acknowledge the last event (its round trip)."""


@dataclass
class _InFlight:
    event_id: str
    mids: set[int] = field(default_factory=set)
    sent_mono: float = field(default_factory=time.monotonic)
    image_held: bool = False
    """Delivered without its full picture, which waits in the outbox."""


class Uplink:
    """Delivers events from the outbox at ``store_path`` to the configured broker."""

    def __init__(self, cfg: Config, store_path: str | Path | None = None,
                 status: dict[str, Any] | None = None,
                 clock_trusted: Callable[[], bool] = lambda: True,
                 on_control: Callable[[ControlMessage], None] | None = None,
                 subscriptions: Sequence[str] = ()) -> None:
        """``clock_trusted``: whether the system clock can be trusted now; retention is
        counted on it, so delivered findings are pruned only then. ``on_control`` gets
        each message on ``subscriptions`` (on the uplink's thread; it must not block)."""
        if cfg.mqtt is None:
            raise UplinkError("no [mqtt] section in the config: nowhere to deliver to")
        self.cfg = cfg
        self.mq: MqttConfig = cfg.mqtt
        self.store_path = Path(store_path or cfg.store.path)
        self.topics = Topics(self.mq.root, cfg.device.id)
        self.stats = UplinkStats()
        self.heartbeat = Heartbeat()
        self.times: StageTimes | None = None
        """Set by the pipeline: delivery latencies (agent/timings.py)."""
        self.clock_trusted = clock_trusted
        self._said_untrusted = False
        self.on_control = on_control
        self.subscriptions = list(subscriptions)
        # Answers for the control stage: published when connected, the retained ones again
        # on every reconnect (the broker may have lost them, or they came while offline).
        # (topic, payload, QoS, retain, MQTT 5 correlation data)
        self._outgoing: deque[tuple[str, bytes, int, bool, bytes | None]] = deque(maxlen=200)
        self._sticky: dict[str, bytes] = {}
        self._out_lock = threading.Lock()
        self._status_extra = dict(status or {})
        self._wake = threading.Event()
        self._tls = build_tls_context(self.mq.tls) if self.mq.tls else None
        self._client = self._make_client()
        self._inflight: dict[str, _InFlight] = {}
        self._mid_event: dict[int, str] = {}
        self._acked: list[str] = []
        self._acked_held: set[str] = set()
        self.meter = Meter(cfg.link)
        self.link = LinkReport()
        """The meter's view, for telemetry and status (refreshed by the uplink's thread)."""
        self._mid_image: dict[int, str] = {}  # held pictures in flight: mid -> event id
        self._images_acked: list[str] = []
        self._image_requests: deque[str] = deque(maxlen=100)  # send-image, from any thread
        self._recheck_link = False
        self._used = (0, 0)  # bytes counted today and this month (refreshed from the outbox)
        self._unsaved_bytes = 0
        self._held: dict[str, float] = {}  # event id -> monotonic time to retry a rejected one
        self._stop = threading.Event()
        self._stop_by = float("inf")  # monotonic deadline for delivery once stopping
        self._finish = threading.Event()
        self._connected = False
        self._socket_open = False
        self._connect_started = 0.0
        self._connected_at = datetime.now(UTC)

    # --- public -----------------------------------------------------------

    def notify(self) -> None:
        """Tell the uplink that new events were committed (from any thread)."""
        self._wake.set()

    def send(self, topic: str, payload: bytes, retain: bool = False,
             correlation_data: bytes | None = None) -> None:
        """Publish an answer (QoS 1) as soon as connected (from any thread). Not durable:
        a retained one is published again on every reconnect; the 200 newest wait."""
        with self._out_lock:
            self._outgoing.append((topic, payload, 1, retain, correlation_data))
            if retain:
                self._sticky[topic] = payload
        self._wake.set()

    def send_now(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 0, retained, if connected now, else not at all (telemetry: a
        stale report is noise, and the newest stays on the broker for ``fleet status``).
        From any thread; False when not connected."""
        if not self.stats.connected:
            return False
        with self._out_lock:
            self._outgoing.append((topic, payload, 0, True, None))
        self._wake.set()
        return True

    def reconfigure(self, cfg: Config) -> None:
        """A new config in force whose [mqtt] is the same (a new [mqtt] needs a new
        Uplink): retention as it now says, and the retained status saying its version."""
        self.cfg = cfg
        self.meter.cfg = cfg.link
        self._recheck_link = True  # link.cheap_interfaces may have changed
        self._status_extra["model"] = cfg.detector.model.stem
        with self._out_lock:
            self._outgoing.append((self.topics.status, self._status_payload("online"), 1,
                                   True, None))
        self._wake.set()

    def request_image(self, event_id: str) -> None:
        """The office asked for a finding's full picture (send-image): it goes as soon as
        connected, whatever link.images says (from any thread)."""
        self._image_requests.append(event_id)
        self._wake.set()

    def finish(self) -> None:
        """Nothing more will be committed: deliver what is pending, then return (any thread)."""
        self._finish.set()
        self._wake.set()

    def stop(self, grace_s: float | None = None) -> None:
        """Deliver for ``grace_s`` more at most (default ``mqtt.stop_delivery_s``), then
        say offline and return (any thread). What is left stays in the outbox."""
        grace = self.mq.stop_delivery_s if grace_s is None else grace_s
        self._stop_by = min(self._stop_by, time.monotonic() + grace)
        self._stop.set()
        self._wake.set()

    def run(self, until_drained: bool = False) -> None:
        """Deliver until :meth:`stop`, or until the outbox is empty once :meth:`finish`
        was called (``until_drained``: at once)."""
        if until_drained:
            self._finish.set()
        store = Store(self.store_path, synchronous="NORMAL")
        backoff = Backoff(self.mq.reconnect_min_s, self.mq.reconnect_max_s)
        next_attempt = 0.0
        next_poll = 0.0
        next_prune = 0.0
        try:
            while True:
                self.heartbeat.beat()
                now = time.monotonic()
                if self._stop.is_set() and (now >= self._stop_by or not self._connected
                                            or self._drained(store)):
                    return
                if not self._socket_open:
                    if now < next_attempt:
                        self._wait(min(next_attempt - now, 0.5))
                        continue
                    if not self._try_connect():
                        next_attempt = time.monotonic() + self._schedule_retry(backoff)
                    continue

                rc = self._client.loop(timeout=0.05)
                self._flush_acks(store)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._on_lost(rc)
                    next_attempt = time.monotonic() + self._schedule_retry(backoff)
                    continue
                if not self._connected:
                    if now - self._connect_started > self.mq.connect_timeout_s:
                        self.stats.last_error = "no CONNACK from broker in time"
                        log.warning("broker %s did not answer the MQTT handshake within %.0f s",
                                    self._where(), self.mq.connect_timeout_s)
                        self._drop_socket()
                        next_attempt = time.monotonic() + self._schedule_retry(backoff)
                    continue
                backoff.reset()

                self._send_answers()
                if self._wake.is_set() or now >= next_poll:
                    self._wake.clear()
                    next_poll = now + POLL_INTERVAL_S
                    self._fill_window(store)
                    if self._finish.is_set() and self._drained(store):
                        log.info("outbox drained: every event is delivered")
                        return
                retention = timedelta(hours=self.cfg.store.retention_hours)  # may change
                if retention > timedelta(0) and now >= next_prune:
                    next_prune = now + self.cfg.store.prune_interval_s
                    self._prune(store, retention)
        finally:
            self._shutdown(store)
            store.close()

    def _prune(self, store: Store, retention: timedelta) -> None:
        if not self.clock_trusted():
            if not self._said_untrusted:
                self._said_untrusted = True
                log.info("the system clock is not trusted yet (no GPS fix, no NTP): "
                         "delivered findings are kept until it is")
            return
        if n := store.prune(retention):
            log.info("pruned %d delivered events older than %s", n, retention)

    def _wait(self, seconds: float) -> None:
        """Sleep while disconnected; a stop or a finish cuts it short."""
        if self._stop.is_set():
            return
        self._wake.wait(seconds)
        self._wake.clear()

    def _drained(self, store: Store) -> bool:
        """Nothing in flight and nothing left it could send (rows it cannot read back are
        not waited for: they stay pending in the outbox)."""
        return not self._inflight and store.counts()["pending"] <= len(store.unreadable)

    # --- connection -------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        v5 = self.mq.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.cfg.mqtt_client_id(),
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        # Our window is the limit; paho's own must not be the smaller one
        # (up to three messages an event: image, crop, JSON; plus the status).
        client.max_inflight_messages_set(3 * self.mq.inflight_window + 2)
        client.connect_timeout = self.mq.connect_timeout_s
        if self.mq.username:
            pw = self.mq.password.get_secret_value() if self.mq.password else None
            client.username_pw_set(self.mq.username, pw)
        if self._tls is not None:
            client.tls_set_context(self._tls)
            if self.mq.tls and self.mq.tls.insecure_skip_verify:
                client.tls_insecure_set(True)
                log.warning("TLS certificate checks are OFF (mqtt.tls.insecure_skip_verify)")
        client.will_set(self.topics.status, self._status_payload("offline"), qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _where(self) -> str:
        scheme = "mqtts" if self._tls else "mqtt"
        return f"{scheme}://{self.mq.host}:{self.mq.effective_port}"

    def _try_connect(self) -> bool:
        try:
            props = None
            if self.mq.protocol == "5":
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 0
            self._client.connect(self.mq.host, self.mq.effective_port,
                                 keepalive=self.mq.keepalive_s,
                                 clean_start=True if self.mq.protocol == "5"
                                 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                 properties=props)
        except ssl.SSLCertVerificationError as e:
            self._connect_failed(
                f"TLS: the broker's certificate is not trusted ({e.verify_message}); "
                f"check mqtt.tls.ca_file ({self.mq.tls.ca_file if self.mq.tls else None}) "
                f"and that mqtt.host matches the certificate")
            return False
        except ssl.SSLError as e:
            self._connect_failed(f"TLS handshake failed: {e.reason or e}")
            return False
        except OSError as e:
            self._connect_failed(f"{e.strerror or e}")
            return False
        self._socket_open = True
        self._connect_started = time.monotonic()
        return True

    def _connect_failed(self, why: str) -> None:
        self.stats.last_error = why
        log.warning("cannot connect to broker %s: %s", self._where(), why)

    def _schedule_retry(self, backoff: Backoff) -> float:
        delay = backoff.next_delay()
        log.info("next connection attempt in %.1f s", delay)
        return delay

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self.stats.last_error = f"broker refused the connection: {reason}"
            log.error("broker %s refused the connection: %s", self._where(), reason)
            return
        # The store is the truth: forget what paho would resend by itself and
        # send every unacknowledged event again from the outbox.
        dropped = client.drop_out_messages()
        resend = len(self._inflight)
        self._inflight.clear()
        self._mid_event.clear()
        self._mid_image.clear()
        self.meter.on_connect(client.socket())
        if self.meter.interface is not None:
            log.info("the broker is reached through %s: %s", self.meter.interface,
                     "a cheap link (held pictures go, nothing is counted)"
                     if self.meter.cheap else "a metered link")
        self._connected = True
        self._connected_at = datetime.now(UTC)
        self.stats.connected = True
        self.stats.inflight = 0
        if self.stats.reconnects or resend:
            log.info("reconnected to broker %s; re-sending %d unacknowledged events",
                     self._where(), resend)
        else:
            log.info("connected to broker %s (MQTT %s)", self._where(), self.mq.protocol)
        self.stats.reconnects += 1
        del dropped
        # Subscribed before it says online: the broker takes one client's packets in order,
        # so an office that sends a command on seeing "online" finds the unit listening.
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        client.publish(self.topics.status, self._status_payload("online"), qos=1, retain=True)
        with self._out_lock:  # the retained answers, again: the broker may have lost them
            queued = {t for t, _, _, retain, _ in self._outgoing if retain}
            self._outgoing.extend((t, p, 1, True, None) for t, p in self._sticky.items()
                                  if t not in queued)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.on_control is None:
            return
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        self.on_control(ControlMessage(msg.topic, bytes(msg.payload), bool(msg.retain),
                                       bytes(corr) if corr is not None else None))

    def _send_answers(self) -> None:
        while True:
            with self._out_lock:
                if not self._outgoing:
                    return
                item = self._outgoing.popleft()
            topic, payload, qos, retain, corr = item
            if topic == self.topics.telemetry:
                if not self.meter.allows("telemetry", len(payload), *self._used):
                    self.meter.telemetry_skipped += 1  # the next one is fresher anyway
                    continue
                self._spend(len(payload) + len(topic))
            props = None
            if corr is not None and self.mq.protocol == "5":
                props = Properties(PacketTypes.PUBLISH)
                props.CorrelationData = corr
            info = self._client.publish(topic, payload, qos=qos, retain=retain,
                                        properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                with self._out_lock:  # not now: first in line next time
                    self._outgoing.appendleft(item)
                return

    def _on_lost(self, rc: MQTTErrorCode) -> None:
        was = self._connected
        self._drop_socket()
        if was:
            self.stats.last_error = f"connection lost: {mqtt.error_string(rc)}"
            log.warning("lost the broker %s: %s; %d events unacknowledged will be re-sent",
                        self._where(), mqtt.error_string(rc), len(self._inflight))
        elif not self.stats.last_error.startswith("broker refused"):
            self.stats.last_error = f"connection failed: {mqtt.error_string(rc)}"
            log.warning("cannot connect to broker %s: %s", self._where(), mqtt.error_string(rc))

    def _drop_socket(self) -> None:
        self._connected = False
        self._socket_open = False
        self.stats.connected = False
        with contextlib.suppress(Exception):  # the socket may already be gone
            self._client.disconnect()
        sock = self._client.socket()
        if sock is not None:
            sock.close()

    def _status_payload(self, state: str) -> bytes:
        body = {"state": state, "device": self.cfg.device.id, "agent_version": __version__,
                "config_version": self.cfg.version, "config_hash": self.cfg.content_hash(),
                **self._status_extra}
        return json.dumps(body, sort_keys=True).encode()

    # --- delivery ---------------------------------------------------------

    def _spend(self, nbytes: int) -> None:
        """Count bytes sent: the rate limit's bucket, and the budgets (a cheap link's are
        not counted). Counted in the outbox by :meth:`_fill_window`'s store."""
        self.meter.spent(nbytes)
        if self.meter.counts():
            self._unsaved_bytes += nbytes
            day, month = self._used
            self._used = (day + nbytes, month + nbytes)

    def _refresh_usage(self, store: Store) -> None:
        if self._unsaved_bytes:
            store.add_link_usage(list(periods()), self._unsaved_bytes)
            self._unsaved_bytes = 0
        day, month = periods()
        self._used = (store.link_usage(day), store.link_usage(month))
        held = store.held_image_count()
        self.link = LinkReport(
            cheap=self.meter.cheap, interface=self.meter.interface,
            used_mb_today=round(self._used[0] / MB, 3),
            used_mb_month=round(self._used[1] / MB, 3), images_held=held,
            telemetry_skipped=self.meter.telemetry_skipped,
            holding=self.meter.holding(*self._used, held))

    def _send_images(self, store: Store) -> None:
        """Held pictures: the ones the office asked for, then (findings first) the rest
        as link.images and the budget allow."""
        busy = set(self._mid_image.values())
        while self._image_requests and self.meter.rate_ok():
            event_id = self._image_requests.popleft()
            stored = store.get(event_id)
            if stored is not None and stored.event.image_jpeg and event_id not in busy:
                self._publish_image(event_id, stored.event.image_jpeg)
                busy.add(event_id)
        mode = self.cfg.link.images
        if mode == "on_request" or (mode == "cheap_link" and not self.meter.cheap):
            return
        if not self.link.images_held:  # (just counted): nothing to read from the outbox
            return
        if self._inflight or store.pending(1, exclude=set(self._held)):
            return  # findings first
        room = max(0, self.mq.inflight_window - len(self._mid_image))
        for event_id, jpeg, _ in store.held_images(room, exclude=busy):
            if not self.meter.rate_ok() or not self.meter.allows("image", len(jpeg),
                                                                 *self._used):
                return
            self._publish_image(event_id, jpeg)

    def _publish_image(self, event_id: str, jpeg: bytes) -> None:
        props = None
        if self.mq.protocol == "5":
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = "image/jpeg"
        topic = self.topics.image(event_id)
        info = self._client.publish(topic, jpeg, qos=1, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._mid_image[info.mid] = event_id
            self._spend(len(jpeg) + len(topic))

    def _fill_window(self, store: Store) -> None:
        if self._recheck_link:
            self._recheck_link = False
            was = self.meter.cheap
            self.meter.on_connect(self._client.socket())
            if self.meter.cheap != was:
                log.info("the broker is reached through %s: %s", self.meter.interface,
                         "a cheap link (held pictures go, nothing is counted)"
                         if self.meter.cheap else "a metered link")
        self._refresh_usage(store)
        self._fill_events(store)
        self._send_images(store)

    def _fill_events(self, store: Store) -> None:
        slots = self.mq.inflight_window - len(self._inflight)
        if slots <= 0:
            return
        now = time.monotonic()
        busy = set(self._inflight) | {i for i, t in self._held.items() if t > now}
        self._held = {i: t for i, t in self._held.items() if t > now}
        # Up to half the window for what was committed since this connection came
        # up (what the unit sees now); the rest drains the backlog, oldest first.
        live = store.pending(max(1, slots // 2), exclude=busy, created_since=self._connected_at)
        backlog = store.pending(slots - len(live), exclude=busy | {s.event.id for s in live})
        batch = backlog + live
        sent = []
        for item in batch:
            if not self.meter.rate_ok():
                break  # the rate limit: the rest when the bucket has refilled
            if self._publish_event(item):
                sent.append(item.event.id)
            else:
                break
        store.mark_attempted(sent)

    def _publish_event(self, item: StoredEvent) -> bool:
        ev = item.event
        v5 = self.mq.protocol == "5"
        img_props = json_props = None
        if v5:
            img_props = Properties(PacketTypes.PUBLISH)
            img_props.ContentType = "image/jpeg"
            json_props = Properties(PacketTypes.PUBLISH)
            json_props.ContentType = "application/json"
        # Findings first: the event and its crop, within the budget; the full picture
        # with them only while link.images and the budget allow, else it waits.
        finding_bytes = 600 + (len(ev.crop_jpeg) if ev.crop_jpeg is not None else 0)
        if not self.meter.allows("finding", finding_bytes, *self._used):
            return False  # a budget is used up: it waits in the outbox
        mode = self.cfg.link.images
        with_image = bool(ev.image_jpeg) and (
            self.meter.cheap or (mode == "always" and self.meter.allows(
                "image", finding_bytes + len(ev.image_jpeg), *self._used)))
        image_held = bool(ev.image_jpeg) and not with_image
        body = json.dumps(event_message(item, self.cfg.device.id, self.topics, image_held),
                          separators=(",", ":")).encode()
        messages = []
        if with_image:
            messages.append((self.topics.image(ev.id), ev.image_jpeg, img_props))
        if ev.crop_jpeg is not None:
            messages.append((self.topics.crop(ev.id), ev.crop_jpeg, img_props))
        messages.append((self.topics.events, body, json_props))
        # One entry for all of them: the event is delivered when every mid is acked.
        entry = _InFlight(ev.id, image_held=image_held)
        for topic, payload, props in messages:
            info = self._client.publish(topic, payload, qos=1, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                log.debug("publish of %s refused locally: %s", ev.id, mqtt.error_string(info.rc))
                for mid in entry.mids:  # acks of a half-sent event must not count
                    self._mid_event.pop(mid, None)
                return False
            entry.mids.add(info.mid)
            self._mid_event[info.mid] = ev.id
            self._spend(len(payload) + len(topic))
        self._inflight[ev.id] = entry
        self.stats.published += 1
        self.stats.inflight = len(self._inflight)
        return True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason: ReasonCode, props: Any) -> None:
        if (image_of := self._mid_image.pop(mid, None)) is not None:
            if not reason.is_failure:
                self._images_acked.append(image_of)
            return
        event_id = self._mid_event.pop(mid, None)
        if event_id is None:
            return  # the status message, or an ack from before a reconnect
        entry = self._inflight.get(event_id)
        if entry is None:
            return
        if reason.is_failure:
            # MQTT 5 lets the broker say no (e.g. not authorised): not delivered.
            self.stats.rejected += 1
            self.stats.last_error = f"broker rejected event {event_id}: {reason}"
            log.error("broker rejected event %s: %s; will retry in %.0f s",
                      event_id, reason, REJECT_RETRY_S)
            for m in entry.mids:
                self._mid_event.pop(m, None)
            del self._inflight[event_id]
            self._held[event_id] = time.monotonic() + REJECT_RETRY_S
            return
        entry.mids.discard(mid)
        if not entry.mids:
            del self._inflight[event_id]
            self._acked.append(event_id)
            if entry.image_held:
                self._acked_held.add(event_id)
            self.stats.puback_ms = round((time.monotonic() - entry.sent_mono) * 1000, 1)
            if self.times is not None:
                self.times.add("publish_to_puback", self.stats.puback_ms)
                self.times.end(event_id, "capture_to_puback", forget=True)

    def _flush_acks(self, store: Store) -> None:
        if self._images_acked:
            images, self._images_acked = self._images_acked, []
            store.mark_images_sent(images)
            log.debug("broker acknowledged %d held pictures", len(images))
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        held, self._acked_held = self._acked_held, set()
        store.mark_delivered(acked, images_held=held)
        self.stats.delivered += len(acked)
        self.stats.inflight = len(self._inflight)
        log.debug("broker acknowledged %d events", len(acked))
        self._wake.set()  # room in the window

    def _shutdown(self, store: Store) -> None:
        if not self._connected:
            self._drop_socket()
            return
        pending = store.counts()["pending"]
        if self._stop.is_set() and pending:
            log.warning("stopping with %d events not yet delivered; they stay in the outbox "
                        "for the next start", pending)
        try:
            self._send_answers()  # e.g. the answer to the restart command that stops us
            info = self._client.publish(self.topics.status, self._status_payload("offline"),
                                        qos=1, retain=True)
            deadline = time.monotonic() + OFFLINE_GRACE_S
            while not info.is_published() and time.monotonic() < deadline:
                if self._client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
                self._flush_acks(store)
            self._client.disconnect()
            self._client.loop(timeout=0.05)
        finally:
            self._flush_acks(store)
            self._drop_socket()
        log.info("disconnected from broker %s", self._where())
