"""Desired config: what the office wants a unit's config to be, layered over its file.

The office publishes documents, retained, on ``{root}/fleet/config/desired`` (every unit)
and ``{root}/{dev}/config/desired`` (one unit)::

    {"version": 7, "config": {"events": {"min_score": 0.92}}, "request_id": "c-17"}

The config in force is the unit's file, then the fleet document, then the device
document, key by key (a later layer's key replaces an earlier one's), validated as a
whole with the file's own schema. A document at or below the version in force for its
scope is stale: reported, never applied, so a retained message can never undo a newer
accepted config. ``device.id`` and ``store.path`` are the unit's own: a document cannot
set them.

Accepted documents are kept in the state directory (``config/{scope}.json``) and written
atomically (write, fsync, rename, fsync the directory): a power cut leaves the old or the
new, never half. At start the kept documents are in force before the broker is reached,
so a unit that starts offline works with the last config the office gave it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import Config, ConfigError, StoreConfig, parse_config, read_config_file
from agent.control import RequestError, parse_json_object, request_id_of
from agent.model_update import (
    ModelSpec,
    ModelSpecError,
    installed_paths,
    is_installed,
    models_dir,
)
from agent.signing import Authority, SignatureError

log = logging.getLogger("control")

SCOPES = ("fleet", "device")
"""In the order they are layered over the file."""
LOCAL_ONLY = {("device", "id"), ("store", "path")}
"""What only the unit's own file sets: who it is, and where its findings are kept."""


class DocumentError(RequestError):
    """A desired-config document that cannot be used; the message says why, and
    ``request_id`` which request it was, when that much could be read."""


@dataclass(frozen=True)
class Desired:
    """An accepted (or offered) desired-config document."""

    scope: str
    version: int
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_id: str | None = None
    model: ModelSpec | None = None
    """A new detector model to fetch (agent/model_update.py)."""

    def as_json(self) -> dict[str, Any]:
        out = {"scope": self.scope, "version": self.version, "config": self.config,
               "request_id": self.request_id}
        if self.model is not None:
            out["model"] = self.model.as_json()
        return out


def parse_desired(scope: str, payload: bytes, authority: Authority | None = None) -> Desired:
    """A document from its payload, or DocumentError saying what is wrong with it
    (its signature included, when ``authority`` asks for one)."""
    try:
        body = parse_json_object(payload)
        rid = request_id_of(body)
    except RequestError as e:
        raise DocumentError(str(e)) from None
    try:
        if authority is not None:
            authority.check_document(body)
    except SignatureError as e:
        # The request id, unverified, only to say which request was refused.
        raise DocumentError(str(e), request_id=rid) from None
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise DocumentError("version must be a whole number, 0 or more", request_id=rid)
    cfg = body.get("config", {} if "model" in body else None)  # a model alone is a change
    if not isinstance(cfg, dict):
        raise DocumentError("config must be a JSON object of sections", request_id=rid)
    for section, keys in cfg.items():
        if not isinstance(keys, dict):
            raise DocumentError(f"config.{section} must be an object of keys", request_id=rid)
        for key in keys:
            if (section, key) in LOCAL_ONLY:
                raise DocumentError(f"{section}.{key} is the unit's own, set in its file only",
                                    request_id=rid)
    model = None
    if "model" in body:
        try:
            model = ModelSpec.parse(body["model"])
        except ModelSpecError as e:
            raise DocumentError(str(e), request_id=rid) from None
        if "model" in cfg.get("detector", {}) or "labels" in cfg.get("detector", {}):
            raise DocumentError("a document with a model to fetch cannot also set "
                                "detector.model or detector.labels", request_id=rid)
    return Desired(scope, version, cfg, rid, model)


def file_models_dir(file_data: dict[str, Any]) -> Path:
    """Where fetched models are kept: beside the outbox the file names (a document
    cannot move it)."""
    return models_dir(Path(file_data.get("store", {}).get("path", StoreConfig().path)))


