"""How a scene looks: palette, light, weather and camera defects, and applying them.

A drive keeps one look for its whole length (the weather does not change every frame); a
training scene draws a new one each time, so the detector sees every kind of day.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Colour = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Look:
    sky_top: Colour
    sky_bottom: Colour
    skyline: Colour
    ground: Colour
    sidewalk: Colour
    road: Colour
    kerb: Colour
    gain: float
    """Brightness multiplier (dusk < 1 < glare)."""
    bias: float
    contrast: float
    cast: tuple[float, float, float]
    """Per-channel (B, G, R) gains: white balance off."""
    fog: float
    """0 clear .. 0.7 thick haze at the horizon."""
    rain: float
    """0 dry .. 1 heavy streaks."""
    blur_px: float
    """Motion blur length at full speed (pixels at 640 px width)."""
    noise: float
    """Sensor noise sigma (grey levels)."""
    jpeg_quality: int
    """Re-encode quality; 0 means none."""
    skyline_seed: int


def _col(r: np.random.Generator, base: Colour, jitter: int) -> Colour:
    v = np.clip(np.asarray(base) + r.integers(-jitter, jitter + 1, 3), 0, 255)
    return int(v[0]), int(v[1]), int(v[2])


def random_look(r: np.random.Generator) -> Look:
    """A random day: overcast, sunny, dusk, rain or fog, with a plausible palette."""
    kind = r.choice(["sunny", "overcast", "dusk", "rain", "fog"], p=[0.35, 0.3, 0.12, 0.13, 0.1])
    grey = int(r.integers(70, 120))
    road = _col(r, (grey, grey, grey + 3), 8)
    if kind == "sunny":
        sky_top, sky_bottom = _col(r, (210, 150, 90), 25), _col(r, (240, 215, 190), 15)
    elif kind == "dusk":
        sky_top, sky_bottom = _col(r, (120, 80, 70), 20), _col(r, (120, 160, 220), 25)
    else:
        sky_top, sky_bottom = _col(r, (180, 175, 170), 20), _col(r, (215, 212, 208), 15)
    wet = kind == "rain"
    if wet:
        road = tuple(int(v * 0.7) for v in road)  # type: ignore[assignment]
    gain = {"sunny": r.uniform(0.95, 1.25), "overcast": r.uniform(0.8, 1.05),
            "dusk": r.uniform(0.45, 0.75), "rain": r.uniform(0.6, 0.9),
            "fog": r.uniform(0.85, 1.1)}[kind]
    cast = tuple(float(v) for v in r.uniform(0.88, 1.12, 3))
    if kind == "dusk":
        cast = (cast[0] * 0.85, cast[1] * 0.95, cast[2] * 1.1)
    return Look(
        sky_top=sky_top, sky_bottom=sky_bottom,
        skyline=_col(r, (150, 150, 150), 30),
        ground=_col(r, [(90, 120, 110), (120, 130, 135), (70, 110, 90)][int(r.integers(3))], 15),
        sidewalk=_col(r, [(150, 155, 160), (110, 120, 150), (140, 140, 140)][int(r.integers(3))],
                      15),
        road=road, kerb=_col(r, (190, 190, 190), 20),
        gain=float(gain), bias=float(r.uniform(-15, 15)),
        contrast=float(r.uniform(0.75, 1.2)), cast=cast,  # type: ignore[arg-type]
        fog=float(r.uniform(0.35, 0.7) if kind == "fog" else r.uniform(0.0, 0.2)),
        rain=float(r.uniform(0.4, 1.0) if wet else 0.0),
        blur_px=float(r.uniform(0, 8)), noise=float(r.uniform(1, 8)),
        jpeg_quality=int(r.integers(25, 90)) if r.random() < 0.6 else 0,
        skyline_seed=int(r.integers(2**31)),
    )


def sky(look: Look, width: int, height: int, horizon: float, heading_deg: float,
        focal: float) -> np.ndarray:
    """Sky gradient with a distant skyline fixed to compass directions (it pans on turns)."""
    img = np.empty((height, width, 3), np.uint8)
    h = max(1, int(np.clip(horizon, 1, height)))
    t = np.linspace(0, 1, h)[:, None]
    grad = (np.asarray(look.sky_top)[None] * (1 - t) + np.asarray(look.sky_bottom)[None] * t)
    img[:h] = cv2.resize(grad.astype(np.uint8)[:, None, :], (width, h),
                         interpolation=cv2.INTER_NEAREST)
    img[h:] = look.ground
    prof = np.random.default_rng(look.skyline_seed)
    blocks = prof.uniform(0.0, 1.0, 720) ** 2
    heights = np.repeat(blocks.reshape(-1, 4).max(axis=1), 4)  # city blocks, 2 deg wide
    xs = np.arange(0, width + 4, 4)
    az = (heading_deg + np.degrees(np.arctan((xs - width / 2) / focal))) % 360
    col_h = heights[(az * 2).astype(int) % 720] * focal * 0.12
    top = np.stack([np.repeat(xs, 2)[1:], np.repeat(horizon - col_h, 2)[:-1]], axis=1)
    poly = np.concatenate([top, [[xs[-1], horizon + 1], [0, horizon + 1]]])
    cv2.fillPoly(img, [np.round(poly * 4).astype(np.int32)], look.skyline, cv2.LINE_8, 2)
    return img


def apply_look(img: np.ndarray, look: Look, r: np.random.Generator, horizon: float,
               speed_frac: float = 1.0) -> np.ndarray:
    """Light, colour cast, fog, rain, motion blur, noise and compression, in that order.

    `speed_frac` (0 standing .. 1 full speed) scales the motion blur.
    """
    h, w = img.shape[:2]
    gains = np.asarray(look.cast, np.float32) * look.gain * look.contrast
    offset = (1 - look.contrast) * 128 * look.gain + look.bias
    levels = np.arange(256, dtype=np.float32)[:, None]
    lut = np.clip(levels * gains[None, :] + offset, 0, 255).astype(np.uint8)
    out = cv2.LUT(img, lut.reshape(256, 1, 3))
    if look.fog > 0.02:
        rows = np.arange(h, dtype=np.float32)
        dist = np.abs(rows - horizon) / max(1.0, h * 0.35)
        wgt = look.fog * np.exp(-dist * 2.5)
        wgt[: max(0, int(horizon))] = look.fog * 0.8
        band = np.flatnonzero(wgt > 0.01)
        if band.size:
            a, b = band[0], band[-1] + 1
            wb = wgt[a:b, None, None]
            out[a:b] = (out[a:b] * (1 - wb) + 215.0 * wb).astype(np.uint8)
    if look.rain > 0:
        layer = np.zeros((h, w), np.uint8)
        n = int(look.rain * w * h / 900)
        xs = r.uniform(0, w, n)
        ys = r.uniform(0, h, n)
        ln = r.uniform(6, 18, n) * (h / 360)
        dx = ln * 0.25
        for x, y, length, d in zip(xs, ys, ln, dx, strict=True):
            cv2.line(layer, (int(x), int(y)), (int(x + d), int(y + length)), 255, 1)
        out = cv2.addWeighted(out, 0.92, cv2.cvtColor(layer, cv2.COLOR_GRAY2BGR),
                              0.25 * look.rain, 0.0)
    k = round(look.blur_px * speed_frac * w / 640)
    if k >= 2:
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        out = cv2.filter2D(out, -1, kernel)
    if look.noise > 0.5:  # grain at half resolution: cheap, and a real sensor's is blotchy
        small = r.standard_normal(((h + 1) // 2, (w + 1) // 2), dtype=np.float32) * look.noise
        grain = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        out = cv2.add(out, cv2.merge([grain, grain, grain]), dtype=cv2.CV_8U)
    if look.jpeg_quality:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out
