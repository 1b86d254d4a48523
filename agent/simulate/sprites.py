"""Procedural sprites: how each kind of road-side object is drawn into its pixel box.

A sprite fills the box it is given (its projected metric size), so the labelled box is the
object's extent. Appearance comes from the object's own seed, so an object in a drive looks
the same in every frame and the same object seen on a second pass looks the same again.
Colours are BGR; lighting, weather and noise are applied later to the whole image.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Box = tuple[float, float, float, float]
Draw = Callable[[np.ndarray, Box, np.random.Generator], None]

LABELLED_KINDS = ("garbage", "banner", "construction", "bin", "sign")
CLUTTER_KINDS = ("tree", "pole", "lamp", "car", "pedestrian", "bush")

VIVID = [(40, 40, 200), (30, 200, 240), (230, 230, 230), (200, 120, 30), (40, 160, 40),
         (160, 40, 160), (0, 120, 250), (30, 30, 30), (200, 200, 80), (80, 80, 230)]


def _c(color: tuple[int, int, int] | np.ndarray, r: np.random.Generator,
       jitter: int = 18) -> tuple[int, int, int]:
    """A colour varied a little: no two objects of a kind are exactly alike."""
    arr = np.clip(np.asarray(color, dtype=np.int32) + r.integers(-jitter, jitter + 1, 3), 0, 255)
    return int(arr[0]), int(arr[1]), int(arr[2])


def _dark(color: tuple[int, int, int], k: float = 0.65) -> tuple[int, int, int]:
    return int(color[0] * k), int(color[1] * k), int(color[2] * k)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def _rect(img: np.ndarray, x1: float, y1: float, x2: float, y2: float,
          color: tuple[int, int, int]) -> None:
    cv2.rectangle(img, _pt(x1, y1), _pt(max(x1, x2 - 1), max(y1, y2 - 1)), color, -1)


def _stripes(img: np.ndarray, x1: float, y1: float, x2: float, y2: float,
             c1: tuple[int, int, int], c2: tuple[int, int, int], period: float,
             diagonal: bool) -> None:
    """Fill a rectangle with two-colour stripes (warning tape, hoarding bands)."""
    h, w = img.shape[:2]
    ix1, iy1 = max(0, round(x1)), max(0, round(y1))
    ix2, iy2 = min(w, round(x2)), min(h, round(y2))
    if ix2 <= ix1 or iy2 <= iy1:
        return
    yy, xx = np.mgrid[iy1:iy2, ix1:ix2]
    key = (xx - yy) if diagonal else yy
    sel = ((key // max(1.0, period)) % 2).astype(bool)
    roi = img[iy1:iy2, ix1:ix2]
    roi[sel] = c1
    roi[~sel] = c2


def _text_marks(img: np.ndarray, x1: float, y1: float, x2: float, y2: float,
                color: tuple[int, int, int], r: np.random.Generator) -> None:
    """Marks that read as lettering at a distance: glyph strings or blocks."""
    w, h = x2 - x1, y2 - y1
    if w < 6 or h < 4:
        return
    lines = 1 if h < 14 else int(r.integers(1, 3))
    lh = h / lines
    for i in range(lines):
        cy = y1 + lh * (i + 0.5)
        if lh >= 9 and r.random() < 0.7:
            n = int(r.integers(3, 10))
            text = "".join(chr(int(c)) for c in r.integers(65, 91, n))
            scale = lh * 0.6 / 22
            (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            if tw > w * 0.92:
                scale *= w * 0.92 / tw
                tw = int(w * 0.92)
            thick = max(1, round(scale * 2.5))
            cv2.putText(img, text, _pt(x1 + (w - tw) / 2, cy + lh * 0.25), cv2.FONT_HERSHEY_SIMPLEX,
                        scale, color, thick, cv2.LINE_AA)
        else:
            n = int(r.integers(3, 9))
            cw = w * 0.85 / n
            for j in range(n):
                if r.random() < 0.15:
                    continue
                bx = x1 + w * 0.075 + j * cw
                _rect(img, bx, cy - lh * 0.22, bx + cw * 0.7, cy + lh * 0.22, color)


# --- complaint classes --------------------------------------------------------

BAG_COLOURS = [(30, 30, 32), (60, 60, 60), (170, 110, 40), (225, 225, 220), (190, 215, 225),
               (40, 70, 30), (200, 200, 200)]


def _bags(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    n = int(r.integers(2, 7))
    for i in range(n):
        bw = w * r.uniform(0.28, 0.5)
        bh = h * (1.0 if i == n // 2 else r.uniform(0.5, 0.95))
        cx = x1 + bw / 2 if i == 0 else x2 - bw / 2 if i == n - 1 else r.uniform(x1 + bw / 2,
                                                                                   x2 - bw / 2)
        col = _c(BAG_COLOURS[int(r.integers(len(BAG_COLOURS)))], r, 12)
        cy = y2 - bh / 2
        cv2.ellipse(img, _pt(cx, cy + bh * 0.05), _pt(bw / 2, bh * 0.45), 0, 0, 360, col, -1)
        knot = np.array([[cx - bw * 0.12, y2 - bh * 0.85], [cx + bw * 0.12, y2 - bh * 0.85],
                         [cx + bw * 0.05, y2 - bh], [cx - bw * 0.05, y2 - bh]])
        cv2.fillConvexPoly(img, knot.round().astype(np.int32), _dark(col, 0.8))
        if bw > 8:
            cv2.ellipse(img, _pt(cx - bw * 0.12, cy - bh * 0.05), _pt(bw * 0.12, bh * 0.2), 20,
                        0, 360, tuple(min(255, int(v * 1.25) + 20) for v in col), -1)


def _boxes(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cols = int(r.integers(1, 4))
    cw = w / cols
    for i in range(cols):
        stack = int(r.integers(1, 3))
        top = y2 - h * (1.0 if i == cols // 2 else r.uniform(0.5, 1.0))
        sh = (y2 - top) / stack
        for j in range(stack):
            col = _c((70, 120, 165), r, 22)
            bx1 = x1 + i * cw + r.uniform(0, cw * 0.1)
            by2 = y2 - j * sh
            _rect(img, bx1, by2 - sh, x1 + (i + 1) * cw, by2, col)
            _rect(img, bx1 + cw * 0.75, by2 - sh, x1 + (i + 1) * cw, by2, _dark(col, 0.75))
            _rect(img, bx1 + cw * 0.35, by2 - sh, bx1 + cw * 0.45, by2 - sh * 0.5, (190, 200, 210))


def _heap(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    n = 9
    xs = np.linspace(x1, x2, n)
    prof = np.sin(np.linspace(0, np.pi, n)) ** r.uniform(0.5, 1.2) * r.uniform(0.75, 1.0, n)
    prof = np.maximum(prof, 0.05)
    prof[n // 2] = 1.0
    pts = np.concatenate([np.stack([xs, y2 - prof * h], 1), [[x2, y2], [x1, y2]]])
    base = _c([(55, 60, 65), (80, 85, 90), (45, 55, 70), (90, 90, 80)][int(r.integers(4))], r)
    cv2.fillPoly(img, [pts.round().astype(np.int32)], base)
    for _ in range(int(r.integers(5, 16))):
        px = r.uniform(x1 + w * 0.1, x2 - w * 0.1)
        py = r.uniform(y2 - h * 0.7, y2 - h * 0.05)
        col = _c(VIVID[int(r.integers(len(VIVID)))], r) if r.random() < 0.5 else \
            _c(BAG_COLOURS[int(r.integers(len(BAG_COLOURS)))], r)
        sz = max(1.0, w * r.uniform(0.04, 0.12))
        if r.random() < 0.5:
            _rect(img, px - sz, py - sz * 0.7, px + sz, py + sz * 0.7, col)
        else:
            cv2.ellipse(img, _pt(px, py), _pt(sz, sz * 0.7), float(r.uniform(0, 180)), 0, 360,
                        col, -1)


def draw_garbage(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    """Dumped bags, boxes, heaps of mixed rubbish: low, irregular, many colours."""
    v = r.random()
    if v < 0.4:
        _bags(img, box, r)
    elif v < 0.6:
        _boxes(img, box, r)
    elif v < 0.8:
        _heap(img, box, r)
    else:
        x1, y1, x2, y2 = box
        _heap(img, box, r)
        _bags(img, (x1 + (x2 - x1) * 0.4, y1 + (y2 - y1) * 0.3, x2, y2), r)


def _cloth(img: np.ndarray, x1: float, y1: float, x2: float, y2: float,
           r: np.random.Generator) -> None:
    col = _c(VIVID[int(r.integers(len(VIVID)))], r, 25)
    sag = (y2 - y1) * r.uniform(0, 0.12)
    xs = np.linspace(x1, x2, 7)
    bottom = y2 + sag * (np.sin(np.linspace(0, np.pi, 7)) - 1)
    top = y1 + sag * 0.5 * np.sin(np.linspace(0, np.pi, 7))
    pts = np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)])
    cv2.fillPoly(img, [pts.round().astype(np.int32)], col)
    lum = 0.114 * col[0] + 0.587 * col[1] + 0.299 * col[2]
    ink = (20, 20, 20) if lum > 120 else (240, 240, 240)
    if r.random() < 0.4:
        ink = _c(VIVID[int(r.integers(len(VIVID)))], r)
    if r.random() < 0.3 and y2 - y1 > 8:  # a coloured band along the edge
        _rect(img, x1, y1, x2, y1 + (y2 - y1) * 0.15, _dark(col, 0.7))
    pad = (x2 - x1) * 0.05
    _text_marks(img, x1 + pad, y1 + (y2 - y1) * 0.12, x2 - pad, y2 - (y2 - y1) * 0.12, ink, r)


def draw_banner(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    """Illegal banners and placards: cloth between poles, on a fence, or a board on a stick."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    v = r.random()
    pole = _c((90, 90, 95), r, 20) if r.random() < 0.6 else _c((60, 100, 140), r)
    if v < 0.55:  # between two poles (street lamps, trees, wooden stakes)
        pw = max(1.0, w * 0.025)
        _rect(img, x1, y1, x1 + pw, y2, pole)
        _rect(img, x2 - pw, y1, x2, y2, pole)
        top = y1 + h * r.uniform(0.0, 0.15)
        _cloth(img, x1 + pw, top, x2 - pw, top + h * r.uniform(0.3, 0.55), r)
    elif v < 0.8:  # tied to a fence
        fc = _c((150, 150, 150), r, 25)
        rail = max(1, round(h * 0.04))
        for fy in (y1 + h * 0.05, y2 - h * 0.05):
            cv2.line(img, _pt(x1, fy), _pt(x2, fy), fc, rail)
        for fx in np.linspace(x1, x2, max(2, int(w / max(4.0, h * 0.5)))):
            cv2.line(img, _pt(fx, y1), _pt(fx, y2), fc, max(1, rail))
        cx1 = x1 + w * r.uniform(0.0, 0.15)
        cx2 = x2 - w * r.uniform(0.0, 0.15)
        _cloth(img, cx1, y1 + h * 0.1, cx2, y1 + h * r.uniform(0.6, 0.9), r)
    else:  # a placard: a board on a stick or an A-frame
        bh = h * r.uniform(0.45, 0.65)
        sw = max(1.0, w * 0.08)
        cx = (x1 + x2) / 2
        if r.random() < 0.5:
            _rect(img, cx - sw / 2, y1 + bh, cx + sw / 2, y2, pole)
        else:
            cv2.line(img, _pt(cx, y1 + bh), _pt(x1 + w * 0.15, y2), pole, max(1, round(sw / 2)))
            cv2.line(img, _pt(cx, y1 + bh), _pt(x2 - w * 0.15, y2), pole, max(1, round(sw / 2)))
        _cloth(img, x1, y1, x2, y1 + bh, r)


