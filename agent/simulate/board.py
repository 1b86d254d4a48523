"""A calibration board in front of the vehicle, as its camera sees it.

``patrol-agent calibrate`` measures the camera's mounting from a printed chessboard
standing upright on the road, facing the vehicle, centred on its axis at a measured
distance. This draws that scene through :class:`~agent.simulate.camera.Camera` (the
projection every simulated picture goes through), so the calibration can be tested
with any mounting, and shows what the board looks like from the vehicle.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from agent.simulate.camera import Camera

SUPERSAMPLE = 4
"""Drawn this many times larger and averaged down: corners land where they should to a
fraction of a pixel, as a real camera's optics blend the squares' edges."""


@dataclass(frozen=True, slots=True)
class Board:
    """A printed chessboard: ``cols`` x ``rows`` inner corners (where four squares meet),
    squares of ``square_m``, standing so that its lowest inner corners are
    ``lowest_corner_m`` above the road."""

    cols: int = 9
    rows: int = 6
    square_m: float = 0.15
    lowest_corner_m: float = 0.6

    def corners(self, distance_m: float, offset_m: float = 0.0) -> np.ndarray:
        """The inner corners in the vehicle frame (x right, y ahead, z up), (rows*cols, 3):
        row by row from the top, each left to right, as :func:`agent.calibrate.find_board`
        returns them."""
        xs = (np.arange(self.cols) - (self.cols - 1) / 2) * self.square_m + offset_m
        zs = self.lowest_corner_m + (self.rows - 1 - np.arange(self.rows)) * self.square_m
        return np.array([(x, distance_m, z) for z in zs for x in xs], dtype=np.float64)


def render_board(camera: Camera, board: Board, distance_m: float, offset_m: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    """The camera's picture (BGR) of the board standing on a road under a plain sky, with
    a little sensor noise."""
    s = SUPERSAMPLE
    cam = camera.scaled(camera.width * s, camera.height * s)
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    img[:] = (190, 170, 150)  # sky
    road = np.array([[-200.0, 1.0, 0.0], [200.0, 1.0, 0.0], [2000.0, 5000.0, 0.0],
                     [-2000.0, 5000.0, 0.0]])
    _fill(img, cam, road, (85, 88, 92))
    sq = board.square_m
    left, right = -(board.cols + 1) / 2 * sq + offset_m, (board.cols + 1) / 2 * sq + offset_m
    bottom = board.lowest_corner_m - sq
    top = board.lowest_corner_m + board.rows * sq
    # the white sheet, a square's margin round the squares
    _fill(img, cam, _rect(left - sq / 2, right + sq / 2, bottom - sq / 2, top + sq / 2,
                          distance_m), (235, 235, 235))
    for j in range(board.rows + 1):
        for i in range(board.cols + 1):
            if (i + j) % 2 == 0:
                x0 = left + i * sq
                z1 = top - j * sq
                _fill(img, cam, _rect(x0, x0 + sq, z1 - sq, z1, distance_m), (25, 25, 25))
    out = cv2.resize(img, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(seed).normal(0, 2.0, out.shape)
    return np.clip(out + noise, 0, 255).astype(np.uint8)


def _rect(x0: float, x1: float, z0: float, z1: float, y: float) -> np.ndarray:
    return np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])


def _fill(img: np.ndarray, cam: Camera, poly: np.ndarray, colour: tuple[int, int, int]) -> None:
    px = cam.project_polygon(poly)
    if px is not None:
        cv2.fillPoly(img, [np.round(px * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)
