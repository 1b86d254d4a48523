"""How the camera sits on the vehicle, measured from a printed board in front of it.

A finding's place comes from the camera's mounting (``[camera]``: field of view, height,
down tilt, roll, and turn against the vehicle's axis). Off by a degree of tilt, an object
20 m ahead is placed metres short or long. This measures the mounting on the vehicle.

The technician stands a printed chessboard upright on the road, facing the vehicle and
centred on its axis, measures two things with a tape (the distance along the ground from
the point under the camera to the board, and the camera's height above the road) and
runs ``patrol-agent calibrate``. It finds the board's inner corners in a few frames, then
fits the field of view, tilt, roll and turn that put the board's known corners where the
camera sees them (least squares over all frames). The height is taken as measured: from
one board at one distance a higher camera and a camera tilted further down look the same.

The fit is judged by its reprojection error: a board that was not upright, centred or at
the measured distance does not fit one camera, and that is said.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agent.simulate.board import Board
from agent.simulate.camera import Camera

MAX_RMS_PX = 1.5
"""A fit worse than this (per corner, in pixels) means the board was not as measured."""


class CalibrationError(Exception):
    """The board could not be found or the fit is not to be trusted; the message says why."""


@dataclass(frozen=True)
class Mounting:
    """The measured mounting, in the config's terms (``[camera]``)."""

    hfov_deg: float
    tilt_deg: float
    roll_deg: float
    heading_offset_deg: float
    mount_height_m: float
    rms_px: float
    """How far, on average, the fitted camera puts the corners from where they were seen."""
    frames: int

    def camera(self, width: int, height: int) -> Camera:
        return Camera(width, height, hfov_deg=self.hfov_deg, height_m=self.mount_height_m,
                      tilt_deg=self.tilt_deg, yaw_deg=self.heading_offset_deg,
                      roll_deg=self.roll_deg)

    def config_values(self) -> dict[str, float]:
        return {"hfov_deg": round(self.hfov_deg, 2), "tilt_deg": round(self.tilt_deg, 2),
                "roll_deg": round(self.roll_deg, 2),
                "heading_offset_deg": round(self.heading_offset_deg, 2),
                "mount_height_m": round(self.mount_height_m, 3)}


