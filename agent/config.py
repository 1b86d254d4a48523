"""The one typed configuration schema: defaults, loading, validation, hashing.

A unit is configured by one TOML file (``/etc/patrol-agent/agent.toml`` on a Pi).
Every section below exists even where a stage that uses it is still to come, so
that a config written today keeps validating tomorrow. Unknown keys and wrong
types are errors that name the key: a typo in a field deployment must not be
silently ignored.

Secrets (the broker password, the TLS key passphrase) never need to be in the
file: each can also come from an environment variable or from a file (for
systemd's ``LoadCredential=``). They are ``SecretStr`` so that printing or
logging the config shows ``**********``, and they are left out of the hash.
The paths of secret and TLS files may name environment variables
(``"${CREDENTIALS_DIRECTORY}/mqtt-client-key"``: where systemd hands the service
its credentials).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

# Environment variables that may carry secrets; the file always wins over nothing,
# the environment wins over the file so a technician can override on the spot.
ENV_MQTT_PASSWORD = "PATROL_MQTT_PASSWORD"
ENV_MQTT_KEY_PASSWORD = "PATROL_MQTT_KEY_PASSWORD"

DEFAULT_CONFIG_PATH = Path("/etc/patrol-agent/agent.toml")


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` names each bad key (one line each),
    ``details`` the same as ``{"key", "value", "why"}`` for a report."""

    def __init__(self, source: str, problems: list[str],
                 details: list[dict[str, Any]] | None = None) -> None:
        self.source = source
        self.problems = problems
        self.details = details if details is not None else [
            {"key": None, "value": None, "why": p} for p in problems]
        super().__init__(f"{source}: " + "; ".join(problems))


