"""Which frames perception analyses: none while the vehicle stands, one every few metres.

On a Pi the detector is nearly all of a unit's work. A vehicle at a red light or parked
keeps seeing the same scene, so after it has stood for ``stationary_after_s`` no frame is
analysed until it moves again; with ``every_m`` set, a frame is analysed only once the
vehicle has gone that far since the last one. Both need the GPS: a frame without a usable
position is always analysed (missing an object costs more than analysing a frame).

While the vehicle stands, the camera stage also takes frames only every
``STANDING_READ_S`` from a source that drops what nobody takes (a device, a recording
played at its pace; not a network stream, which would buffer them), so that decoding frames nobody
analyses does not cost what analysing them would: the first frame taken after the vehicle
moves on ends the pause.

A skipped frame is handed to the tracker as skipped (``Tracker.skip``): its time does not
count towards ending a track, so an object in view when the vehicle stopped is still one
track when it moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from agent.config import SamplingConfig
from agent.geo import haversine_m
from agent.gps import GeoTag

STANDING_READ_S = 0.5
"""How often the camera stage takes a frame while the vehicle stands."""


class Skip(Enum):
    NO = "analysed"
    STATIONARY = "stationary"
    DISTANCE = "distance"


@dataclass
class SamplingStats:
    stationary: int = 0
    """Frames not analysed because the vehicle stood still."""
    distance: int = 0
    """Frames not analysed because the vehicle had not gone ``every_m`` since the last."""


class Sampler:
    """Decides, frame by frame in capture order, whether a frame is analysed."""

    def __init__(self, cfg: SamplingConfig) -> None:
        self.cfg = cfg
        self.stats = SamplingStats()
        self.standing = False
        """The last frame was not analysed because the vehicle stands: the camera may take
        frames slowly until it moves (pipeline's capture loop)."""
        self.analyse_all = False
        """Set while a new model or camera is on trial: it is judged on frames analysed."""
        self._stood_since: float | None = None
        self._last: tuple[float, float] | None = None

    def decide(self, t: float, where: GeoTag | None) -> Skip:
        """``t``: the frame's capture time in seconds; ``where``: the vehicle then."""
        if where is None or self.analyse_all:
            self._stood_since = None
            self.standing = False
            self._last = None if where is None else (where.lat, where.lon)
            return Skip.NO
        speed = where.speed_mps
        if speed is not None and speed < self.cfg.stationary_speed_mps:
            if self._stood_since is None:
                self._stood_since = t
            if t - self._stood_since >= self.cfg.stationary_after_s:
                self.stats.stationary += 1
                self.standing = True
                return Skip.STATIONARY
        else:
            self._stood_since = None
        self.standing = False
        if self.cfg.every_m > 0 and self._last is not None and \
                haversine_m(*self._last, where.lat, where.lon) < self.cfg.every_m:
            self.stats.distance += 1
            return Skip.DISTANCE
        self._last = (where.lat, where.lon)
        return Skip.NO
