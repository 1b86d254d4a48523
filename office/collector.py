"""The collector: every unit's findings, pictures and health, off the broker into the store.

- **Shared subscription, persistent session.** Events and pictures are taken through
  ``$share/{group}/{root}/+/…`` (MQTT 5), so collectors with the same group split the
  fleet between them, and with a fixed client id and a session expiry, so that the broker
  queues what arrives while a collector is down (its share waits in its own queue: the
  others do not take it over). A unit's status, telemetry and config reports are retained,
  and MQTT 5 (4.8.2) gives a shared subscription no retained messages (Mosquitto 2.0 gives
  them anyway; other brokers do not), so those are taken on an ordinary subscription by
  every collector (writing them twice is harmless: the newest replaces).
- **Acknowledged after commit.** Acknowledgement is manual: a message is acknowledged only
  once the store has committed it, so a collector killed mid-stream gets it again. A
  store that fails leaves the message unacknowledged; the collector drops the connection
  and comes back, and the broker sends it again.
- **Bad messages** (:class:`office.messages.BadMessage`) are counted in the store and
  logged (at most a few lines a minute per reason), acknowledged and dropped; nothing a
  unit sends can stop the collector.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from office.config import BrokerConfig, LimitsConfig
from office.messages import BadMessage, Event, Picture, UnitReport, parse
from office.store import Store, StoreError

log = logging.getLogger("collector")

SHARED_KINDS = ("events", "images/+", "images/+/crop")
STATE_KINDS = ("status", "telemetry", "config/reported")
_LOG_PER_MINUTE = 5


class Collector:
    """Runs paho's network loop on its own thread; ``start`` and ``stop``."""

    def __init__(self, broker: BrokerConfig, limits: LimitsConfig, store: Store) -> None:
        self.cfg = broker
        self.limits = limits
        self.store = store
        self.received: Counter[str] = Counter()
        self.bad: Counter[str] = Counter()
        self.duplicates = 0
        self.connected = False
        self.session_present: bool | None = None
        self._logged: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._recover = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="collector", daemon=True)
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                        protocol=mqtt.MQTTv5)
        c.manual_ack_set(True)
        if broker.username:
            c.username_pw_set(broker.username,
                              broker.password.get_secret_value() if broker.password else None)
        if broker.tls:
            c.tls_set(ca_certs=str(broker.tls.ca_file),
                      certfile=str(broker.tls.cert_file) if broker.tls.cert_file else None,
                      keyfile=str(broker.tls.key_file) if broker.tls.key_file else None,
                      tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.reconnect_delay_set(1, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                                  clean_start=False, properties=props)
        self.client.loop_start()
        self._thread.start()
        log.info("collector: connecting to %s as %s (group %s)", self.where,
                 self.cfg.client_id, self.cfg.group)

    def stop(self) -> None:
        self._stop.set()
        self.client.disconnect()
        self.client.loop_stop()
        self._thread.join(timeout=5)

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "broker": self.where,
                "client_id": self.cfg.client_id, "group": self.cfg.group,
                "received": dict(self.received), "bad": dict(self.bad),
                "duplicates": self.duplicates}

    # --- paho callbacks (the network thread) ---------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any,
                    _p: Any) -> None:
        if reason.is_failure:
            log.error("collector: %s refused the connection: %s", self.where, reason)
            return
        self.connected = True
        self.session_present = bool(flags.session_present)
        root, group = self.cfg.root, self.cfg.group
        opts = SubscribeOptions(qos=1)
        topics = [(f"$share/{group}/{root}/+/{k}", opts) for k in SHARED_KINDS]
        topics += [(f"{root}/+/{k}", opts) for k in STATE_KINDS]
        client.subscribe(topics)
        log.info("collector: connected to %s as %s; session %s", self.where,
                 self.cfg.client_id, "resumed" if flags.session_present else "new")

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.connected and not self._stop.is_set():
            log.warning("collector: lost %s (%s); reconnecting", self.where, reason)
        self.connected = False

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self._take(msg.topic, msg.payload)
        except BadMessage as e:
            self.bad[e.reason] += 1
            self._log_bad(msg.topic, e)
            try:
                self.store.count_bad(e.reason, msg.topic, e.detail)
            except StoreError as se:
                log.error("collector: store: %s", se)
        except StoreError as e:
            # Not acknowledged: the broker sends it again once the connection is made anew.
            log.error("collector: store failed on %s: %s; will take it again", msg.topic, e)
            self._recover.set()
            return
        except Exception:  # a bug must not stop the fleet's intake: logged, message kept
            log.exception("collector: unexpected error on %s; will take it again", msg.topic)
            self._recover.set()
            return
        if msg.qos > 0:
            client.ack(msg.mid, msg.qos)

    def _take(self, topic: str, payload: bytes) -> None:
        m = parse(topic, payload, self.cfg.root, max_json=self.limits.max_json_kb * 1024,
                  max_image=self.limits.max_image_kb * 1024)
        if m is None:
            return
        if isinstance(m, Event):
            self.received["events"] += 1
            if not self.store.add_event(m):
                self.duplicates += 1
            else:
                log.debug("collector: %s %s from %s", m.label, m.id, m.device)
        elif isinstance(m, Picture):
            self.received[m.kind + "s"] += 1
            if self.store.add_picture(m) == "duplicate":
                self.duplicates += 1
        elif isinstance(m, UnitReport):
            self.received[m.kind] += 1
            self.store.add_report(m)

    def _log_bad(self, topic: str, e: BadMessage) -> None:
        now = time.monotonic()
        since, n = self._logged.get(e.reason, (now, 0))
        if now - since > 60:
            if n > _LOG_PER_MINUTE:
                log.warning("collector: %d more bad messages (%s) not logged", n - _LOG_PER_MINUTE,
                            e.reason)
            since, n = now, 0
        self._logged[e.reason] = (since, n + 1)
        if n < _LOG_PER_MINUTE:
            log.warning("collector: bad message on %s: %s: %s", topic[:200], e.reason, e.detail)

    # --- recovery -------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.is_set():
            if self._recover.wait(1.0) and not self._stop.is_set():
                self._recover.clear()
                log.warning("collector: dropping the connection to get unacknowledged "
                            "messages again in 5 s")
                self.client.disconnect()
                self.client.loop_stop()
                if self._stop.wait(5.0):
                    return
                try:
                    self.client.reconnect()
                except OSError as e:
                    log.error("collector: reconnect to %s failed: %s", self.where, e)
                self.client.loop_start()
