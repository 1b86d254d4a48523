"""Model updates: a desired config that names a new detector model, fetched over HTTP(S)
into the unit's state, checked, and only then put in force (docs/mqtt.md, Model updates).

The document says where the model is and what it must be::

    "model": {"url": "https://models.city.example/cc-2026-12.tflite",
              "sha256": "<64 hex digits>", "labels": ["garbage", "banner", ...]}

The download goes to ``models/staging/<sha256>.part`` beside the outbox, within
``control.max_model_mb``; a dropped connection is resumed where it stopped (an HTTP
Range request; a server that ignores it is read again from the start), a few times
over. The whole file must hash to ``sha256``, or it is deleted and refused. A good file
is installed, atomically, as ``models/<sha256[:16]>.tflite`` with its labels beside it;
the pipeline then loads it and runs it on the newest frame before swapping it in. The
previous model stays on the card (a rollback needs it); older ones are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("control")

ATTEMPTS = 5
"""Tries at one download (each resumes the last) before it is given up."""
READ_TIMEOUT_S = 30.0
CHUNK = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelSpecError(ValueError):
    """A ``model`` member of a desired config that cannot be used; the message says why."""


class FetchError(Exception):
    """A model that could not be fetched or did not check out; the message says why.
    ``permanent``: the same document would fail the same way (a wrong hash, too big,
    not there), as against a link that may work later."""

    def __init__(self, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class ModelSpec:
    url: str
    sha256: str
    labels: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, value: Any) -> ModelSpec:
        if not isinstance(value, dict):
            raise ModelSpecError("model must be an object with url and sha256")
        unknown = set(value) - {"url", "sha256", "labels"}
        if unknown:
            raise ModelSpecError(f"model.{sorted(unknown)[0]}: unknown key")
        url = value.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) \
                or len(url) > 2048:
            raise ModelSpecError("model.url must be an http:// or https:// URL")
        sha = value.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha.lower()):
            raise ModelSpecError("model.sha256 must be 64 hexadecimal digits")
        labels = value.get("labels")
        if labels is not None:
            if not isinstance(labels, list) or not 0 < len(labels) <= 1000 or not all(
                    isinstance(x, str) and 0 < len(x) <= 100 and "\n" not in x
                    for x in labels):
                raise ModelSpecError("model.labels must be a list of 1 to 1000 names, one "
                                     "line each")
            labels = tuple(labels)
        return cls(url, sha.lower(), labels)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "sha256": self.sha256}
        if self.labels is not None:
            out["labels"] = list(self.labels)
        return out


def models_dir(store_path: Path) -> Path:
    return store_path.parent / "models"


def installed_paths(directory: Path, spec: ModelSpec) -> tuple[Path, Path | None]:
    """Where a model from ``spec`` is (or will be) installed, and its labels."""
    stem = spec.sha256[:16]
    return directory / f"{stem}.tflite", (directory / f"{stem}.labels.txt"
                                          if spec.labels is not None else None)


def is_installed(directory: Path, spec: ModelSpec) -> bool:
    model, labels = installed_paths(directory, spec)
    return model.exists() and (labels is None or labels.exists())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fetch(spec: ModelSpec, directory: Path, max_bytes: int,
          progress: Callable[[str, dict[str, Any]], None],
          stop: threading.Event | None = None) -> Path:
    """Download, check and install the model; its installed path, or FetchError.
    ``progress(step, figures)`` is told each step: downloading, resumed, verified."""
    staging = directory / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    part = staging / f"{spec.sha256}.part"
    have = part.stat().st_size if part.exists() else 0
    progress("downloading", {"bytes": have})
    last_error = ""
    for attempt in range(ATTEMPTS):
        if stop is not None and stop.is_set():
            raise FetchError("the agent is stopping", permanent=False)
        if attempt:
            time.sleep(min(8.0, 0.5 * 2 ** attempt))
            progress("resumed", {"bytes": have, "after": last_error})
        try:
            have = _download(spec.url, part, have, max_bytes, stop)
            break
        except FetchError:
            raise
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts included
            last_error = str(getattr(e, "reason", e))
            have = part.stat().st_size if part.exists() else 0
            log.warning("model download from %s broke off at %d bytes (%s); resuming",
                        spec.url, have, last_error)
    else:
        raise FetchError(f"the download from {spec.url} failed {ATTEMPTS} times (last: "
                         f"{last_error}); {have} bytes kept to resume from", permanent=False)
    digest = hashlib.sha256()
    with open(part, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != spec.sha256:
        part.unlink()
        raise FetchError(f"sha256 of the {have} bytes from {spec.url} is "
                         f"{digest.hexdigest()}, not the {spec.sha256} the document names; "
                         "deleted")
    progress("verified", {"bytes": have})
    model, labels = installed_paths(directory, spec)
    if labels is not None and spec.labels is not None:
        tmp = labels.with_name(f".{labels.name}.new")
        tmp.write_text("\n".join(spec.labels) + "\n", encoding="utf-8")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, labels)
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, model)
    _fsync_dir(directory)
    return model


def _download(url: str, part: Path, have: int, max_bytes: int,
              stop: threading.Event | None) -> int:
    headers = {"User-Agent": "patrol-agent model update"}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        # Only http(s): ModelSpec.parse checks the scheme.
        resp = urllib.request.urlopen(req, timeout=READ_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past what we have: it is all here
            return have
        if e.code in (404, 401, 403, 410):
            raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
        raise
    with resp:
        if have and resp.status != 206:
            have = 0  # the server sends it all again: start over
        length = resp.headers.get("Content-Length")
        if length is not None and have + int(length) > max_bytes:
            raise FetchError(f"{url} is {have + int(length)} bytes, over control.max_model_mb "
                             f"({max_bytes} bytes)")
        received = 0
        with open(part, "ab" if have else "wb") as out:
            while chunk := resp.read(CHUNK):
                have += len(chunk)
                received += len(chunk)
                if have > max_bytes:
                    out.close()
                    part.unlink()
                    raise FetchError(f"{url} goes on past control.max_model_mb "
                                     f"({max_bytes} bytes); deleted")
                out.write(chunk)
                if stop is not None and stop.is_set():
                    raise FetchError("the agent is stopping", permanent=False)
            out.flush()
            os.fsync(out.fileno())
        if length is not None and received < int(length):
            raise OSError(f"the connection closed after {received} of {length} bytes")
    return have


def prune(directory: Path, keep: set[Path]) -> None:
    """Remove installed models other than ``keep`` (the one in force and the previous)."""
    for path in directory.glob("*.tflite"):
        if path not in keep:
            with contextlib.suppress(OSError):
                path.unlink()
                path.with_name(path.stem + ".labels.txt").unlink(missing_ok=True)


def remove_installed(directory: Path, spec: ModelSpec) -> None:
    """Remove a fetched model that did not work (a newer document fetches it again)."""
    for path in installed_paths(directory, spec):
        if path is not None:
            path.unlink(missing_ok=True)
