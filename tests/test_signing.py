"""The canonical form the office signs (docs/mqtt.md): what it covers and what it does
not, and trusted keys checked where the config is read."""

from __future__ import annotations

import json

import pytest

from agent.config import ConfigError, parse_config
from agent.signing import SignatureError, new_private_key, public_key_text, sign, verify


def test_a_signature_holds_whatever_the_spacing_and_key_order() -> None:
    key = new_private_key()
    trusted = [public_key_text(key.public_key())]
    body = sign({"version": 3, "request_id": "r-ü", "config": {"events": {"min_score": 0.9,
                                                                          "note": "ß"}}}, key)
    # The office's JSON library may order and space it any way it likes.
    text = json.dumps(body, indent=3, ensure_ascii=True)
    reordered = json.loads(text, object_pairs_hook=lambda kv: dict(reversed(kv)))
    assert verify(reordered, trusted) == trusted[0]


@pytest.mark.parametrize("change", [
    lambda b: b["config"]["events"].update(min_score=0.1),  # a value
    lambda b: b["config"]["events"].update(extra=1),  # a key added
    lambda b: b.pop("request_id"),  # a key taken away
    lambda b: b.update(version=4),
])
def test_any_change_after_signing_breaks_it(change: object) -> None:
    key = new_private_key()
    body = sign({"version": 3, "request_id": "r", "config": {"events": {"min_score": 0.9}}},
                key)
    change(body)  # type: ignore[operator]
    with pytest.raises(SignatureError, match="does not match"):
        verify(body, [public_key_text(key.public_key())])


def test_trusted_keys_that_are_not_ed25519_keys_are_named() -> None:
    good = public_key_text(new_private_key().public_key())
    assert parse_config({"control": {"trusted_keys": [good]}}).control.trusted_keys == [good]
    for bad, why in (("A" * 44, "33 bytes, an Ed25519 public key has 32"),
                     ("!" * 44, "not base64")):
        with pytest.raises(ConfigError) as e:
            parse_config({"control": {"trusted_keys": [good, bad]}})
        assert any(p.startswith("control.trusted_keys") and why in p for p in e.value.problems)
