"""Control: what the office asks of a unit over MQTT, answered on the unit's topics.

Commands arrive on ``{root}/{dev}/cmd/{name}`` and are answered on
``{root}/{dev}/cmd/{name}/result`` (docs/mqtt.md has the payloads): ``ping``, ``flush``,
``snapshot``, ``purge-delivered`` and ``restart``; any other name gets an error answer.

Whatever arrives is parsed defensively before anything acts on it: a size limit, UTF-8,
JSON, an object, a depth limit, and the types of the fields it uses. A payload that fails
any of these gets an answer naming why (when it can be answered at all), is counted, and
changes nothing. The stage runs on a thread of its own, fed by the uplink through a
bounded queue that never blocks the MQTT thread: a flood is dropped and counted, not
queued without end; of the desired configs waiting, only each scope's newest is kept.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.records import ControlMessage, iso_utc
from agent.signing import Authority, SignatureError
from agent.stages import Faults, Heartbeat, Inbox
from agent.topics import Topics

log = logging.getLogger("control")

MAX_PAYLOAD_BYTES = 64 * 1024
"""A control payload is a few hundred bytes; anything near this is not one."""
MAX_DEPTH = 16
MAX_QUEUE = 64
"""Messages waiting for the control stage; past this a flood is dropped and counted."""
MAX_REQUEST_ID = 128


class RequestError(Exception):
    """A payload that cannot be acted on; the message says why (it goes in the answer),
    ``request_id`` which request it was, when that much could be read."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


@dataclass(frozen=True)
class Request:
    """A command as the office sent it."""

    name: str
    request_id: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    correlation_data: bytes | None = None


Handler = Callable[[Request], dict[str, Any]]
"""Does a command; its answer's ``result``. Raises RequestError to refuse it with a reason."""


@dataclass
class ControlStats:
    received: int = 0
    answered: int = 0
    refused: int = 0
    """Payloads that could not be acted on (malformed, unknown command, refused)."""
    dropped: int = 0
    """Messages dropped because the queue was full (a flood)."""
    superseded: int = 0
    """Desired configs replaced, unread, by a newer one of the same scope."""


def _depth(value: Any, limit: int, level: int = 1) -> None:
    if level > limit:
        raise RequestError(f"nested deeper than {limit} levels")
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, limit, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, limit, level + 1)


def _finite(value: Any) -> None:
    """JSON's numbers must stay numbers: no NaN, no infinities, no 10**1000."""
    if isinstance(value, float) and not math.isfinite(value):
        raise RequestError("a number is not finite")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        raise RequestError("a number is too large")
    if isinstance(value, dict):
        for v in value.values():
            _finite(v)
    elif isinstance(value, list):
        for v in value:
            _finite(v)


def parse_json_object(payload: bytes) -> dict[str, Any]:
    """A control payload as a JSON object, or RequestError saying what is wrong with it."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RequestError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-"
                           "byte limit")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(f"not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=lambda c: float(c))
    except RecursionError:
        raise RequestError(f"nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"not JSON ({e.msg} at character {e.pos})") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise RequestError(f"not usable JSON ({e})") from None
    if not isinstance(value, dict):
        raise RequestError(f"not a JSON object but {type(value).__name__}")
    _depth(value, MAX_DEPTH)
    _finite(value)
    return value


def request_id_of(body: dict[str, Any]) -> str | None:
    """A payload's optional ``request_id`` (commands and desired configs alike)."""
    rid = body.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not 0 < len(rid) <= MAX_REQUEST_ID):
        raise RequestError(f"request_id must be text of 1 to {MAX_REQUEST_ID} characters")
    return rid


def parse_request(name: str, msg: ControlMessage, authority: Authority | None = None
                  ) -> Request:
    body = parse_json_object(msg.payload)
    rid = request_id_of(body)
    if authority is not None:
        try:
            authority.check_command(body)
        except SignatureError as e:
            # The request id, unverified, only to say which request was refused.
            raise RequestError(str(e), request_id=rid) from None
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("args must be a JSON object")
    return Request(name, rid, args, msg.correlation_data)


