"""Signatures on what the office sends: Ed25519 over a canonical form of the payload.

With ``control.trusted_keys`` set, a desired config or a command is acted on only when
it carries a valid signature from one of those keys. The signed payload is the JSON
object as sent, with a ``signature`` member added::

    {"version": 7, "config": {...}, "request_id": "push-7",
     "signature": {"key": "<public key, base64>", "sig": "<signature, base64>"}}

**Canonical form** (what is signed): the object without its ``signature`` member,
serialised as UTF-8 JSON with keys sorted at every level, no whitespace
(``separators=(",", ":")``), non-ASCII characters as themselves and no NaN or infinity:
Python's ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
allow_nan=False)``. The unit recomputes it from the payload it received, so a changed
value, an added key or a removed one breaks the signature, while the office may send
the object with any spacing or key order.

Replays: a desired config is versioned, and an old version is stale however well it
is signed. A signed command must carry ``request_id`` and ``expires_at`` (UTC, ISO
8601, at most ``MAX_COMMAND_LIFETIME_S`` ahead); the unit refuses it once expired, and
refuses a ``request_id`` it has already done while that command could still be valid.

Keys are raw 32-byte Ed25519 keys: public keys as base64 (what ``control.trusted_keys``
lists), private keys as PKCS#8 PEM files (``patrol-agent fleet keygen``).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.records import iso_utc

MAX_COMMAND_LIFETIME_S = 24 * 3600.0
"""How far ahead a signed command may expire: bounds how long its id must be remembered."""


class SignatureError(Exception):
    """A payload whose signature does not let it be acted on; the message says why."""


def canonical(body: dict[str, Any]) -> bytes:
    """The bytes that are signed: ``body`` without ``signature``, canonical JSON."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 text; ValueError naming what is wrong."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes, an Ed25519 public key has 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign(body: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """``body`` with its ``signature`` member (any old one replaced)."""
    sig = private.sign(canonical(body))
    return {**{k: v for k, v in body.items() if k != "signature"},
            "signature": {"key": public_key_text(private.public_key()),
                          "sig": base64.b64encode(sig).decode("ascii")}}


def verify(body: dict[str, Any], trusted: list[str]) -> str:
    """Check ``body``'s signature against the trusted public keys; the key that signed,
    or SignatureError saying why not."""
    sig = body.get("signature")
    if sig is None:
        raise SignatureError("not signed, and this unit acts only on payloads signed by a "
                             "key in control.trusted_keys")
    if not isinstance(sig, dict) or not isinstance(sig.get("key"), str) \
            or not isinstance(sig.get("sig"), str):
        raise SignatureError('signature must be {"key": <base64>, "sig": <base64>}')
    if sig["key"] not in trusted:
        raise SignatureError(f"signed by key {sig['key'][:12]}…, which this unit does not "
                             "trust")
    try:
        raw = base64.b64decode(sig["sig"], validate=True)
    except binascii.Error:
        raise SignatureError("signature.sig is not base64") from None
    try:
        load_public_key(sig["key"]).verify(raw, canonical(body))
    except (InvalidSignature, ValueError):
        raise SignatureError("the signature does not match the payload (changed after "
                             "signing, or signed with another key)") from None
    return sig["key"]


def parse_expiry(body: dict[str, Any], now: datetime) -> datetime:
    """A signed command's ``expires_at``, checked against ``now``."""
    text = body.get("expires_at")
    if not isinstance(text, str):
        raise SignatureError("a signed command must carry expires_at (UTC, ISO 8601)")
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError(f"expires_at {text[:40]!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise SignatureError("expires_at must say its time zone (Z for UTC)")
    if at <= now:
        raise SignatureError(f"expired at {iso_utc(at)} (the unit's time is {iso_utc(now)})")
    if at > now + timedelta(seconds=MAX_COMMAND_LIFETIME_S):
        raise SignatureError(f"expires_at is more than {MAX_COMMAND_LIFETIME_S / 3600:.0f} h "
                             "ahead")
    return at


class SeenCommands:
    """The ids of signed commands done, each kept until it expires, so that a replay
    is refused; kept in a file, so a restart does not forget them."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: dict[str, datetime] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self._seen = {k: datetime.fromisoformat(v) for k, v in data.items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self._seen = {}  # unreadable: commands still expire, so replays stay bounded

    def check_and_remember(self, request_id: str, expires_at: datetime, now: datetime) -> None:
        self._seen = {k: v for k, v in self._seen.items() if v > now}
        if request_id in self._seen:
            raise SignatureError(f"replayed: request {request_id!r} was already done")
        self._seen[request_id] = expires_at
        if self.path is not None:
            self._save()

    def _save(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.new")
        tmp.write_text(json.dumps({k: v.isoformat() for k, v in self._seen.items()}),
                       encoding="utf-8")
        os.replace(tmp, self.path)


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """PKCS#8 PEM, readable by its owner only; an existing file is not overwritten."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as f:
        f.write(pem)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a readable private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


def expiry_in(seconds: float) -> str:
    return iso_utc(datetime.now(UTC) + timedelta(seconds=seconds))


class Authority:
    """What a unit checks before acting on the office's payloads: nothing while it trusts
    no keys; with ``control.trusted_keys``, a valid signature, and for commands an
    expiry and a request id not seen before."""

    def __init__(self, trusted: Callable[[], list[str]], now: Callable[[], datetime | None],
                 seen: SeenCommands) -> None:
        """``trusted``: the keys in force now (a desired config may change them).
        ``now``: UTC now from a clock the unit trusts (GPS or NTP), None while it has none."""
        self.trusted = trusted
        self.now = now
        self.seen = seen

    @property
    def required(self) -> bool:
        return bool(self.trusted())

    def check_document(self, body: dict[str, Any]) -> None:
        """A desired config: signed, if keys are trusted (its version guards replays)."""
        if self.required:
            verify(body, self.trusted())

    def check_command(self, body: dict[str, Any]) -> None:
        """A command: signed, not expired, not done before, if keys are trusted."""
        if not self.required:
            return
        verify(body, self.trusted())
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise SignatureError("a signed command must carry a request_id")
        now = self.now()
        if now is None:
            # Fail closed: with a clock that may be days off, an expired command would
            # look valid.
            raise SignatureError("the unit's clock is not verified yet (no GPS fix, no NTP), "
                                 "so the command's expiry cannot be checked; not done")
        self.seen.check_and_remember(rid, parse_expiry(body, now), now)