def layered(file_data: dict[str, Any], docs: dict[str, Desired]) -> dict[str, Any]:
    """The file's data with the documents over it, key by key, fleet then device; a
    document's fetched model is its detector.model (and labels)."""
    out = json.loads(json.dumps(file_data, default=str))
    for scope in SCOPES:
        doc = docs.get(scope)
        if doc is None:
            continue
        config = doc.config
        if doc.model is not None:
            model, labels = installed_paths(file_models_dir(file_data), doc.model)
            config = {**config, "detector": {**config.get("detector", {}),
                                             "model": str(model), "labels": labels and
                                             str(labels)}}
        for section, keys in config.items():
            current = out.get(section)
            if isinstance(current, dict):
                current.update(keys)
            else:
                out[section] = dict(keys)
    return out


def effective(file_data: dict[str, Any], docs: dict[str, Desired], source: str) -> Config:
    """The config in force: validated as a whole with the file's schema (ConfigError
    naming each bad key otherwise)."""
    return parse_config(layered(file_data, docs), source=source)


def state_dir(cfg: Config) -> Path:
    """Where accepted documents are kept: beside the outbox, in the unit's state."""
    return cfg.store.path.parent / "config"


def _write_atomically(path: Path, data: Any) -> None:
    """Write, fsync, rename, fsync the directory: after a power cut the file is the old
    one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    # 0600: a document may carry the broker's password.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a power cut
    finally:
        os.close(dfd)


def persist(directory: Path, doc: Desired) -> None:
    """Keep an accepted document, atomically: the old one or the new one, never half."""
    _write_atomically(directory / f"{doc.scope}.json", doc.as_json())


def mark_rolled_back(directory: Path, doc: Desired) -> None:
    """Remember a document rolled back: the broker's retained copy of it (sent again on
    every reconnect and start) is not tried again; only a newer version is."""
    _write_atomically(directory / f"{doc.scope}.rolled-back.json", doc.as_json())


def _read_doc(path: Path, scope: str) -> Desired | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        model = ModelSpec.parse(body["model"]) if body.get("model") else None
        return Desired(scope, int(body["version"]), dict(body["config"]),
                       body.get("request_id"), model)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.error("the kept %s config %s cannot be read (%s); it is not in force",
                  scope, path, e)
        return None


def load_rolled_back(directory: Path) -> dict[str, Desired]:
    """The last document rolled back, per scope."""
    found = {s: _read_doc(directory / f"{s}.rolled-back.json", s) for s in SCOPES}
    return {s: d for s, d in found.items() if d is not None}


def forget(directory: Path, scope: str) -> None:
    """Drop a kept document (a rollback to none)."""
    path = directory / f"{scope}.json"
    if path.exists():
        path.unlink()
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_kept(directory: Path) -> dict[str, Desired]:
    """The accepted documents kept in ``directory``; one that cannot be read is said and
    left out (the file alone, or the other scope, is in force then)."""
    found = {s: _read_doc(directory / f"{s}.json", s) for s in SCOPES}
    return {s: d for s, d in found.items() if d is not None}


def load_in_force(config_path: Path) -> tuple[Config, dict[str, Any], dict[str, Desired]]:
    """At start: the file, with the documents kept from the office over it. If together
    they do not validate (the file was edited since), the file alone is in force and
    that is said. Returns (config, the file's data, the documents in force)."""
    file_data = read_config_file(config_path)
    base = parse_config(file_data, source=str(config_path))
    docs = load_kept(state_dir(base))
    for scope, doc in list(docs.items()):
        if doc.model is not None and not is_installed(file_models_dir(file_data), doc.model):
            log.error("the %s config version %d from the office names a model that is no "
                      "longer on this unit (%s); that document is not in force", scope,
                      doc.version, installed_paths(file_models_dir(file_data), doc.model)[0])
            del docs[scope]
    if not docs:
        return base, file_data, {}
    try:
        cfg = effective(file_data, docs, str(config_path))
    except ConfigError as e:
        log.error("the config kept from the office does not fit %s any more (%s); the file "
                  "alone is in force until the office sends another", config_path,
                  "; ".join(e.problems))
        return base, file_data, {}
    versions = ", ".join(f"{d.scope} {d.version}" for d in docs.values())
    log.info("config from the office in force: %s over %s", versions, config_path)
    return cfg, file_data, docs