def _cone(img: np.ndarray, cx: float, y2: float, cw: float, ch: float,
          r: np.random.Generator) -> None:
    orange = _c((20, 100, 245), r, 15)
    base = max(1.0, ch * 0.08)
    _rect(img, cx - cw / 2, y2 - base, cx + cw / 2, y2, (30, 30, 30))
    tri = np.array([[cx - cw * 0.38, y2 - base], [cx + cw * 0.38, y2 - base],
                    [cx + cw * 0.08, y2 - ch], [cx - cw * 0.08, y2 - ch]])
    cv2.fillConvexPoly(img, tri.round().astype(np.int32), orange)
    for f in (0.35, 0.6) if ch > 10 else (0.45,):
        yy = y2 - ch * f
        half = cw * (0.38 - 0.30 * f) * 1.0
        _rect(img, cx - half, yy - ch * 0.07, cx + half, yy + ch * 0.07, (235, 235, 235))


def draw_construction(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    """Unauthorised works: hoardings, striped barriers, cones, piles of material."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    v = r.random()
    orange, white = _c((20, 110, 245), r, 15), _c((235, 235, 235), r, 10)
    red = _c((40, 40, 210), r, 15)
    if v < 0.3:  # hoarding / site fence
        panel = [(230, 230, 230), (170, 110, 40), (60, 140, 60), (150, 150, 150)][int(
            r.integers(4))]
        panel = _c(panel, r, 15)
        _rect(img, x1, y1, x2, y2, panel)
        band = h * r.uniform(0.12, 0.25)
        _stripes(img, x1, y2 - band, x2, y2, orange if r.random() < 0.6 else red, white,
                 max(2.0, band * 0.6), True)
        if r.random() < 0.6:
            _stripes(img, x1, y1, x2, y1 + band * 0.6, orange, white, max(2.0, band * 0.6), True)
        n = max(2, int(w / max(3.0, h * 0.7)))
        for px in np.linspace(x1, x2, n):
            _rect(img, px - max(0.5, w * 0.006), y1, px + max(0.5, w * 0.006), y2,
                  _dark(panel, 0.7))
        if r.random() < 0.4:
            _text_marks(img, x1 + w * 0.2, y1 + h * 0.3, x2 - w * 0.2, y1 + h * 0.6,
                        (40, 40, 40), r)
    elif v < 0.55:  # barrier on legs
        leg = max(1.0, w * 0.03)
        _rect(img, x1 + w * 0.05, y1, x1 + w * 0.05 + leg, y2, (60, 60, 60))
        _rect(img, x2 - w * 0.05 - leg, y1, x2 - w * 0.05, y2, (60, 60, 60))
        beams = int(r.integers(1, 3))
        for i in range(beams):
            by = y1 + h * (0.05 + 0.4 * i)
            c1 = orange if r.random() < 0.6 else red
            _stripes(img, x1, by, x2, by + h * 0.3, c1, white, max(2.0, h * 0.25), True)
        if r.random() < 0.5:
            cv2.circle(img, _pt(x1 + w * 0.1, y1), max(1, round(h * 0.06)), (40, 200, 255), -1)
    elif v < 0.8:  # cones
        n = int(r.integers(1, 6))
        cw = w / n
        for i in range(n):
            ch = h * (1.0 if i == 0 else r.uniform(0.85, 1.0))
            _cone(img, x1 + cw * (i + 0.5), y2, cw * r.uniform(0.7, 1.0), ch, r)
    else:  # pile of material with a cone or a striped sign
        xs = np.linspace(x1, x2, 9)
        prof = np.maximum(np.sin(np.linspace(0, np.pi, 9)), 0.04) * r.uniform(0.5, 0.9)
        sand = _c([(90, 150, 190), (110, 120, 130), (60, 90, 120)][int(r.integers(3))], r)
        pts = np.concatenate([np.stack([xs, y2 - prof * h], 1), [[x2, y2], [x1, y2]]])
        cv2.fillPoly(img, [pts.round().astype(np.int32)], sand)
        if r.random() < 0.6:  # a stack of pipes or a pallet of bricks
            px1 = x1 + w * r.uniform(0.4, 0.6)
            ph = h * r.uniform(0.35, 0.6)
            if r.random() < 0.5:
                rad = max(1.0, ph / 6)
                for row in range(3):
                    for k in range(3 - row):
                        c = _pt(px1 + rad * (1 + 2 * k + row), y2 - rad * (1 + 1.7 * row))
                        cv2.circle(img, c, round(rad), (120, 120, 120), -1)
                        cv2.circle(img, c, max(0, round(rad * 0.5)), (50, 50, 50), -1)
            else:
                _stripes(img, px1, y2 - ph, min(x2, px1 + w * 0.35), y2, (40, 60, 170),
                         (50, 80, 190), max(2.0, ph / 5), False)
        _cone(img, x1 + w * 0.1, y2, w * 0.15, h, r)


def draw_bin(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    """A legal public bin: upright, regular, a lid and a slot (garbage's look-alike)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    n = 2 if w > h * 0.9 else 1
    bw = w / n
    for i in range(n):
        body = _c([(50, 110, 40), (120, 120, 120), (150, 90, 30), (175, 175, 180),
                   (40, 80, 130), (60, 60, 60)][int(r.integers(6))], r, 12)
        bx1, bx2 = x1 + i * bw + bw * 0.04, x1 + (i + 1) * bw - bw * 0.04
        lid = h * 0.14
        _rect(img, bx1 + bw * 0.03, y1 + lid, bx2 - bw * 0.03, y2, body)
        _rect(img, bx2 - bw * 0.25, y1 + lid, bx2 - bw * 0.03, y2, _dark(body, 0.8))
        cv2.ellipse(img, _pt((bx1 + bx2) / 2, y1 + lid), _pt((bx2 - bx1) / 2, lid), 0, 180, 360,
                    _dark(body, 0.7), -1)
        _rect(img, bx1, y1 + lid * 0.8, bx2, y1 + lid * 1.3, _dark(body, 0.7))
        _rect(img, bx1 + bw * 0.25, y1 + h * 0.22, bx2 - bw * 0.25, y1 + h * 0.3, (20, 20, 20))
        if r.random() < 0.7:
            _rect(img, bx1 + bw * 0.25, y1 + h * 0.42, bx2 - bw * 0.3, y1 + h * 0.6,
                  (230, 230, 230))
            cv2.circle(img, _pt((bx1 + bx2) / 2 - bw * 0.03, y1 + h * 0.51),
                       max(1, round(bw * 0.08)), (60, 150, 60), -1)


def draw_sign(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    """A legal road sign on a pole (banner's look-alike): a plate at the top, one pole."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    ph = min(h * r.uniform(0.28, 0.42), w * 1.1)
    pw = max(1.0, w * 0.08)
    _rect(img, cx - pw / 2, y1 + ph * 0.5, cx + pw / 2, y2, _c((150, 150, 155), r, 15))
    v = r.random()
    bd = max(1, round(w * 0.08))
    if v < 0.3:  # round: prohibitory
        rad = min(w, ph) / 2
        cv2.circle(img, _pt(cx, y1 + rad), round(rad), (40, 40, 210), -1)
        cv2.circle(img, _pt(cx, y1 + rad), max(0, round(rad - bd)), (240, 240, 240), -1)
        _text_marks(img, cx - rad * 0.5, y1 + rad * 0.6, cx + rad * 0.5, y1 + rad * 1.4,
                    (20, 20, 20), r)
    elif v < 0.5:  # triangle: warning
        tri = np.array([[x1, y1 + ph], [x2, y1 + ph], [cx, y1]])
        cv2.fillConvexPoly(img, tri.round().astype(np.int32), (40, 40, 210))
        inner = np.array([[x1 + bd * 1.8, y1 + ph - bd], [x2 - bd * 1.8, y1 + ph - bd],
                          [cx, y1 + bd * 2.2]])
        cv2.fillConvexPoly(img, inner.round().astype(np.int32),
                           (60, 220, 240) if r.random() < 0.5 else (240, 240, 240))
    elif v < 0.75:  # blue: mandatory / direction
        col = _c((170, 90, 20), r, 15)
        if r.random() < 0.5:
            rad = min(w, ph) / 2
            cv2.circle(img, _pt(cx, y1 + rad), round(rad), col, -1)
            cv2.arrowedLine(img, _pt(cx, y1 + rad * 1.6), _pt(cx, y1 + rad * 0.4),
                            (240, 240, 240), max(1, round(rad * 0.25)), tipLength=0.4)
        else:
            _rect(img, x1, y1, x2, y1 + ph, col)
            _text_marks(img, x1 + w * 0.1, y1 + ph * 0.15, x2 - w * 0.1, y1 + ph * 0.85,
                        (240, 240, 240), r)
    else:  # rectangular plate: street name, information
        col = _c([(60, 120, 30), (240, 240, 240), (170, 90, 20)][int(r.integers(3))], r, 12)
        _rect(img, x1, y1, x2, y1 + ph, col)
        cv2.rectangle(img, _pt(x1, y1), _pt(x2 - 1, y1 + ph), (235, 235, 235), max(1, bd // 2))
        ink = (20, 20, 20) if col[1] > 200 else (240, 240, 240)
        _text_marks(img, x1 + w * 0.1, y1 + ph * 0.15, x2 - w * 0.1, y1 + ph * 0.85, ink, r)


# --- clutter ------------------------------------------------------------------

def draw_tree(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    _rect(img, cx - w * 0.06, y1 + h * 0.4, cx + w * 0.06, y2, _c((40, 60, 85), r))
    green = _c([(40, 110, 50), (50, 90, 40), (60, 130, 90), (30, 80, 60)][int(r.integers(4))], r)
    for _ in range(int(r.integers(3, 7))):
        ex, ey = r.uniform(x1 + w * 0.25, x2 - w * 0.25), r.uniform(y1 + h * 0.2, y1 + h * 0.45)
        cv2.ellipse(img, _pt(ex, ey), _pt(w * r.uniform(0.2, 0.35), h * r.uniform(0.12, 0.22)),
                    0, 0, 360, _c(green, r, 15), -1)


def draw_pole(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    col = _c((110, 115, 120), r, 20)
    _rect(img, x1, y1, x2, y2, col)
    w = x2 - x1
    _rect(img, x1 - w * 2, y1 + (y2 - y1) * 0.05, x2 + w * 2, y1 + (y2 - y1) * 0.07, col)


def draw_lamp(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w = x2 - x1
    col = _c((90, 95, 100), r, 20)
    _rect(img, x1, y1, x1 + max(1.0, w * 0.15), y2, col)
    cv2.line(img, _pt(x1, y1), _pt(x2, y1), col, max(1, round(w * 0.1)))
    _rect(img, x2 - w * 0.3, y1, x2, y1 + max(1.0, w * 0.12), (200, 220, 230))


CAR_COLOURS = [(235, 235, 235), (25, 25, 25), (170, 170, 170), (40, 40, 170), (130, 70, 30),
               (90, 90, 90)]


def draw_car(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    col = _c(CAR_COLOURS[int(r.integers(len(CAR_COLOURS)))], r, 10)
    _rect(img, x1, y1 + h * 0.45, x2, y2 - h * 0.12, col)
    cab = np.array([[x1 + w * 0.12, y1 + h * 0.46], [x2 - w * 0.12, y1 + h * 0.46],
                    [x2 - w * 0.22, y1], [x1 + w * 0.22, y1]])
    cv2.fillConvexPoly(img, cab.round().astype(np.int32), col)
    win = np.array([[x1 + w * 0.17, y1 + h * 0.43], [x2 - w * 0.17, y1 + h * 0.43],
                    [x2 - w * 0.25, y1 + h * 0.06], [x1 + w * 0.25, y1 + h * 0.06]])
    cv2.fillConvexPoly(img, win.round().astype(np.int32), (70, 55, 45))
    for fx in (0.2, 0.8):
        cv2.circle(img, _pt(x1 + w * fx, y2 - h * 0.13), max(1, round(h * 0.13)), (20, 20, 20), -1)


def draw_pedestrian(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    top = _c(VIVID[int(r.integers(len(VIVID)))], r)
    legs = _c([(40, 40, 40), (120, 70, 40), (90, 90, 90)][int(r.integers(3))], r)
    _rect(img, cx - w * 0.25, y1 + h * 0.5, cx - w * 0.02, y2, legs)
    _rect(img, cx + w * 0.02, y1 + h * 0.5, cx + w * 0.25, y2, legs)
    _rect(img, cx - w * 0.35, y1 + h * 0.16, cx + w * 0.35, y1 + h * 0.55, top)
    cv2.circle(img, _pt(cx, y1 + h * 0.08), max(1, round(h * 0.075)),
               _c((110, 150, 190), r, 25), -1)


def draw_bush(img: np.ndarray, box: Box, r: np.random.Generator) -> None:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    green = _c((45, 105, 55), r, 20)
    for _ in range(int(r.integers(3, 6))):
        cv2.ellipse(img, _pt(r.uniform(x1 + w * 0.2, x2 - w * 0.2), r.uniform(y1 + h * 0.4, y2
                                                                             - h * 0.3)),
                    _pt(w * 0.25, h * 0.4), 0, 0, 360, _c(green, r, 12), -1)


DRAW: dict[str, Draw] = {
    "garbage": draw_garbage, "banner": draw_banner, "construction": draw_construction,
    "bin": draw_bin, "sign": draw_sign, "tree": draw_tree, "pole": draw_pole,
    "lamp": draw_lamp, "car": draw_car, "pedestrian": draw_pedestrian, "bush": draw_bush,
}

SIZE_M: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    # kind: ((min width, max width), (min height, max height)) in metres
    "garbage": ((0.6, 2.6), (0.4, 1.3)),
    "banner": ((1.0, 5.0), (1.2, 2.6)),
    "construction": ((0.8, 6.0), (0.6, 2.2)),
    "bin": ((0.5, 1.5), (0.9, 1.3)),
    "sign": ((0.6, 1.0), (2.2, 3.2)),
    "tree": ((2.0, 5.0), (4.0, 8.0)),
    "pole": ((0.25, 0.4), (6.0, 9.0)),
    "lamp": ((1.2, 2.0), (6.0, 8.0)),
    "car": ((1.8, 4.6), (1.4, 1.7)),
    "pedestrian": ((0.45, 0.6), (1.55, 1.9)),
    "bush": ((1.0, 2.5), (0.6, 1.2)),
}


def object_size(kind: str, r: np.random.Generator) -> tuple[float, float]:
    """A plausible (width, height) in metres for a new object of this kind."""
    (w0, w1), (h0, h1) = SIZE_M[kind]
    w, h = float(r.uniform(w0, w1)), float(r.uniform(h0, h1))
    if kind == "banner" and r.random() < 0.25:  # a placard: narrow board
        w = float(r.uniform(0.6, 1.2))
    if kind == "construction" and r.random() < 0.3:  # cones are short
        h = float(r.uniform(0.5, 0.8))
    return w, h


def draw_object(img: np.ndarray, kind: str, box: Box, seed: int) -> None:
    """Draw one object into its pixel box; tiny boxes become a blob of the kind's colour."""
    x1, y1, x2, y2 = box
    r = np.random.default_rng(seed)
    if x2 - x1 < 3 or y2 - y1 < 3:
        col = {"garbage": (50, 50, 50), "banner": (40, 40, 200), "construction": (20, 110, 245),
               "bin": (60, 110, 50), "sign": (150, 150, 155)}.get(kind, (80, 90, 80))
        _rect(img, x1, y1, x2 + 1, y2 + 1, col)
        return
    DRAW[kind](img, box, r)