def find_board(image: np.ndarray, board: Board) -> np.ndarray | None:
    """The board's inner corners in pixels, (rows*cols, 2), in :meth:`Board.corners`'s
    order (row by row from the top, left to right); None when it is not in the picture."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    found, corners = cv2.findChessboardCornersSB(gray, (board.cols, board.rows),
                                                 flags=cv2.CALIB_CB_ACCURACY)
    if not found:
        return None
    grid = corners.reshape(board.rows, board.cols, 2)
    # OpenCV may list them from any corner; the board stands upright (a camera is not
    # turned near 45 degrees about its axis), so the first row is the top one...
    if grid[0, :, 1].mean() > grid[-1, :, 1].mean():
        grid = grid[::-1]
    # ... and each row runs left to right.
    if grid[:, 0, 0].mean() > grid[:, -1, 0].mean():
        grid = grid[:, ::-1]
    return grid.reshape(-1, 2).astype(np.float64)


def fit(views: list[np.ndarray], board: Board, distance_m: float, mount_height_m: float,
        width: int, height: int, offset_m: float = 0.0,
        start: tuple[float, float, float, float] = (70.0, 4.0, 0.0, 0.0)) -> Mounting:
    """Field of view, tilt, roll and turn (degrees) that put the board's corners where
    the ``views`` (from :func:`find_board`) saw them: damped Gauss-Newton from ``start``."""
    if not views:
        raise CalibrationError("the board was not found in any frame")
    world = board.corners(distance_m, offset_m)
    seen = np.concatenate(views)

    def residuals(p: np.ndarray) -> np.ndarray:
        cam = Camera(width, height, hfov_deg=p[0], height_m=mount_height_m, tilt_deg=p[1],
                     roll_deg=p[2], yaw_deg=p[3])
        px, depth = cam.project(world)
        if (depth <= 0).any():
            return np.full(seen.size, 1e6)
        return (np.tile(px, (len(views), 1)) - seen).ravel()

    p = np.array(start, dtype=np.float64)
    damping = 1e-3
    r = residuals(p)
    for _ in range(100):
        jac = np.empty((r.size, 4))
        for k in range(4):
            step = np.zeros(4)
            step[k] = 1e-4
            jac[:, k] = (residuals(p + step) - r) / 1e-4
        a = jac.T @ jac
        g = jac.T @ r
        delta = np.linalg.solve(a + damping * np.diag(np.diag(a)), -g)
        trial = residuals(p + delta)
        if trial @ trial < r @ r:
            p, r, damping = p + delta, trial, damping / 3
            if np.abs(delta).max() < 1e-7:
                break
        else:
            damping *= 5
            if damping > 1e8:
                break
    if not 10 < p[0] < 170:
        raise CalibrationError(f"the fit ran away (field of view {p[0]:.0f} degrees): is the "
                               "board as described (--board, --square, --lowest-corner)?")
    rms = float(np.sqrt(np.mean(r.reshape(-1, 2) ** 2) * 2))
    return Mounting(hfov_deg=float(p[0]), tilt_deg=float(p[1]), roll_deg=float(p[2]),
                    heading_offset_deg=float(p[3]), mount_height_m=mount_height_m,
                    rms_px=rms, frames=len(views))


def draw_grid(image: np.ndarray, mounting: Mounting) -> np.ndarray:
    """The frame with the road grid the mounting implies: lines every few metres ahead
    and to the side, labelled. Where they lie on the real road's marks, it is right."""
    h, w = image.shape[:2]
    cam = mounting.camera(w, h)
    out = image.copy()
    thick = max(1, round(w / 640))
    for ahead in (5, 10, 15, 20, 30, 40):
        line = np.array([[x, ahead, 0.0] for x in np.linspace(-8, 8, 33)])
        _polyline(out, cam, line, (0, 255, 255), thick)
        px, depth = cam.project(np.array([[2.2, ahead, 0.0]]))
        if depth[0] > 0 and 0 <= px[0, 1] < h:
            cv2.putText(out, f"{ahead} m", (int(px[0, 0]) + 3, int(px[0, 1])),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, (0, 255, 255), thick, cv2.LINE_AA)
    for side in (-6.0, -3.5, -1.75, 0.0, 1.75, 3.5, 6.0):
        line = np.array([[side, y, 0.0] for y in np.linspace(3, 60, 58)])
        _polyline(out, cam, line, (255, 200, 0) if side else (0, 0, 255), thick)
    return out


def _polyline(img: np.ndarray, cam: Camera, pts: np.ndarray, colour: tuple[int, int, int],
              thick: int) -> None:
    px, depth = cam.project(pts)
    keep = depth > 0.5
    if keep.sum() >= 2:
        cv2.polylines(img, [np.round(px[keep] * 16).astype(np.int32)], False, colour, thick,
                      cv2.LINE_AA, shift=4)


def write_config(path: Path, mounting: Mounting) -> None:
    """Set the measured values in the config's ``[camera]`` table, keeping the rest of the
    file (comments, order) as it is; the file is replaced atomically."""
    import os

    import tomlkit

    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    if "camera" not in doc:
        doc["camera"] = tomlkit.table()
    for key, value in mounting.config_values().items():
        doc["camera"][key] = value  # type: ignore[index]
    tmp = path.with_name(path.name + ".new")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(tomlkit.dumps(doc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def describe(m: Mounting) -> str:
    """The result in a technician's words."""
    side = "right" if m.heading_offset_deg >= 0 else "left"
    fall = "right" if m.roll_deg >= 0 else "left"
    return (f"field of view {m.hfov_deg:.1f} deg, tilted down {m.tilt_deg:.2f} deg, turned "
            f"{abs(m.heading_offset_deg):.2f} deg to the {side}, rolled {abs(m.roll_deg):.2f} "
            f"deg (the horizon falls to the {fall}), height {m.mount_height_m:.2f} m as "
            f"measured; the board fits within {m.rms_px:.2f} px over {m.frames} frames "
            f"(at 20 m ahead, each degree of tilt is "
            f"{20 ** 2 / m.mount_height_m * math.radians(1):.1f} m along the road)")