class Section(BaseModel):
    # forbid: an unknown key is a typo until proven otherwise.
    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Annotated[int, Field(ge=1, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


class DeviceConfig(Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "patrol-unit"
    )
    """Unique per vehicle; part of every MQTT topic and of the MQTT client id."""
    name: str = ""
    """Free text for the office (e.g. the vehicle's plate or fleet number)."""


class CameraConfig(Section):
    enabled: bool = True
    """Off: a unit that only delivers what is in its store (e.g. a bench unit)."""
    kind: Literal["opencv", "picamera2"] = "opencv"
    source: str = "0"
    """OpenCV: a device index, an RTSP/HTTP URL, a video file or a folder of images."""
    width: Annotated[int, Field(ge=64, le=4096)] = 1280
    height: Annotated[int, Field(ge=64, le=4096)] = 720
    fps: Annotated[float, Field(gt=0, le=120)] = 10.0
    # How the camera sits on the vehicle: turns a box into a place on the ground.
    hfov_deg: Annotated[float, Field(gt=10, lt=170)] = 70.0
    """Horizontal field of view of the lens."""
    mount_height_m: Annotated[float, Field(gt=0.2, le=5)] = 1.5
    tilt_deg: Annotated[float, Field(ge=-10, le=45)] = 4.0
    """Downward tilt of the optical axis."""
    heading_offset_deg: Annotated[float, Field(ge=-180, le=180)] = 0.0
    """Where the camera looks relative to the vehicle's heading (90 = right side)."""
    roll_deg: Annotated[float, Field(ge=-45, le=45)] = 0.0
    """Turned about its optical axis, counter-clockwise as seen from behind: the horizon
    falls towards the right of the picture. ``patrol-agent calibrate`` measures it, with
    hfov_deg, tilt_deg and heading_offset_deg."""


class GpsConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 2947


class DetectorInputConfig(Section):
    """How a frame becomes the model's input: the preprocessing the model was trained with."""

    resize: Literal["auto", "letterbox", "stretch"] = "auto"
    """letterbox: aspect kept, grey bars (YOLO, the default model); stretch: to the input's
    size whatever the aspect (TF Object Detection API, Model Maker); auto: stretch for the
    SSD post-processing layout, letterbox for the others."""
    interpolation: Literal["auto", "nearest", "linear", "area", "cubic"] = "auto"
    """auto: area when shrinking, linear when enlarging."""
    channels: Literal["rgb", "bgr"] = "rgb"
    mean: float | Annotated[list[float], Field(min_length=3, max_length=3)] | None = None
    std: float | Annotated[list[float], Field(min_length=3, max_length=3)] | None = None
    """The model sees (pixel - mean) / std, quantised with its input's own scale and zero
    point. Unset: uint8 inputs take raw pixels, int8 inputs pixels - 128, float inputs
    pixels / 255."""

    @field_validator("std")
    @classmethod
    def _std_not_zero(cls, v: float | list[float] | None) -> float | list[float] | None:
        if v is not None and any(x == 0 for x in (v if isinstance(v, list) else [v])):
            raise ValueError("std must not be 0")
        return v


class DetectorConfig(Section):
    model: Path = Path("models/civil-complaint.tflite")
    """An int8 .tflite detector. A relative path is looked up from the working
    directory, then from the agent's install (where the default model ships)."""
    labels: Path | None = None
    """One label per line; default: ``<model>.labels.txt`` beside it, else the model's metadata."""
    label_offset: Annotated[int, Field(ge=0, le=10)] | None = None
    """Subtracted from the label file's ids to give output indices. Unset: 0 when the ids
    start at 0, 1 when they start at 1 (the TF Object Detection API's label maps)."""
    layout: Literal["auto", "ssd_postprocess", "efficientdet_lite", "yolov5", "yolov8",
                    "patrol_grid"] = "auto"
    """yolov8 covers both axis orders ([1, 4+C, N] and [1, N, 4+C]); efficientdet_lite is
    Model Maker's export, the SSD post-processing op."""
    input: DetectorInputConfig = Field(default_factory=DetectorInputConfig)
    threads: Annotated[int, Field(ge=0, le=16)] = 0
    """Interpreter threads; 0: one per CPU this process may use (a Pi 4 or 5: four). More
    threads than CPUs lose: ``patrol-agent bench`` measured bare inference on 2 CPUs at
    1, 2 and 4 threads (README, Performance), and 4 was slower than 2."""
    runtime: Literal["auto", "ai-edge-litert", "tflite-runtime"] = "auto"
    """The TFLite runtime: ai-edge-litert (auto: unless only tflite-runtime is installed).
    tflite-runtime is for images where ai-edge-litert cannot run; its int8 kernels are far
    slower (the [tflite] extra installs it)."""
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    class_thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = {}
    """Per-class score thresholds, e.g. ``{banner = 0.6}``; others use score_threshold."""
    allow: list[str] | None = ["garbage", "banner", "construction"]
    """Classes that become findings; the default model's distractors (bin, sign) do not."""
    iou_threshold: Annotated[float, Field(gt=0, le=1)] = 0.45
    max_detections: Annotated[int, Field(ge=1, le=500)] = 50

    def thread_count(self) -> int:
        """``threads``, with 0 made the number of CPUs this process may run on."""
        if self.threads:
            return self.threads
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    def model_path(self) -> Path:
        return resolve_shipped(self.model)


def resolve_shipped(path: Path) -> Path:
    """A relative path as given if it exists, else where the agent ships it: beside the
    ``agent`` package in a checkout, or under ``share/patrol-agent`` of the environment
    it is installed in (setup.py's data files), so ``models/civil-complaint.tflite`` works
    from any directory and from a plain ``pip install``."""
    if path.is_absolute() or path.exists():
        return path
    for base in (Path(__file__).resolve().parent.parent,
                 Path(sys.prefix) / "share" / "patrol-agent"):
        if (base / path).exists():
            return base / path
    return path


class EventsConfig(Section):
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 85
    redact: bool = True
    """Blur faces and licence plates before an image is stored. Off only by config."""
    min_frames: Annotated[int, Field(ge=1)] = 3
    """A track seen in fewer frames is noise, not a finding."""
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.9
    """A track's best detection score must reach this. An object passed at patrol speed is
    seen close up and scores high at least once; distractors (bushes, people) mostly do
    not (tuned on generated drives that the tests do not use)."""
    dedup_distance_m: Annotated[float, Field(ge=0)] = 15.0
    dedup_window_h: Annotated[float, Field(ge=0)] = 12.0
    """The same class within dedup_distance_m of a finding made in the last
    dedup_window_h hours is the same object seen again (a second lap, a red light)."""
    max_range_m: Annotated[float, Field(gt=0)] = 35.0
    """Views of an object from further than this do not place it (a pixel of box bottom is
    metres there); a track only ever seen beyond it is not a finding, since an object beside
    the route is seen again from closer."""
    max_drift: Annotated[float, Field(gt=0)] = 0.7
    """A track whose ground position moves forward by more than this share of the
    vehicle's own travel is a far object placed short (its few-pixel box drawn too tall),
    not a finding: a real object stands still while the vehicle passes it (tuned on
    generated drives that the tests do not use)."""
    confirm_score: Annotated[float, Field(ge=0, le=1)] = 0.85
    """Before a track becomes a finding the detector looks again at its best views, zoomed
    in on the object; one of them must find the same class there with at least this score.
    Seen with more pixels, most false alarms (a patch of wall, a bush) are not found again.
    0 turns the second look off (tuned on generated drives that the tests do not use)."""
    confirm_views: Annotated[int, Field(ge=1, le=10)] = 3
    """How many of a track's best views get the second look: each is a frame kept in
    memory while the track lives, and one inference when it ends."""


class StoreConfig(Section):
    path: Path = Path("/var/lib/patrol-agent/outbox.db")
    max_held: Annotated[int, Field(ge=1, le=10000)] = 200
    """Findings kept in memory while the outbox cannot be written (a full SD card, a
    lock held elsewhere), retried until it can; past this many, new findings are lost,
    counted and logged. Each holds its pictures (about 0.1-0.3 MB)."""
    quota_mb: Annotated[float, Field(gt=0)] = 2048.0
    """The most the outbox may take on the card (its file and log). Past it the delivered
    findings delivered longest ago are deleted first, then (evict_undelivered_images) the
    pictures of the oldest undelivered findings; an undelivered record never is."""
    evict_undelivered_images: bool = True
    """At the quota with only undelivered findings left, empty their pictures (oldest
    first) so that new findings still fit; the records are delivered without them."""
    retention_hours: Annotated[float, Field(ge=0)] = 72.0
    """Delivered events (and their images) are deleted this long after delivery; 0 keeps them."""
    prune_interval_s: PositiveSeconds = 600.0


class TlsConfig(Section):
    ca_file: Path | None = None
    """CA bundle that signed the broker's certificate; None means the system store."""
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    key_password_file: Path | None = None
    insecure_skip_verify: bool = False
    """Only for bench work against a self-signed broker; logged loudly when on."""

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be given together")
        return self


class MqttConfig(Section):
    host: Annotated[str, Field(min_length=1)]
    """The broker's host name or address. Required: there is no sensible default."""
    port: Port | None = None
    """Defaults to 8883 with TLS, 1883 without."""
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    """Defaults to ``patrol-{device.id}``."""
    root: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] = "patrol"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: TlsConfig | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    inflight_window: Annotated[int, Field(ge=1, le=1000)] = 20
    """Events published but not yet acknowledged, at most (each is event + image)."""
    reconnect_min_s: PositiveSeconds = 1.0
    reconnect_max_s: PositiveSeconds = 120.0
    connect_timeout_s: PositiveSeconds = 15.0
    stop_delivery_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    """On an orderly stop (SIGTERM), go on delivering pending findings this long at most
    before saying offline; what is left is sent after the next start."""

    @field_validator("root")
    @classmethod
    def _no_slash_at_ends(cls, v: str) -> str:
        if v.startswith("/") or v.endswith("/"):
            raise ValueError("must not start or end with '/'")
        return v

    @model_validator(mode="after")
    def _backoff_order(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883


class SamplingConfig(Section):
    """Which camera frames are analysed: the detector is most of a unit's work, and a
    vehicle that stands still, or has hardly moved since the last frame, sees nothing new.
    Frames not analysed do not end tracks (agent/sampling.py)."""

    stationary_speed_mps: Annotated[float, Field(ge=0)] = 1.0
    """Below this GPS speed the vehicle stands (a red light, a parked unit)."""
    stationary_after_s: Annotated[float, Field(ge=0)] = 3.0
    """Analysis pauses once the vehicle has stood this long (the objects in view when it
    stopped are already analysed), and resumes at the first frame it moves again."""
    every_m: Annotated[float, Field(ge=0)] = 0.0
    """Analyse a frame only every this many metres travelled; 0: every frame while moving.
    Needs a GPS fix: without one every frame is analysed. The model card's sampling section
    measures values on replayed drives (models/train/drives.py --section sampling); its rule
    chose 1 m there, and replayed in real time (video paced, fixes through gpsd) the tuning
    drives found all their objects at 1 m as at 0. But at 1 m, in either mode, the bundled
    sample drive's last banner is tracked as three pieces near the camera: the first, seen
    only from afar, places it 11-15 m off, at the edge of the 15 m a finding is matched
    within. 0 stays the default until tracks stay whole across the skipped frames."""


class HealthConfig(Section):
    telemetry_interval_s: PositiveSeconds = 30.0
    watchdog: bool = True
    """Ping systemd's watchdog when the unit has WatchdogSec= set."""
    stall_s: Annotated[float, Field(ge=5, le=3600)] = 60.0
    """A stage whose loop has not gone round for this long is stuck: the watchdog pings
    stop and systemd restarts the agent. Longer than the slowest honest wait (connecting
    to a broker through a dead LTE zone: name lookup plus mqtt.connect_timeout_s)."""


class ControlConfig(Section):
    grace_s: Annotated[float, Field(ge=5, le=3600)] = 60.0
    """After a change from the office, how long the unit has to show it can still work
    (broker reached, camera giving frames, model running) before it rolls the change back."""
    max_model_mb: Annotated[float, Field(gt=0, le=2048)] = 100.0
    """The largest model a desired config may have the unit download."""
    trusted_keys: list[Annotated[str, Field(min_length=40, max_length=60)]] = []
    """Ed25519 public keys (base64 of the 32 raw bytes) the office signs with; when given,
    desired configs and commands must carry a valid signature from one of them
    (agent/signing.py; ``patrol-agent fleet keygen`` makes a pair)."""

    @field_validator("trusted_keys")
    @classmethod
    def _keys_are_ed25519(cls, keys: list[str]) -> list[str]:
        for key in keys:
            try:
                raw = base64.b64decode(key, validate=True)
            except binascii.Error:
                raise ValueError(f"{key[:12]}…: not base64") from None
            if len(raw) != 32:
                raise ValueError(f"{key[:12]}…: {len(raw)} bytes, an Ed25519 public key "
                                 "has 32")
        return keys


class LinkConfig(Section):
    """The uplink on a metered (LTE) link: what a unit may spend, and on what first."""

    budget_mb_per_day: Annotated[float, Field(gt=0)] | None = None
    """Bytes the unit may send per UTC day; None: no daily cap."""
    budget_mb_per_month: Annotated[float, Field(gt=0)] | None = None
    """Per calendar month (UTC); None: no monthly cap."""
    rate_kbps: Annotated[float, Field(gt=0)] | None = None
    """The average send rate, kilobits per second; None: as fast as the link goes."""
    images: Literal["always", "cheap_link", "on_request"] = "always"
    """Full pictures: with their findings (while the budget allows), only over a cheap
    link (cheap_interfaces), or only when the office asks (the send-image command). The
    crop always goes with its finding."""
    cheap_interfaces: list[str] = []
    """Network interfaces that cost nothing (the depot's Wi-Fi, e.g. ["wlan0"]): while the
    broker is reached through one, held pictures go and nothing counts against a budget."""
    images_below: Annotated[float, Field(gt=0, le=1)] = 0.5
    """Full pictures use a budget only while less than this share of it is used: the
    rest is kept for findings."""
    telemetry_below: Annotated[float, Field(gt=0, le=1)] = 0.8
    """Telemetry goes only while less than this share of a budget is used."""


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(Section):
    version: Annotated[int, Field(ge=0)] = 0
    """Raised by whoever edits the config (the office, remotely); reported back."""
    device: DeviceConfig = DeviceConfig()
    camera: CameraConfig = CameraConfig()
    gps: GpsConfig = GpsConfig()
    detector: DetectorConfig = DetectorConfig()
    events: EventsConfig = EventsConfig()
    sampling: SamplingConfig = SamplingConfig()
    store: StoreConfig = StoreConfig()
    mqtt: MqttConfig | None = None
    """No [mqtt] section: findings stay in the store until one is configured."""
    health: HealthConfig = HealthConfig()
    control: ControlConfig = ControlConfig()
    link: LinkConfig = LinkConfig()
    logging: LoggingConfig = LoggingConfig()

    def content_hash(self) -> str:
        """sha256 over the effective config without secrets; same config, same hash."""
        data = self.model_dump(mode="json", exclude=_SECRET_FIELDS)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def masked(self) -> dict[str, Any]:
        """The effective config as plain data with every secret shown as '***'."""
        data = self.model_dump(mode="json")
        mqtt = data.get("mqtt")
        if mqtt:
            if mqtt.get("password") is not None:
                mqtt["password"] = "***"
            if mqtt.get("tls") and mqtt["tls"].get("key_password") is not None:
                mqtt["tls"]["key_password"] = "***"
        return data

    def mqtt_client_id(self) -> str:
        assert self.mqtt is not None
        return self.mqtt.client_id or f"patrol-{self.device.id}"


_SECRET_FIELDS: dict[str, Any] = {"mqtt": {"password": True, "tls": {"key_password": True}}}


def _format_errors(err: ValidationError, data: dict[str, Any]
                   ) -> tuple[list[str], list[dict[str, Any]]]:
    problems, details = [], []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        secret = _is_secret_loc(e["loc"])
        value = "***" if secret else e.get("input")
        if e["type"] == "missing":
            problems.append(f"{loc}: required key is missing")
            details.append({"key": loc, "value": None, "why": "required key is missing"})
            continue
        if e["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
            details.append({"key": loc, "value": value, "why": "unknown key"})
            continue
        problems.append(f"{loc} = {'***' if secret else repr(value)}: {msg}")
        details.append({"key": loc, "value": value, "why": msg})
    return problems, details


def _is_secret_loc(loc: tuple[Any, ...]) -> bool:
    return bool(loc) and str(loc[-1]) in {"password", "key_password"}


def _read_secret_file(path: Path, key: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise ConfigError(str(path), [f"{key} = {str(path)!r}: cannot read ({e.strerror})"]) from e


_SECRET_PATHS = (("mqtt", "password_file"), ("mqtt", "tls", "ca_file"),
                 ("mqtt", "tls", "cert_file"), ("mqtt", "tls", "key_file"),
                 ("mqtt", "tls", "key_password_file"))
_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _expand_paths(data: dict[str, Any]) -> list[str]:
    """Expand ``${NAME}`` in the secret and TLS file paths, in place; a problem for each
    path that names a variable that is not set."""
    problems = []
    for keys in _SECRET_PATHS:
        parent: Any = data
        for k in keys[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if not isinstance(value, str) or "$" not in value:
            continue
        missing = [a or b for a, b in _VAR.findall(value) if (a or b) not in os.environ]
        if missing:
            hint = (" (systemd sets it for the service from LoadCredential=; run this as the "
                    "service does, or give the file's path)"
                    if "CREDENTIALS_DIRECTORY" in missing else "")
            problems.append(f"{'.'.join(keys)} = {value!r}: {', '.join(missing)} is not set"
                            f"{hint}")
            continue
        parent[keys[-1]] = _VAR.sub(lambda m: os.environ[m.group(1) or m.group(2)], value)
    return problems


def _fill_secrets(data: dict[str, Any]) -> None:
    """Resolve secrets from the environment and secret files into the raw data."""
    mqtt = data.get("mqtt")
    if not isinstance(mqtt, dict):
        return
    if env := os.environ.get(ENV_MQTT_PASSWORD):
        mqtt["password"] = env
    elif isinstance(pf := mqtt.get("password_file"), str) and "password" not in mqtt:
        mqtt["password"] = _read_secret_file(Path(pf), "mqtt.password_file")
    tls = mqtt.get("tls")
    if isinstance(tls, dict):
        if env := os.environ.get(ENV_MQTT_KEY_PASSWORD):
            tls["key_password"] = env
        elif isinstance(kf := tls.get("key_password_file"), str) and "key_password" not in tls:
            tls["key_password"] = _read_secret_file(Path(kf), "mqtt.tls.key_password_file")


def _check_files(cfg: Config) -> list[str]:
    """Files the config names must be readable now, not at the first reconnect."""
    problems = []
    if cfg.mqtt and cfg.mqtt.tls:
        tls = cfg.mqtt.tls
        for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file),
                          ("key_file", tls.key_file)):
            if path is None:
                continue
            try:
                with open(path, "rb") as fh:
                    fh.read(1)
            except OSError as e:
                problems.append(f"mqtt.tls.{key} = {str(path)!r}: cannot read ({e.strerror})")
    return problems


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate raw config data (e.g. parsed TOML) into a Config, or raise ConfigError."""
    data = json.loads(json.dumps(data, default=str))  # deep copy; we fill secrets in place
    if problems := _expand_paths(data):
        raise ConfigError(source, problems)
    _fill_secrets(data)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, *_format_errors(e, data)) from None
    problems = _check_files(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML config file's data, not yet validated; ConfigError if it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), [f"cannot read config file ({e.strerror})"]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), [f"not valid TOML: {e}"]) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file, or raise ConfigError naming each problem."""
    return parse_config(read_config_file(path), source=str(path))