class Control(Inbox):
    """The control stage: takes messages from the uplink, acts, and answers through
    ``send`` (the uplink's :meth:`~agent.uplink.Uplink.send`)."""

    def __init__(self, topics: Topics, send: Callable[..., None],
                 handlers: dict[str, Handler],
                 desired: Callable[[str, ControlMessage], None] | None = None,
                 tick: Callable[[], None] | None = None,
                 authority: Authority | None = None) -> None:
        """``desired`` takes desired-config documents (scope 'fleet' or 'device'); None:
        this unit takes none (it is not subscribed to them). ``tick`` runs about once a
        second on the stage's thread (judging a change on trial). ``authority`` checks
        commands' signatures (agent/signing.py)."""
        self.authority = authority
        self.topics = topics
        self.send = send
        self.handlers = handlers
        self.desired = desired
        self.tick = tick
        self.stats = ControlStats()
        self.faults = Faults("control", item="message")
        self.heartbeat = Heartbeat()
        self._queue: deque[ControlMessage | Callable[[], None]] = deque()
        super().__init__()

    @property
    def subscriptions(self) -> list[str]:
        topics = [self.topics.commands]
        if self.desired is not None:
            topics += [self.topics.fleet_config_desired, self.topics.config_desired]
        return topics

    def put(self, msg: ControlMessage) -> None:
        """A message from the uplink's thread: queued, never waited on.

        A desired config is a state, not a request: of a scope's documents still waiting
        only the newest matters, and it replaces the one before it. So a flood on the
        config topics holds one place per scope in the queue, and neither crowds out the
        office's commands (a ping sent after 500 hostile documents was dropped) nor loses
        the newest document."""
        with self._cond:
            if msg.topic in (self.topics.config_desired, self.topics.fleet_config_desired):
                for i, queued in enumerate(self._queue):
                    if not callable(queued) and queued.topic == msg.topic:
                        del self._queue[i]
                        self.stats.superseded += 1
                        break
            if len(self._queue) >= MAX_QUEUE:
                self.stats.dropped += 1
                if self.stats.dropped in (1, 10, 100, 1000) or self.stats.dropped % 10000 == 0:
                    log.warning("control messages are coming faster than they can be handled: "
                                "%d dropped", self.stats.dropped)
                return
            self._queue.append(msg)
            self._cond.notify()

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the stage's thread, in turn with the messages (e.g. a model
        download that finished on a thread of its own); never dropped."""
        with self._cond:
            self._queue.append(fn)
            self._cond.notify()

    def run(self) -> None:
        while True:
            self.heartbeat.beat()
            if self.tick is not None:
                with self.faults.guard("the trial of a change"):
                    self.tick()
            with self._cond:
                if not self._queue:
                    if self._closed:
                        return
                    self._cond.wait(1.0)
                    continue
                msg = self._queue.popleft()
            if callable(msg):
                with self.faults.guard("a follow-up"):
                    msg()
                continue
            self.stats.received += 1
            with self.faults.guard(f"a message on {msg.topic[:120]}"):
                self._handle(msg)

    def _handle(self, msg: ControlMessage) -> None:
        if self.desired is not None and msg.topic in (self.topics.config_desired,
                                                      self.topics.fleet_config_desired):
            scope = "device" if msg.topic == self.topics.config_desired else "fleet"
            self.desired(scope, msg)
            return
        prefix = self.topics.cmd("")
        if not msg.topic.startswith(prefix) or "/" in msg.topic[len(prefix):]:
            return  # not ours (a broker that sends what we did not subscribe to)
        name = msg.topic[len(prefix):]
        request: Request | None = None
        try:
            request = parse_request(name, msg, self.authority)
            if msg.retained:
                # A retained command would run again at every reconnect: the office must
                # not retain them, and a stale one is not done.
                raise RequestError("commands are not to be retained; not done")
            handler = self.handlers.get(name)
            if handler is None:
                raise RequestError(f"unknown command {name!r}; this unit knows "
                                   f"{', '.join(sorted(self.handlers))}")
            result = handler(request)
        except RequestError as e:
            self.stats.refused += 1
            log.warning("command %s refused: %s", name[:64], e)
            if request is None and e.request_id is not None:
                request = Request(name, e.request_id)
            self._answer(name, request, msg, ok=False, error=str(e))
            return
        log.info("command %s done%s", name, f" (request {request.request_id})"
                 if request.request_id else "")
        self._answer(name, request, msg, ok=True, result=result)

    def _answer(self, name: str, request: Request | None, msg: ControlMessage, ok: bool,
                result: dict[str, Any] | None = None, error: str | None = None) -> None:
        if not name or len(name) > 64 or any(c in name for c in "+#\0"):
            return  # no sane topic to answer on
        body = {"command": name, "request_id": request.request_id if request else None,
                "ok": ok, "result": result, "error": error,
                "at": iso_utc(datetime.now(UTC))}
        self.send(self.topics.cmd_result(name), json.dumps(body).encode(),
                  correlation_data=msg.correlation_data)
        self.stats.answered += 1
