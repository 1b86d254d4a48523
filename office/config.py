"""The office's one typed configuration: ``office.toml``.

Every key has a default that serves on one machine: a broker on this machine, a SQLite
file in the working directory, the page on loopback. ``patrol-office serve`` flags
(``--broker``, ``--store``, ``--http``) override the file. Unknown keys and wrong types
are errors that name the key. The broker password can come from the environment
(``PATROL_OFFICE_MQTT_PASSWORD``) so that it need not sit in the file; it is a
``SecretStr`` and is never printed.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_MQTT_PASSWORD = "PATROL_OFFICE_MQTT_PASSWORD"

# The city this is made for: Goyang City Hall (Deogyang-gu), the map's default view.
GOYANG = (37.6584, 126.8320)

# Statuses in workflow order; the last two close a complaint without action.
STATUSES = ("new", "confirmed", "dispatched", "resolved", "rejected", "duplicate")
OPEN_STATUSES = ("new", "confirmed", "dispatched")


def _hostname() -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return name[:40] or "host"


class ConfigError(Exception):
    """The office config cannot be used; ``problems`` names each bad key, one line each."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class TlsConfig(Section):
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


class BrokerConfig(Section):
    host: str = "127.0.0.1"
    port: Port = 1883
    # The agent's mqtt.root: units publish under {root}/{dev}/.
    root: Annotated[str, Field(min_length=1, pattern=r"^[^#+$/][^#+]*[^#+/]$|^[^#+$/]$")] = (
        "patrol")
    # Collectors with the same group share the fleet's findings ($share/{group}/...). Mosquitto
    # does not check who subscribes: a unit that joined this group would take a share of
    # the findings nobody then gets, so in production make it a name units cannot guess
    # (docs/broker.md).
    group: Name = "office"
    # Fixed per collector: the broker keeps this session's queue while it is down.
    client_id: Name = Field(default_factory=lambda: f"patrol-office-{_hostname()}")
    # How long the broker keeps the session (and queues findings) for a collector that is down.
    session_expiry_s: Annotated[int, Field(ge=60, le=4_294_967_295)] = 7 * 24 * 3600
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30


class StoreConfig(Section):
    # sqlite:///relative.sqlite, sqlite:////absolute/path.sqlite or postgresql://user@host:port/db
    url: str = "sqlite:///patrol-office.sqlite"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not (v.startswith("sqlite:///") or v.startswith(("postgresql://", "postgres://"))):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return v


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: Port = 8080
    # Signs the login cookie. Unset: a new random key at each start (everyone logs in again).
    secret_key: SecretStr | None = None


class LimitsConfig(Section):
    # Payloads above these are counted as bad and dropped, never parsed.
    max_json_kb: Annotated[int, Field(ge=1, le=1024)] = 64
    max_image_kb: Annotated[int, Field(ge=16, le=65536)] = 8192
    # Request bodies to the web page (logins, status changes).
    max_body_kb: Annotated[int, Field(ge=1, le=1024)] = 16


class ComplaintsConfig(Section):
    # Sightings of one class closer than this (to any sighting of the complaint) are one object.
    merge_m: Annotated[float, Field(gt=0, le=200)] = 15.0
    # The classes that are complaints (Open311 services); others are kept but not offered.
    classes: list[Name] = ["garbage", "banner", "construction"]
    # Open311's agency_responsible and jurisdiction_id.
    agency: str = "Goyang City"
    jurisdiction: str = "goyang.go.kr"


class FleetConfig(Section):
    # A unit with no message for this long is shown offline even if its status says online
    # (its Last Will may be late when the broker has not noticed the link is gone).
    offline_after_s: Annotated[float, Field(gt=0)] = 180.0


class TilesConfig(Section):
    url: str
    attribution: str = ""


class MapConfig(Section):
    center: tuple[float, float] = GOYANG
    zoom: Annotated[int, Field(ge=1, le=20)] = 14
    # None: a plain background. Map tiles are fetched by each officer's browser, so none is
    # set by default: the office decides which server learns where it looks.
    tiles: TilesConfig | None = None


class User(Section):
    name: Name
    # From `patrol-office hash-password` (werkzeug's scrypt); never the password itself.
    password_hash: Annotated[str, Field(min_length=20)]


class OfficeConfig(Section):
    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    complaints: ComplaintsConfig = Field(default_factory=ComplaintsConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    map: MapConfig = Field(default_factory=MapConfig)
    users: list[User] = []

    @field_validator("users")
    @classmethod
    def _unique_users(cls, v: list[User]) -> list[User]:
        names = [u.name for u in v]
        if len(names) != len(set(names)):
            raise ValueError("user names must be unique")
        return v

    def masked(self) -> dict[str, Any]:
        """The config as JSON-able data with secrets shown as ``**********``."""
        return self.model_dump(mode="json")  # SecretStr dumps masked


def parse_config(data: dict[str, Any], source: str = "config") -> OfficeConfig:
    """Validate ``data``; raise :class:`ConfigError` naming every bad key."""
    password = os.environ.get(ENV_MQTT_PASSWORD)
    if password:
        data = {**data, "broker": {**data.get("broker", {}), "password": password}}
    try:
        return OfficeConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            if e["type"] == "missing":
                problems.append(f"{loc}: required key is missing")
            elif e["type"] == "extra_forbidden":
                problems.append(f"{loc}: unknown key")
            else:
                value = "***" if loc.endswith(("password", "secret_key")) else repr(e["input"])
                problems.append(f"{loc} = {value}: {e['msg']}")
        raise ConfigError(source, problems) from None


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None
                ) -> OfficeConfig:
    """Read ``path`` (None: defaults only), put ``overrides`` (section → keys) over it."""
    data: dict[str, Any] = {}
    source = str(path) if path else "defaults"
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(source, [f"cannot read ({e.strerror})"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(source, [f"not valid TOML: {e}"]) from None
    for section, keys in (overrides or {}).items():
        data[section] = {**data.get(section, {}), **keys}
    return parse_config(data, source)


def parse_host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) for the command-line overrides."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--{what}", [f"{value!r} is not HOST:PORT"])
    return host, int(port)
