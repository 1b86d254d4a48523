"""The vehicle camera: a forward-facing pinhole, the one projection used for every image.

Training scenes and drive frames both go through :class:`Camera`, so an object at a given
distance has the same size and place in both; a detector trained on one works on the other.

Vehicle frame: X metres to the right, Y metres ahead, Z metres up, origin on the ground
under the camera. Camera frame: x right, y down, z along the optical axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NEAR_M = 0.5
"""Points closer than this along the optical axis are clipped (they would blow up)."""


@dataclass(frozen=True, slots=True)
class Camera:
    """A pinhole on the vehicle: the defaults are the patrol unit's dash camera."""

    width: int = 640
    height: int = 360
    hfov_deg: float = 70.0
    height_m: float = 1.5
    tilt_deg: float = 4.0
    """Down tilt of the optical axis (the road fills the lower part of the frame)."""
    yaw_deg: float = 0.0
    """Heading offset from the vehicle's axis, clockwise (a camera looking a little right)."""
    roll_deg: float = 0.0
    """Turned about its optical axis, counter-clockwise as seen from behind it: the
    horizon in its pictures falls towards the right."""

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def horizon_y(self) -> float:
        """Image row of the horizon (above the centre when the camera tilts down)."""
        return self.height / 2 - self.focal_px * math.tan(math.radians(self.tilt_deg))

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera with another image size (same field of view across the width)."""
        return Camera(width, height, self.hfov_deg, self.height_m, self.tilt_deg, self.yaw_deg,
                      self.roll_deg)

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """Vehicle-frame points (N, 3) -> camera-frame points (N, 3)."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
        yaw, tilt = math.radians(self.yaw_deg), math.radians(self.tilt_deg)
        cy, sy = math.cos(yaw), math.sin(yaw)
        x = pts[:, 0] * cy - pts[:, 1] * sy
        fwd = pts[:, 0] * sy + pts[:, 1] * cy
        dz = pts[:, 2] - self.height_m
        ct, st = math.cos(tilt), math.sin(tilt)
        zc = fwd * ct - dz * st
        yc = -(fwd * st + dz * ct)
        if self.roll_deg:
            roll = math.radians(self.roll_deg)
            cr, sr = math.cos(roll), math.sin(roll)
            x, yc = x * cr - yc * sr, x * sr + yc * cr
        return np.stack([x, yc, zc], axis=1)

    def project_camera(self, cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (N, 3), all in front of the near plane -> pixels (N, 2)."""
        f = self.focal_px
        z = np.maximum(cam[:, 2], 1e-6)
        return np.stack([self.width / 2 + f * cam[:, 0] / z,
                         self.height / 2 + f * cam[:, 1] / z], axis=1)

    def project(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vehicle-frame points -> (pixels (N, 2), depth along the axis (N,))."""
        cam = self.to_camera(pts)
        return self.project_camera(cam), cam[:, 2]

    def project_polygon(self, pts: np.ndarray) -> np.ndarray | None:
        """A planar polygon in the vehicle frame, clipped at the near plane, as pixels.

        Returns None when nothing of it is in front of the camera.
        """
        cam = self.to_camera(pts)
        inside = cam[:, 2] >= NEAR_M
        if inside.all():
            return self.project_camera(cam)
        if not inside.any():
            return None
        out: list[np.ndarray] = []
        n = len(cam)
        for i in range(n):
            a, b = cam[i], cam[(i + 1) % n]
            ina, inb = a[2] >= NEAR_M, b[2] >= NEAR_M
            if ina:
                out.append(a)
            if ina != inb:
                t = (NEAR_M - a[2]) / (b[2] - a[2])
                out.append(a + t * (b - a))
        if len(out) < 3:
            return None
        return self.project_camera(np.array(out))
