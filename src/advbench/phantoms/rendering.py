"""Render a phantom scene as a PA chest radiograph (uint8 grayscale).

The image is built as a projected *density* map (how much attenuating tissue a ray crosses),
then turned into film brightness by a fixed characteristic curve, with film grain and a
slight blur. Anatomy layers and noise depend only on ``Anatomy`` (its seed), and each finding
only adds density inside its own window, so an edited scene re-renders with identical pixels
away from the edit. That is what the CoRPA image editing relies on. No step normalises by
image statistics, which would leak an edit into the whole image.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from advbench.phantoms.geometry import SIGN, Geometry
from advbench.phantoms.scene import Anatomy, Finding, Scene

F32 = np.float32
TISSUE = 1.25  # density of the full-thickness chest wall
AIR = 0.82  # density that fully aerated lung removes
FIELD_MM = 420.0  # the image side covers this many millimetres of patient


def _smooth(x: np.ndarray) -> np.ndarray:
    """Smoothstep of x clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _tube(d: np.ndarray, cortex: float = 0.72) -> np.ndarray:
    """Projected thickness across a hollow bone of unit half-width: bright cortical edges."""
    d2 = d * d
    outer = np.sqrt(np.clip(1.0 - d2, 0.0, None))
    inner = np.sqrt(np.clip(cortex * cortex - d2, 0.0, None))
    return outer - 0.62 * inner


class Frame:
    """Pixel grid of one size and the patient's tilt: maps windows to body coordinates."""

    def __init__(self, size: int, rotation_deg: float):
        self.size = size
        th = np.deg2rad(rotation_deg)
        self.c, self.s = float(np.cos(th)), float(np.sin(th))

    def coords(self, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Body coordinates (x, y) of the pixels of window (r0, r1, c0, c1)."""
        r0, r1, c0, c1 = win
        n = self.size
        x = ((np.arange(c0, c1, dtype=F32) + 0.5) / n - 0.5)[None, :]
        y = ((np.arange(r0, r1, dtype=F32) + 0.5) / n - 0.5)[:, None]
        bx = 0.5 + self.c * x + self.s * y
        by = 0.5 - self.s * x + self.c * y
        return bx.astype(F32), by.astype(F32)

    def to_pixel(self, bx: float, by: float) -> tuple[float, float]:
        """Pixel (column, row) of a body point; the inverse of ``coords``."""
        dx, dy = bx - 0.5, by - 0.5
        x = self.c * dx - self.s * dy
        y = self.s * dx + self.c * dy
        return (x + 0.5) * self.size - 0.5, (y + 0.5) * self.size - 0.5

    def window(self, x0: float, y0: float, x1: float, y1: float,
               pad_px: int = 3) -> tuple[int, int, int, int] | None:
        """Pixel window covering a body-coordinate rectangle; None when off the image."""
        pts = [self.to_pixel(x, y) for x in (x0, x1) for y in (y0, y1)]
        cs, rs = [p[0] for p in pts], [p[1] for p in pts]
        n = self.size
        c0 = max(0, int(np.floor(min(cs))) - pad_px)
        c1 = min(n, int(np.ceil(max(cs))) + pad_px + 1)
        r0 = max(0, int(np.floor(min(rs))) - pad_px)
        r1 = min(n, int(np.ceil(max(rs))) + pad_px + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1


def _sl(win: tuple[int, int, int, int]) -> tuple[slice, slice]:
    return slice(win[0], win[1]), slice(win[2], win[3])


# --------------------------------------------------------------------------- anatomy layers

@dataclass
class _Layers:
    """Everything about one patient at one size that no finding changes."""

    frame: Frame
    geo: Geometry  # nominal geometry (no findings)
    static: np.ndarray  # body wall, bones, mediastinum, trachea, spine
    body: np.ndarray  # soft-tissue thickness 0..1 (abdomen density scales with it)
    markings: np.ndarray  # vessels and parenchymal texture, shown where lung is aerated
    grain: np.ndarray  # film noise, added after the characteristic curve
    lung_cache: dict
    heart_cache: dict
    bubble: tuple[float, float, float, float] | None  # gastric bubble (a, dv, ra, rv)
    gas: np.ndarray  # bowel gas below the diaphragm (density removed)


_CACHE: OrderedDict[tuple[Anatomy, int], _Layers] = OrderedDict()
_CACHE_BYTES = 256 * 2**20  # anatomy layers kept for re-rendering edited scenes
_CACHE_LOCK = threading.Lock()


def _layers(anatomy: Anatomy, size: int) -> _Layers:
    """The anatomy layers of one patient at one size, built once and kept for edits."""
    key = (anatomy, size)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    layers = _build_layers(anatomy, size)
    keep = max(1, _CACHE_BYTES // (16 * 4 * size * size))  # about 16 planes per entry
    with _CACHE_LOCK:
        _CACHE[key] = layers
        while len(_CACHE) > keep:
            _CACHE.popitem(last=False)
    return layers


def _build_layers(an: Anatomy, n: int) -> _Layers:
    frame = Frame(n, an.rotation_deg)
    geo = Geometry(an)
    rng = np.random.default_rng([an.seed, 1])
    # The soft-tissue envelope is smooth: computed at half size and enlarged.
    half = Frame(max(8, n // 2), an.rotation_deg)
    Xh, Yh = half.coords((0, half.size, 0, half.size))
    body = _upsample(_body(an, np.abs(Xh - F32(0.5)), Yh), (n, n))
    static = body * F32(TISSUE * an.soft_tissue)
    _mediastinum(an, geo, frame, static)
    win = frame.window(0.5 - 0.07, 0.0, 0.5 + 0.07, 1.0)
    if win is not None:
        Xs, Ys = frame.coords(win)
        static[_sl(win)] += _spine(an, Xs - F32(0.5), Ys)
    for side in ("right", "left"):
        _add_ribs(static, an, geo, frame, side)
        _add_shoulder(static, frame, side)
    if an.breast > 0:
        for side in ("right", "left"):
            _add_breast(static, an, frame, side)

    markings = _vessels(an, geo, frame, rng)
    markings += _texture(geo, frame, rng)
    grain = _grain(n, rng)
    bubble = None
    if rng.random() < 0.85:
        bubble = (float(rng.uniform(0.17, 0.24)), float(rng.uniform(0.03, 0.05)),
                  float(rng.uniform(0.03, 0.05)), float(rng.uniform(0.018, 0.03)))
    return _Layers(frame, geo, static.astype(F32), body.astype(F32), markings.astype(F32),
                   grain, {}, {}, bubble, _bowel_gas(an, frame, rng))


def _bowel_gas(an: Anatomy, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """Irregular lucent patches of colonic gas in the upper abdomen, more on the left."""
    n = frame.size
    out = np.zeros((n, n), F32)
    win = frame.window(0.0, min(an.dome_right, an.dome_left) + 0.04, 1.0, 1.0)
    if win is None:
        return out
    h, w = win[1] - win[0], win[3] - win[2]
    cell = max(2, n // 12)
    low = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(F32)
    field = _upsample(low, ((h + 1) // 2, (w + 1) // 2))  # smooth: half size, then doubled
    field = np.repeat(np.repeat(field, 2, 0), 2, 1)[:h, :w]
    X, _ = frame.coords(win)
    bias = 0.5 * _smooth((X - 0.45) / 0.25)  # the splenic flexure and stomach side
    out[_sl(win)] = 0.16 * _smooth((field + bias - 0.9) / 0.8)
    _gas_pockets(an, frame, out)
    return out


def _gas_pockets(an: Anatomy, frame: Frame, out: np.ndarray) -> None:
    """Small rounded and sausage-shaped gas pockets: the colon framing the abdomen (hepatic
    and splenic flexures, transverse colon) and a few small-bowel loops. Own random stream,
    so the other anatomy layers do not move."""
    rng = np.random.default_rng([an.seed, 5])
    top = max(an.dome_right, an.dome_left) + 0.09
    count = int(rng.integers(7, 13))
    for _ in range(count):
        where = rng.random()
        if where < 0.3:  # ascending colon / hepatic flexure (patient right, image left)
            x, y = 0.5 - rng.uniform(0.2, 0.3), rng.uniform(top + 0.02, 1.0)
        elif where < 0.6:  # descending colon / splenic flexure
            x, y = 0.5 + rng.uniform(0.2, 0.3), rng.uniform(top, 1.0)
        elif where < 0.8:  # transverse colon
            x, y = 0.5 + rng.uniform(-0.18, 0.18), top + rng.uniform(0.04, 0.12)
        else:  # small bowel, central and low
            x, y = 0.5 + rng.uniform(-0.12, 0.12), rng.uniform(top + 0.1, 1.0)
        rx = rng.uniform(0.012, 0.03)
        ry = rx * rng.uniform(0.4, 1.0)
        th = rng.uniform(0, np.pi)
        amp = rng.uniform(0.1, 0.2)
        pad = max(rx, ry) * 1.4
        win = frame.window(x - pad, y - pad, x + pad, y + pad, pad_px=1)
        if win is None:
            continue
        X, Y = frame.coords(win)
        dx, dy = X - F32(x), Y - F32(y)
        c, s_ = F32(np.cos(th)), F32(np.sin(th))
        p, q = (dx * c + dy * s_) * F32(1 / rx), (dy * c - dx * s_) * F32(1 / ry)
        out[_sl(win)] += amp * _smooth((1.0 - p * p - q * q) * F32(2.5))


def _body(an: Anatomy, a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Soft-tissue thickness of neck, shoulders and torso (an elliptic cross-section)."""
    neck = 0.085
    shoulder = 0.6
    torso = an.body_half_width * (1.0 - 0.05 * (v - 0.5))
    rise = _smooth((v + 0.03) / 0.15)
    fall = _smooth((v - 0.2) / 0.16)
    half = neck + (shoulder - neck) * rise
    half = half + (torso - half) * fall
    r = a / half
    t = np.sqrt(np.clip(1.0 - r * r, 0.0, None))
    return (t * (0.75 + 0.25 * _smooth((v - 0.05) / 0.2))).astype(F32)


def _mediastinum(an: Anatomy, geo: Geometry, frame: Frame, out: np.ndarray) -> None:
    """Superior mediastinum, aortic knob and the air column of the trachea and bronchi."""
    win = frame.window(0.5 - 0.12, 0.0, 0.5 + 0.12, 0.86)
    if win is None:
        return
    X, v = frame.coords(win)
    u = X - F32(0.5)
    half = np.where(u < 0, geo.mediastinum_half("right", v), geo.mediastinum_half("left", v))
    d = np.abs(u) / half
    band = np.sqrt(np.clip(1.0 - d * d * np.sqrt(d), 0.0, None))
    rows = (_smooth((v - 0.04) * F32(1 / 0.12))
            * (1.0 - 0.6 * _smooth((v - F32(an.heart_top + 0.02)) * F32(1 / 0.12)))
            * (1.0 - _smooth((v - 0.72) * F32(1 / 0.08))))
    out[_sl(win)] += band * rows * F32(0.62)
    # Trachea down to the carina, nudged right by the aortic knob; then the main bronchi
    # (right steeper and shorter, left longer and flatter).
    carina = 0.335
    win = frame.window(0.5 - 0.1, 0.0, 0.5 + 0.1, carina + 0.08)
    if win is None:
        return
    X, v = frame.coords(win)
    u = X - F32(0.5)
    tw = an.trachea_half_width
    xc = -0.006 * np.exp(-(((v - 0.29) * F32(1 / 0.05)) ** 2))
    dt = (u - xc) * F32(1 / tw)
    air = np.sqrt(np.clip(1.0 - dt * dt, 0.0, None)) * (1.0 - _smooth((v - carina) / 0.012))
    air *= F32(0.36)
    for sgn, angle, length in ((-1.0, 0.72, 0.07), (1.0, 0.95, 0.085)):
        ca, sa = np.sin(angle), np.cos(angle)
        px, py = sgn * u, v - F32(carina)
        along = px * ca + py * sa
        across = (-px * sa + py * ca) * F32(1 / (tw * 0.8))
        m = np.sqrt(np.clip(1.0 - across * across, 0.0, None)) * (along > 0)
        m *= 1.0 - _smooth((along - length) * F32(1 / 0.02))
        air += m * F32(0.3)
    out[_sl(win)] -= air


def _spine(an: Anatomy, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vertebral column: bodies with endplates, pedicles and spinous processes."""
    sp = (an.dome_right - an.lung_top) / (an.rib_count - 0.3)
    ph = (v - (an.lung_top - 0.02)) / sp
    k = np.floor(ph)
    f = ph - k
    half = 0.03 + 0.008 * np.clip(v, 0, 1)
    du = np.abs(u) / half
    column = _smooth((1.0 - du) / 0.25)
    endplate = np.exp(-((f - 0.04) / 0.05) ** 2) + np.exp(-((f - 0.86) / 0.05) ** 2)
    disc = 1.0 - 0.35 * np.exp(-((f - 0.95) / 0.06) ** 2)
    out = column * (0.14 * disc + 0.07 * endplate)
    # Pedicles: paired ovals; spinous process: a teardrop off the midline by the obliquity.
    for sx in (-1.0, 1.0):
        pd = ((u - sx * half * 0.72) / (half * 0.28)) ** 2 + ((f - 0.35) / 0.2) ** 2
        out += 0.1 * _tube(np.sqrt(pd), 0.6)
    sd = ((u - an.obliquity) / (half * 0.22)) ** 2 + ((f - 0.7) / 0.3) ** 2
    out += 0.06 * np.sqrt(np.clip(1.0 - sd, 0.0, None))
    out *= _smooth((v - 0.02) / 0.05)
    return out.astype(F32)


def _side_window(frame: Frame, side: str, a0: float, a1: float, v0: float,
                 v1: float) -> tuple[int, int, int, int] | None:
    x0, x1 = sorted((0.5 + SIGN[side] * a0, 0.5 + SIGN[side] * a1))
    return frame.window(x0, v0, x1, v1)


def _add_ribs(out: np.ndarray, an: Anatomy, geo: Geometry, frame: Frame, side: str) -> None:
    """Posterior ribs as arched bands with cortical edges, anterior ribs as fainter slopes."""
    sd = geo.sides[side]
    win = _side_window(frame, side, 0.0, sd.width + 0.06, an.lung_top - 0.09,
                       sd.cp_nominal + 0.12)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - F32(0.5))
    s = a * F32(1.0 / sd.width)
    sp = (an.dome_right - an.lung_top) / (an.rib_count - 0.3)
    inside = _smooth((geo.lateral(side, Y) + 0.045 - a) * F32(1 / 0.02))
    inside *= _smooth((sd.cp_nominal + 0.12 - Y) * F32(1 / 0.05))
    inside *= _smooth((Y - F32(an.lung_top - 0.05)) * F32(1 / 0.025))  # no ribs in the neck
    # Posterior: up and out from the spine, arching down along the lateral wall; the upper
    # ribs are more curved.
    tv = np.clip((Y - an.lung_top) * F32(1.0 / (sd.cp_nominal - an.lung_top)), 0.0, 1.0)
    s2 = s * s
    shape = -0.2 * s + 0.26 * s2 * s * (0.55 + 0.45 * s)  # about s**2.6 near s = 1
    curve = (an.rib_curvature * (1.7 - 0.7 * tv)) * shape
    k = (Y - curve - F32(an.lung_top - 0.035)) * F32(1.0 / sp)
    k = k * (1.0 + 0.02 * k)  # interspaces widen a little downwards
    f = k - np.floor(k)
    th = an.rib_thickness
    d = np.minimum(np.abs(f - th / 2) * F32(2.0 / th), 1.0)
    band = _tube(d) * ((k > 0) & (k < an.rib_count + 2.5))
    band *= _smooth((a - 0.02) * F32(1 / 0.03)) * inside * (1.1 - 0.2 * s)
    # Anterior: from the lateral wall sloping down towards the costal cartilages (unseen).
    sc = np.minimum(s, 1.0)
    ka = (Y - 0.2 * (1.0 - sc) * (0.9 + 0.1 * sc) - F32(an.lung_top - 0.05)) * F32(
        1.0 / (sp * 1.28))
    fa = ka - np.floor(ka)
    da = np.minimum(np.abs(fa - 0.21) * F32(1 / 0.21), 1.0)
    ant = _tube(da, 0.8) * ((ka > 0) & (ka < 6.5)) * _smooth((s - 0.3) * F32(1 / 0.12))
    out[_sl(win)] += (0.2 * band + 0.08 * ant * inside).astype(F32)
    _add_clavicle(out, an, frame, side)


def _add_clavicle(out: np.ndarray, an: Anatomy, frame: Frame, side: str) -> None:
    """S-shaped clavicle: thick medial head by the sternum, rising to the acromion."""
    a0, a1 = 0.03, 0.355
    win = _side_window(frame, side, a0 - 0.02, a1 + 0.03, an.clavicle_y - 0.09,
                       an.clavicle_y + 0.05)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - 0.5)
    t = np.clip((a - a0) / (a1 - a0), 0.0, 1.0)
    rise = 0.6 * an.clavicle_slope * (a1 - a0) + 0.01
    centre = an.clavicle_y + 0.008 - rise * t**1.3 + 0.014 * np.sin(2 * np.pi * t)
    half = 0.0145 + 0.006 * np.exp(-((t / 0.1) ** 2)) + 0.003 * np.exp(-(((t - 1) / 0.15) ** 2))
    d = np.abs(Y - centre) / half
    ends = _smooth((a - a0) / 0.012) * _smooth((a1 - a) / 0.02)
    bone = _tube(np.minimum(d, 1.0), 0.75)
    out[_sl(win)] += (0.6 * bone * ends).astype(F32)


def _add_shoulder(out: np.ndarray, frame: Frame, side: str) -> None:
    """Scapula over the upper lateral chest and the humeral head at the corner."""
    win = _side_window(frame, side, 0.25, 0.62, 0.0, 0.52)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - 0.5)
    # Scapula: medial border slanting out and down to the inferior angle.
    med = 0.31 + 0.14 * np.clip((Y - 0.15) / 0.32, 0.0, 1.0) ** 1.5
    inner = _smooth((a - med) / 0.012) * _smooth((0.47 - Y) / 0.04) * _smooth((Y - 0.13) / 0.03)
    edge = np.exp(-(((a - med - 0.006) / 0.005) ** 2)) * inner.clip(0, 1)
    scap = 0.13 * inner + 0.1 * edge
    # Humeral head and neck.
    r = np.sqrt(((a - 0.52) / 0.065) ** 2 + ((Y - 0.16) / 0.07) ** 2)
    head = _tube(np.minimum(r, 1.0), 0.85) * 0.5
    out[_sl(win)] += (scap + head).astype(F32)


def _add_breast(out: np.ndarray, an: Anatomy, frame: Frame, side: str) -> None:
    """Breast shadow: density over the lower chest with a curved, sharp inferior edge."""
    win = _side_window(frame, side, 0.02, 0.5, 0.45, 0.95)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - 0.5)
    r = np.sqrt(((a - 0.21) / 0.17) ** 2 + ((Y - 0.63) / 0.15) ** 2)
    t = _smooth((1.0 - r) / 0.1) * _smooth((Y - 0.52) / 0.18)
    out[_sl(win)] += (0.15 * an.breast * t).astype(F32)


def _vessels(an: Anatomy, geo: Geometry, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """Pulmonary vessels: tapering trees from each hilum, drawn as lines and softened."""
    n = frame.size
    scale = n / 512.0
    img = Image.new("F", (n, n), 0.0)
    draw = ImageDraw.Draw(img)
    segs = _vessel_segments(geo, rng)
    # Thick trunks last, on top of their thinner branches; a branch's steps in order.
    segs = segs[np.lexsort((segs[:, 8], segs[:, 7], -segs[:, 0]))]
    ang = np.deg2rad(an.rotation_deg)
    c, s_ = np.cos(ang), np.sin(ang)

    def px(bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = bx - 0.5, by - 0.5
        return (c * dx - s_ * dy + 0.5) * n - 0.5, (s_ * dx + c * dy + 0.5) * n - 0.5

    x0, y0 = px(segs[:, 1], segs[:, 2])
    x1, y1 = px(segs[:, 3], segs[:, 4])
    wpx = segs[:, 5] * scale
    value = segs[:, 6] * np.minimum(1.0, wpx)
    width = np.maximum(1, np.rint(wpx)).astype(int)
    # One polyline per branch (its segments share width and density): fewer draw calls.
    branch = segs[:, 7]
    starts = np.flatnonzero(np.r_[True, branch[1:] != branch[:-1]])
    ends = np.r_[starts[1:], len(segs)]
    for i, j in zip(starts.tolist(), ends.tolist(), strict=True):
        pts = [(float(x0[i]), float(y0[i]))]
        pts += list(zip(x1[i:j].tolist(), y1[i:j].tolist(), strict=True))
        draw.line(pts, fill=float(value[i]), width=int(width[i]))
    arr = np.asarray(img, dtype=F32)
    arr = ndimage.gaussian_filter(arr, 1.1 * scale, truncate=3.0)
    # Hilar shadows: the main pulmonary arteries as soft lobulated blobs.
    for side in ("right", "left"):
        hx, hy = geo.hilum(side)
        win = frame.window(hx - 0.06, hy - 0.07, hx + 0.06, hy + 0.09)
        if win is None:
            continue
        X, Y = frame.coords(win)
        sgn = SIGN[side]
        r1 = ((X - hx - sgn * 0.012) / 0.026) ** 2 + ((Y - hy - 0.03) / 0.055) ** 2
        r2 = ((X - hx) / 0.022) ** 2 + ((Y - hy + 0.01) / 0.022) ** 2
        blob = np.sqrt(np.clip(1 - r1, 0, None)) + 0.8 * np.sqrt(np.clip(1 - r2, 0, None))
        arr[_sl(win)] += (0.3 * blob).astype(F32)
    return arr


def _vessel_segments(geo: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Grow all vessel trees generation by generation (vectorised): rows of
    (depth, x0, y0, x1, y1, width at 512 px, density, branch id, step)."""
    g = 160  # the lung margin on a coarse grid: one lookup per step instead of the formula
    axis = (np.arange(g) + 0.5) / g
    aa, vv = np.abs(axis[None, :] - 0.5), axis[:, None] - 0.06
    grids = {side: geo.margin(side, aa, vv) for side in ("right", "left")}

    def margin(side: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i = np.clip((y * g).astype(int), 0, g - 1)
        j = np.clip((x * g).astype(int), 0, g - 1)
        return grids[side][i, j]

    # Trunks per side: angle from lateral (degrees, up positive) and width in px at 512.
    trunks = [(100, 5.0), (65, 4.5), (25, 5.0), (-15, 6.0), (-45, 7.0), (-75, 7.5),
              (-100, 6.0)]
    rows = []
    next_id = 0
    for side in ("right", "left"):
        sgn = SIGN[side]
        hx, hy = geo.hilum(side)
        k = len(trunks)
        x = np.full(k, hx)
        y = np.full(k, hy)
        tilt = 5.0 if side == "left" else 0.0
        ang = np.deg2rad(np.array([t for t, _ in trunks]) + tilt + rng.uniform(-10, 10, k))
        w = np.array([wd for _, wd in trunks]) * (0.95 if side == "left" else 1.0)
        length = 0.07 + rng.uniform(0, 0.02, k)
        for depth in range(7):
            alive = np.ones(len(x), bool)
            ids = next_id + np.arange(len(x))
            next_id += len(x)
            for step in range(3):
                ang = ang + rng.normal(0, 0.07, len(ang))
                nx = x + sgn * np.cos(ang) * length / 3
                ny = y - np.sin(ang) * length / 3
                alive &= margin(side, nx, ny) >= 0.004
                if not alive.any():
                    break
                amp = 0.07 + 0.035 * w
                rows.append(np.stack([np.full(alive.sum(), depth), x[alive], y[alive],
                                      nx[alive], ny[alive], w[alive], amp[alive], ids[alive],
                                      np.full(alive.sum(), step)], 1))
                x, y = np.where(alive, nx, x), np.where(alive, ny, y)
            grow = alive & (w >= 0.5)
            if depth == 6 or not grow.any():
                break
            x, y, ang, length, w = x[grow], y[grow], ang[grow], length[grow], w[grow]
            kids = np.where(rng.random(len(x)) < 0.8, 2, 3)
            spread = rng.uniform(0.3, 0.55, len(x))
            parent = np.repeat(np.arange(len(x)), kids)
            slot = np.concatenate([np.arange(k_) - (k_ - 1) / 2 for k_ in kids])
            mult = np.where(kids[parent] == 2, 2.0, 1.0)
            ang = (ang[parent] + spread[parent] * slot * mult
                   + rng.normal(0, 0.1, len(parent)))
            x, y = x[parent], y[parent]
            length = length[parent] * rng.uniform(0.68, 0.85, len(parent))
            w = w[parent] * rng.uniform(0.62, 0.76, len(parent))
    return np.concatenate(rows, 0) if rows else np.zeros((0, 9))


def _upsample(low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear enlargement of a coarse noise grid to ``shape``."""
    zoom = (shape[0] / low.shape[0], shape[1] / low.shape[1])
    out = ndimage.zoom(low, zoom, order=1, grid_mode=True, mode="reflect")
    return out[: shape[0], : shape[1]]


def _texture(geo: Geometry, frame: Frame, rng: np.random.Generator) -> np.ndarray:
    """Fine reticular lung texture (coarse noise, ~6 px cells at 512) over the lung fields."""
    n = frame.size
    out = np.zeros((n, n), F32)
    w = max(s.width for s in geo.sides.values()) + 0.03
    top = min(s.apex for s in geo.sides.values()) - 0.03
    bottom = max(s.cp_nominal for s in geo.sides.values()) + 0.14
    win = frame.window(0.5 - w, top, 0.5 + w, bottom)
    if win is None:
        return out
    h, wd = win[1] - win[0], win[3] - win[2]
    cell = max(2, frame.size // 90)
    low = rng.standard_normal((max(2, h // cell + 1), max(2, wd // cell + 1))).astype(F32)
    out[_sl(win)] = F32(0.035) * _upsample(low, (h, wd))
    return out


def _grain(n: int, rng: np.random.Generator) -> np.ndarray:
    """Film grain plus a faint large-scale mottle, in output brightness units."""
    g = rng.standard_normal((n, n), dtype=F32)
    g *= F32(0.014)
    m = max(4, n // 32)
    q = max(1, n // 4)
    mot = _upsample(rng.standard_normal((m, m)).astype(F32), (q, q)) * F32(0.008)
    # Smooth enough to enlarge by plain repetition (4 px blocks of a 32 px field).
    rep = -(-n // q)
    g += np.broadcast_to(mot[:, None, :, None], (q, rep, q, rep)).reshape(q * rep, q * rep)[
        :n, :n]
    return g


# --------------------------------------------------------------------------- per-scene layers

def _lung_air(lay: _Layers, geo: Geometry) -> np.ndarray:
    """Aerated lung: a sharp edge ramp times a broad profile darkest mid-lung; cached per domes."""
    key = tuple((s.dome_top, s.cp) for s in geo.sides.values())
    hit = lay.lung_cache.get(key)
    if hit is not None:
        return hit
    frame = lay.frame
    n = frame.size
    air = np.zeros((n, n), F32)
    for side, sd in geo.sides.items():
        win = _side_window(frame, side, 0.02, sd.width + 0.02, sd.apex - 0.02, sd.cp + 0.03)
        if win is None:
            continue
        X, Y = frame.coords(win)
        a = np.abs(X - 0.5)
        m = geo.margin(side, a, Y)
        edge = _smooth(m / 0.012)
        broad = np.sqrt(_smooth(m / 0.09))
        apex = _smooth((Y - sd.apex) / 0.12)
        air[_sl(win)] += (edge * (0.62 + 0.28 * broad + 0.1 * apex)).astype(F32)
    if len(lay.lung_cache) > 4:
        lay.lung_cache.clear()
    lay.lung_cache[key] = air
    return air


def _heart_layer(lay: _Layers, geo: Geometry) -> np.ndarray:
    """Cardiac silhouette: right atrial and left ventricular borders bulging from the
    mediastinum, widest low down, apex on the left dome; cached per heart size."""
    h = geo.heart
    key = (h.right, h.left, h.top, h.bottom)
    hit = lay.heart_cache.get(key)
    if hit is not None:
        return hit
    frame = lay.frame
    n = frame.size
    out = np.zeros((n, n), F32)
    win = frame.window(0.5 - h.right - 0.04, h.top - 0.03, 0.5 + h.left + 0.04, h.bottom + 0.03)
    if win is not None:
        X, Y = frame.coords(win)
        u = X - 0.5
        base = h.center  # the row where the heart meets the diaphragm
        t = (Y - h.top) / (base - h.top)
        mr = geo.mediastinum_half("right", Y)
        ml = geo.mediastinum_half("left", Y) * 0.9
        tr = np.clip(t / 0.6, 0.0, 1.0)
        right = mr + (h.right - mr) * np.sin(0.5 * np.pi * tr) ** 0.9
        right = right * (1.0 - 0.12 * np.clip((t - 0.85) / 0.3, 0.0, 1.0) ** 2)
        tl = np.clip(t / 0.92, 0.0, 1.0)
        left = ml + (h.left - ml) * (1.0 - (1.0 - tl) ** 1.8)
        left = left * np.sqrt(np.clip(1.0 - (np.clip(t - 0.92, 0.0, None) / 0.35) ** 2, 0, 1))
        border = np.where(u < 0, right, left)
        d = np.abs(u) / np.maximum(border, 1e-3)
        inside = _smooth((1.0 - d) * border / 0.006) * (t > -0.2)
        inside *= _smooth((t + 0.08) / 0.12) * (1.0 - _smooth((t - 1.3) / 0.1))
        thick = np.sqrt(np.clip(1.0 - d * d, 0.0, None))
        out[_sl(win)] = (inside * (0.75 + 0.25 * thick)).astype(F32)
    if len(lay.heart_cache) > 4:
        lay.heart_cache.clear()
    lay.heart_cache[key] = out
    return out


def _abdomen(lay: _Layers, geo: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Liver, spleen and stomach below the domes (bright), with the gastric air bubble."""
    frame = lay.frame
    n = frame.size
    out = np.zeros((n, n), F32)
    mask = np.zeros((n, n), F32)
    top = min(s.dome_top for s in geo.sides.values()) - 0.03
    win = frame.window(0.0, top, 1.0, 1.0)
    if win is None:
        return out, mask
    X, Y = frame.coords(win)
    u = X - 0.5
    a = np.abs(u)
    dome = np.where(u < 0, geo.dome("right", a), geo.dome("left", a))
    below = _smooth((Y - dome) / 0.006)
    # Liver (patient right) a little denser; bowel gas as a few darker lucent patches.
    # Liver (patient right) a little denser, its lower edge sloping down laterally; the
    # spleen a faint density under the left dome.
    d0 = geo.sides["right"].dome_top
    edge = d0 + 0.13 + 0.12 * np.clip(-u * F32(1 / 0.35), 0.0, 1.0)
    liver = _smooth((edge - Y) * F32(1 / 0.035)) * _smooth((0.05 - u) * F32(1 / 0.07))
    spleen = _smooth((geo.sides["left"].dome_top + 0.1 - Y) * F32(1 / 0.04)) * _smooth(
        (u - 0.2) * F32(1 / 0.06))
    dens = below * (0.5 + 0.15 * _smooth((Y - dome) / 0.08) + 0.12 * liver + 0.04 * spleen)
    dens -= below * lay.gas[_sl(win)] * _smooth((Y - dome - 0.05) / 0.05)
    if lay.bubble is not None:
        ba, dv, ra, rv = lay.bubble
        bx = ba
        by = float(geo.dome("left", ba)) + dv
        r = ((a - bx) / ra) ** 2 + ((Y - by) / rv) ** 2
        inside = np.sqrt(np.clip(1.0 - r, 0.0, None)) * (u > 0) * (Y < by + rv * 0.35)
        dens -= 0.5 * _smooth(inside / 0.3)
    out[_sl(win)] = dens * lay.body[_sl(win)] * 1.1
    mask[_sl(win)] = below
    return out, mask


# --------------------------------------------------------------------------- findings

class _Canvas:
    """Where findings draw: density added, and how much of the lung markings stay visible."""

    def __init__(self, lay: _Layers, geo: Geometry, air: np.ndarray):
        self.lay, self.geo, self.air, self.frame = lay, geo, air, lay.frame
        n = lay.frame.size
        self.density = np.zeros((n, n), F32)
        self.keep: np.ndarray | None = None  # multiplier of the markings

    def cover(self, win: tuple[int, int, int, int], amount: np.ndarray) -> None:
        """Hide lung markings by ``amount`` (0..1) inside ``win``."""
        if self.keep is None:
            self.keep = np.ones_like(self.density)
        self.keep[_sl(win)] *= (1.0 - np.clip(amount, 0.0, 1.0)).astype(F32)

    def add(self, win: tuple[int, int, int, int], delta: np.ndarray) -> None:
        self.density[_sl(win)] += delta.astype(F32)


def _frng(f: Finding, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([f.seed, salt, 7])


def _noise_field(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Smooth random field of unit variance over a window (Gaussian-filtered white noise)."""
    white = rng.standard_normal(shape).astype(F32)
    sigma = max(sigma, 0.5)
    field = ndimage.gaussian_filter(white, sigma, truncate=2.5, mode="reflect")
    return field * F32(2.0 * np.sqrt(np.pi) * sigma)


# Effusion meniscus per size: lateral top as a share of the hemithorax height above the
# costophrenic angle, medial level as a share above the dome top (negative: below it, so
# the fluid only fills the lateral angle), and how steeply the surface climbs the wall.
_EFFUSION = {"small": (0.15, -0.05, 3.2), "moderate": (0.42, 0.04, 2.2),
             "large": (0.74, 0.2, 1.6)}


def _effusion(cv: _Canvas, f: Finding) -> None:
    """Fluid at the base: a homogeneous opacity, as dense as the liver below it, under a
    soft concave-up meniscus that climbs the lateral chest wall. It fills the costophrenic
    angle and hides the hemidiaphragm; the lung markings fade into it."""
    lat_share, med_level, power = _EFFUSION[f.size]
    rng = _frng(f)
    geo = cv.geo
    for side in f.sides:
        sd = geo.sides[side]
        height = sd.cp - sd.apex
        v_lat = sd.cp - lat_share * height * rng.uniform(0.93, 1.07)  # lateral top
        v_med = sd.dome_top - med_level * height  # level at the mediastinum
        soft = 0.012 + 0.012 * min(1.0, lat_share * 2)  # margin width (5-10 mm)
        win = _side_window(cv.frame, side, 0.0, sd.width + 0.03, v_lat - 2 * soft - 0.02,
                           sd.cp + 0.03)
        if win is None:
            continue
        X, Y = cv.frame.coords(win)
        a = np.abs(X - 0.5)
        lat = geo.lateral(side, Y)
        med = geo.medial(side, Y)
        s = np.clip((a - med) / np.maximum(lat - med, 1e-3), 0.0, 1.0)
        # Concave-up surface: flat medially, curving up ever more steeply to the wall.
        g = (np.exp(power * s) - 1.0) * F32(1.0 / (np.exp(power) - 1.0))
        menis = v_med + (v_lat - v_med) * g
        dome = geo.dome(side, a)
        # The lung's new floor: the surface or the dome, whichever is higher, rounded where
        # they meet (a blunted angle, not a notch).
        k = F32(0.045)
        h = np.maximum(k - np.abs(menis - dome), 0.0) * F32(1.0 / k)
        depth = Y - (np.minimum(menis, dome) - h * h * k * F32(0.25))
        fill = _smooth(depth * F32(1.0 / soft))  # soft upper margin
        # A thin layer tracks up the lateral wall above the meniscus top.
        tail = np.exp(-np.maximum(lat - a, 0.0) * F32(1.0 / 0.008)) * _smooth(
            (Y - (v_lat - 0.04)) * F32(1.0 / 0.04))
        fill = np.maximum(fill, 0.55 * tail)
        # Thickness grows below the surface: denser downwards, homogeneous deep in.
        thick = fill * (0.6 + 0.4 * _smooth(depth * F32(1.0 / 0.06)))
        above = 1.0 - _smooth((Y - dome) * F32(1.0 / 0.006))  # the liver/spleen lie below
        # Inside the ribs; fading towards the mediastinum, and less over the heart, which is
        # dense already: the heart border merges into the fluid (silhouette sign).
        walls = _smooth((lat - a) * F32(1.0 / 0.01)) * _smooth((a - med + 0.01) * F32(1 / 0.05))
        walls *= 1.0 - F32(0.5) * _heart_layer(cv.lay, geo)[_sl(win)]
        body = cv.lay.body[_sl(win)]
        liver = 0.55 + (0.06 if side == "right" else 0.0)
        water = thick * above * walls * body * F32(1.1 * liver)
        lung = cv.air[_sl(win)]
        cv.add(win, fill * lung * F32(AIR) + water)
        cv.cover(win, fill)


def _consolidation(cv: _Canvas, f: Finding, *, patchy: bool = False) -> None:
    """Lobar-ish airspace opacity with irregular fuzzy margins (dense, with air bronchograms)
    or, when ``patchy``, scattered ill-defined blotches."""
    rng = _frng(f)
    px = cv.frame.size
    for side in f.sides:
        v0, v1 = cv.geo.zone_rows(side, f.zone)
        ext = {"small": 0.6, "moderate": 0.85, "large": 1.1}[f.size]
        sd = cv.geo.sides[side]
        vc = (v0 + v1) / 2 + rng.uniform(-0.02, 0.02)
        hv = (v1 - v0) * 0.55 * ext + 0.02
        if f.zone == "lower":
            vc += 0.03
        elif f.zone == "upper":  # upper lobe disease reaches the apex
            hv = max(hv, vc - sd.apex + 0.01)
        win = _side_window(cv.frame, side, 0.0, sd.width + 0.02, vc - hv - 0.05,
                           min(vc + hv + 0.05, sd.cp + 0.02))
        if win is None:
            continue
        X, Y = cv.frame.coords(win)
        a = np.abs(X - 0.5)
        lat = cv.geo.lateral(side, Y)
        med = cv.geo.medial(side, Y)
        s = (a - med) / np.maximum(lat - med, 1e-3)
        sc = rng.uniform(0.4, 0.6)
        hs = 0.3 * ext + 0.15
        r = np.sqrt(((s - sc) / hs) ** 2 + ((Y - vc) / hv) ** 2)
        shape = r.shape
        env = _smooth((1.2 - r) / 0.5)  # zero well inside the window: no cut edges
        fine = _noise_field(shape, rng, 0.006 * px)
        if patchy:
            blotch = _noise_field(shape, rng, 0.016 * px)
            field = 0.5 * blotch + 0.12 * fine + 0.5 * (1.0 - r) - 0.22
            fill = env * _smooth(field / 0.9) * 0.7
        else:
            field = 1.0 - r + 0.55 * _noise_field(shape, rng, 0.04 * px)
            fill = env * _smooth(field / 0.6) * (0.88 + 0.08 * fine)
        fill = ndimage.gaussian_filter(fill, 0.004 * px, truncate=2.5, mode="nearest")
        if not patchy and side == "right" and f.zone == "upper":
            fis = cv.geo.hilum("right")[1] + 0.01  # horizontal fissure: a sharp floor
            fill = fill * _smooth((fis - Y) / 0.004)
        lung = cv.air[_sl(win)]
        dens = fill * lung * F32(AIR * 0.9)
        if not patchy:
            xs, ys = cv.geo.lung_point(side, sc, float(np.clip(
                (vc - sd.apex) / (sd.dome_top - sd.apex), 0.05, 0.95)))
            bronchi = _bronchograms(cv, side, win, (xs, ys), hv, rng)
            dens -= bronchi * _smooth((fill - 0.6) / 0.25) * lung * 0.38
        cv.add(win, dens)
        cv.cover(win, fill * (1.0 if not patchy else 0.7))


def _bronchograms(cv: _Canvas, side: str, win: tuple[int, int, int, int],
                  centre: tuple[float, float], reach: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Air bronchograms: dark, curving, branching tubes running out from the hilum."""
    r0, r1, c0, c1 = win
    img = Image.new("F", (c1 - c0, r1 - r0), 0.0)
    draw = ImageDraw.Draw(img)
    scale = cv.frame.size / 512.0
    hx, hy = cv.geo.hilum(side)
    sgn = SIGN[side]
    cx, cy = centre
    base = float(np.arctan2(-(cy - hy), abs(cx - hx) + 1e-3))
    # Start between the hilum and the centre of the opacity, pointing away from the hilum.
    sx, sy = hx + 0.55 * (cx - hx), hy + 0.55 * (cy - hy)

    def branch(x: float, y: float, ang: float, length: float, w: float, depth: int) -> None:
        for _ in range(3):
            ang += rng.normal(0, 0.1)
            nx = x + sgn * np.cos(ang) * length / 3
            ny = y - np.sin(ang) * length / 3
            p0, p1 = cv.frame.to_pixel(x, y), cv.frame.to_pixel(nx, ny)
            draw.line([(p0[0] - c0, p0[1] - r0), (p1[0] - c0, p1[1] - r0)],
                      fill=float(min(1.0, w * scale / 2)), width=max(1, int(round(w * scale))))
            x, y = nx, ny
        if depth < 4:
            for off in (-0.32, 0.32):
                branch(x, y, ang + off + rng.normal(0, 0.12), length * 0.72, w * 0.75, depth + 1)

    for k in range(3):
        branch(sx, sy, base + (k - 1) * 0.45 + rng.normal(0, 0.1), 0.3 * reach + 0.02, 2.2, 1)
    return ndimage.gaussian_filter(np.asarray(img, dtype=F32), 1.0 * scale, truncate=2.5)


def _sphere(cv: _Canvas, x: float, y: float, radius: float, amp: float,
            lobes: tuple[tuple[int, float, float], ...] = ()) -> None:
    """A soft-edged round opacity; ``lobes`` (k, depth, phase) make its outline lobulated."""
    pad = radius * (1.4 + sum(d for _, d, _ in lobes))
    win = cv.frame.window(x - pad, y - pad, x + pad, y + pad)
    if win is None:
        return
    X, Y = cv.frame.coords(win)
    dx, dy = X - x, Y - y
    rr = np.sqrt(dx * dx + dy * dy)
    if lobes:
        th = np.arctan2(dy, dx)
        scale = 1.0 + sum(d * np.sin(k * th + p) for k, d, p in lobes)
        rr = rr / scale
    rho = rr / radius
    t = np.sqrt(np.clip(1.0 - rho * rho, 0.0, None))
    edge = _smooth((1.0 - rho) / 0.25)
    cv.add(win, amp * (0.55 * t + 0.45 * edge))
    cv.cover(win, edge * 0.7)


def _mm(mm: float) -> float:
    """Millimetres to image fractions."""
    return mm / FIELD_MM


def _place(cv: _Canvas, side: str, zone: str, rng: np.random.Generator,
           margin: float = 0.0) -> tuple[float, float]:
    t0, t1 = {"upper": (0.15, 0.35), "mid": (0.4, 0.6), "lower": (0.65, 0.82)}[zone]
    s = rng.uniform(0.3 + margin, 0.8 - margin)
    return cv.geo.lung_point(side, s, rng.uniform(t0, t1))


def _nodules(cv: _Canvas, f: Finding) -> None:
    rng = _frng(f)
    count = int(f.params.get("count", 1))
    diam = float(f.params.get("diameter_mm", 12))
    sides = f.sides
    for i in range(count):
        side = sides[i % len(sides)]
        x, y = _place(cv, side, f.zone, rng)
        d = diam * (1.0 if i == 0 else rng.uniform(0.6, 0.95))
        amp = 0.2 + 0.3 * min(d / 25.0, 1.0)
        _sphere(cv, x, y, _mm(d) / 2, amp)


def _mass(cv: _Canvas, f: Finding) -> None:
    rng = _frng(f)
    diam = float(f.params.get("diameter_cm", 4.5)) * 10
    side = f.sides[0]
    x, y = _place(cv, side, f.zone, rng, margin=0.08)
    lobes = ((3, 0.1, rng.uniform(0, 6.3)), (5, 0.06, rng.uniform(0, 6.3)),
             (2, 0.05, rng.uniform(0, 6.3)))
    _sphere(cv, x, y, _mm(diam) / 2, 0.62, lobes)
    for _ in range(2):  # satellite lobules give a lumpy outline
        ang = rng.uniform(0, 2 * np.pi)
        off = _mm(diam) * 0.38
        _sphere(cv, x + off * np.cos(ang), y + off * np.sin(ang), _mm(diam) * 0.26, 0.25)


def _hilar(cv: _Canvas, f: Finding, *, nodes: bool = False) -> None:
    rng = _frng(f)
    grow = {"small": 1.0, "moderate": 1.35, "large": 1.7}[f.size]
    for side in f.sides:
        hx, hy = cv.geo.hilum(side)
        sgn = SIGN[side]
        for k in range(3 if nodes else 2):
            ox = sgn * rng.uniform(0.005, 0.025) * grow
            oy = rng.uniform(-0.03, 0.04) * grow
            r = rng.uniform(0.018, 0.026) * grow
            lobes = ((3, 0.08, rng.uniform(0, 6.3)),)
            _sphere(cv, hx + ox, hy + oy, r, 0.45 if k == 0 else 0.32, lobes)


def _adenopathy(cv: _Canvas, f: Finding) -> None:
    """Mediastinal widening (right paratracheal, aortopulmonary window) and hilar nodes."""
    rng = _frng(f)
    grow = {"small": 1.0, "moderate": 1.3, "large": 1.65}[f.size]
    m = cv.geo.anatomy.mediastinum_half_width
    _sphere(cv, 0.5 - m * 0.8 - 0.01 * grow, 0.255 + rng.uniform(-0.01, 0.01),
            0.022 * grow, 0.45, ((2, 0.15, 1.57), (3, 0.06, rng.uniform(0, 6.3))))
    _sphere(cv, 0.5 - m * 0.8 - 0.004, 0.205, 0.016 * grow, 0.35, ((2, 0.2, 1.57),))
    _sphere(cv, 0.5 + m * 0.85 + 0.012 * grow, 0.345, 0.018 * grow, 0.4,
            ((3, 0.08, rng.uniform(0, 6.3)),))
    if f.side in ("bilateral", "right", "left"):
        _hilar(cv, Finding("hilar_enlargement", side=f.side, zone="mid", size=f.size,
                           seed=f.seed + 1), nodes=True)


def _metastases(cv: _Canvas, f: Finding) -> None:
    rng = _frng(f)
    count = int(f.params.get("count", 25))
    top = float(f.params.get("max_mm", 12))
    for _ in range(count):
        side = "right" if rng.random() < 0.5 else "left"
        t = float(np.clip(rng.beta(2.2, 1.4), 0.08, 0.95))
        s = float(rng.uniform(0.15, 0.95))
        x, y = cv.geo.lung_point(side, s, t)
        d = rng.uniform(3.0, top)
        _sphere(cv, x, y, _mm(d) / 2, 0.22 + 0.25 * d / 16)


def _pneumothorax(cv: _Canvas, f: Finding) -> None:
    """Collapsed lung edge with a thin pleural line; air without markings outside it."""
    collapse = {"small": 0.1, "moderate": 0.2, "large": 0.34}[f.size]
    geo = cv.geo
    for side in f.sides:
        sd = geo.sides[side]
        win = _side_window(cv.frame, side, 0.02, sd.width + 0.02, sd.apex - 0.02, sd.cp + 0.03)
        if win is None:
            continue
        X, Y = cv.frame.coords(win)
        a = np.abs(X - 0.5)
        k = 1.0 - collapse
        # The lung shrinks towards its medial base: the gap opens at the apex and laterally,
        # widest at the apex and narrowing down the lateral wall (air rises when upright).
        ca = float(geo.medial(side, 0.45)) + 0.01
        cy = sd.dome_top + 0.02
        up = np.clip((cy - Y) * F32(1.0 / (cy - sd.apex)), 0.0, 1.0)
        ka = 1.0 - collapse * (0.35 + 0.65 * up)
        ma = ca + (a - ca) / ka
        mv = cy + (Y - cy) / k
        inner = geo.margin(side, ma, mv) * np.minimum(ka, k)  # margin of the collapsed lung
        outer = geo.margin(side, a, Y)
        px = 1.0 / cv.frame.size
        lung_in = _smooth(inner / (1.5 * px) + 0.5)
        space = _smooth(outer / 0.004) * (1.0 - lung_in)
        line = np.exp(-((inner / (0.9 * px * max(1.0, cv.frame.size / 512))) ** 2))
        line *= _smooth((outer - 0.006) / 0.006)
        line *= _smooth((a - geo.medial(side, Y) - 0.035) / 0.02)  # not along the mediastinum
        air = cv.air[_sl(win)]
        dens = -0.22 * space * air + 0.3 * line + 0.12 * collapse * lung_in * air
        cv.add(win, dens)
        cv.cover(win, np.maximum(space, 0.0))


def _flattening(cv: _Canvas, f: Finding) -> None:
    """Geometry already lowers and flattens the domes; hyperinflated lungs look darker."""
    for side in f.sides:
        sd = cv.geo.sides[side]
        win = _side_window(cv.frame, side, 0.02, sd.width + 0.02, sd.apex - 0.02, sd.cp + 0.03)
        if win is None:
            continue
        cv.add(win, -0.05 * cv.air[_sl(win)])


_DRAW = {
    "pleural_effusion": _effusion,
    "consolidation": _consolidation,
    "patchy_opacity": lambda cv, f: _consolidation(cv, f, patchy=True),
    "nodule": _nodules,
    "mass": _mass,
    "hilar_enlargement": _hilar,
    "adenopathy": _adenopathy,
    "metastases": _metastases,
    "cardiomegaly": lambda cv, f: None,  # geometry enlarges the heart
    "pneumothorax": _pneumothorax,
    "diaphragm_flattening": _flattening,
}


# --------------------------------------------------------------------------- public

def density(scene: Scene, size: int = 512) -> np.ndarray:
    """The projected density map before the film curve (useful for masks and checks)."""
    lay = _layers(scene.anatomy, size)
    geo = Geometry(scene.anatomy, scene)
    air = _lung_air(lay, geo)
    heart = _heart_layer(lay, geo)
    abd, below = _abdomen(lay, geo)
    heart = heart * (1.0 - below)
    lung = air * (1.0 - F32(0.8) * np.clip(heart, 0.0, 1.0))
    d = lay.static - lung * F32(AIR)
    d += heart * F32(0.3)
    d += abd
    cv = _Canvas(lay, geo, lung)
    # Order matters only for the markings mask, which multiplies: keep the scene order.
    for f in scene.findings:
        _DRAW[f.kind](cv, f)
    keep = lung
    if cv.keep is not None:
        keep = keep * cv.keep
    d += lay.markings * keep
    d += cv.density
    return d


_LUT_MAX = 5.0  # density range of the film curve table
_LUT_STEPS = 8192


@cache
def _film_curve(exposure: float, contrast: float) -> np.ndarray:
    """Characteristic curve: density -> brightness, tabulated (a table is faster than exp)."""
    d = (np.arange(_LUT_STEPS, dtype=np.float64) + 0.5) * (_LUT_MAX / _LUT_STEPS)
    out = ((1.0 - np.exp(-(0.9 / exposure) * d)) ** (1.1 * contrast)).astype(F32)
    out.setflags(write=False)
    return out


def render(scene: Scene, size: int = 512) -> np.ndarray:
    """The PA radiograph of ``scene`` as uint8 (size × size); deterministic."""
    lay = _layers(scene.anatomy, size)
    d = density(scene, size)
    an = scene.anatomy
    g = F32(0.9 / an.exposure)
    img = 1.0 - np.exp(-g * np.maximum(d, 0.0))
    img = img ** F32(1.1 * an.contrast)
    img += lay.grain
    img = ndimage.gaussian_filter(img, 0.55 * size / 512, truncate=3.0)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- lateral view

def _lateral_density(scene: Scene, size: int) -> np.ndarray:
    """A plain lateral chest (anterior to the left): enough for a study's second image."""
    an = scene.anatomy
    geo = Geometry(an, scene)
    X, Y = Frame(size, an.rotation_deg * 0.5).coords((0, size, 0, size))
    neck = _smooth((0.14 - Y) / 0.1)
    front = 0.2 + 0.13 * neck + 0.03 * _smooth((Y - 0.75) / 0.25)
    back = 0.84 - 0.1 * neck
    mid, half = (front + back) / 2, (back - front) / 2
    r = np.abs(X - mid) / half
    d = np.sqrt(np.clip(1.0 - r * r, 0.0, None)) * F32(TISSUE * 1.2 * an.soft_tissue)
    # Lungs between sternum and spine, rounded apex; the posterior sulcus is lowest.
    dome_front = min(s.dome_top for s in geo.sides.values()) + 0.02
    dome_back = max(s.cp for s in geo.sides.values()) + 0.05
    spine = 0.7 + 0.03 * np.sin(np.pi * np.clip(Y, 0.0, 1.0))
    t = (X - 0.27) / 0.43
    tc = np.clip(t, 0.0, 1.0)
    dome = (dome_front - 0.05 * np.sin(np.pi * tc) + (dome_back - dome_front) * tc**2.5
            + 0.3 * np.clip(-t, 0.0, None))
    top = an.lung_top + 0.02
    yc = (top + dome_back) / 2
    hy = (dome_back - top) / 2
    blob = 1.0 - np.abs((X - 0.49) / 0.235) ** 2.5 - np.abs((Y - yc) / hy) ** 2.5
    lung_m = np.minimum(blob * 0.12, np.minimum(spine - 0.01 - X, dome - Y))
    air = _smooth(lung_m / 0.015) * (0.75 + 0.25 * np.sqrt(_smooth(lung_m / 0.08)))
    below = _smooth((Y - dome) / 0.008) * (r < 1)
    # Heart: anterior and low, on the diaphragm; larger with cardiomegaly.
    grow = max(0.0, geo.ctr - an.ctr)
    hx, hy = 0.42 + 0.2 * grow, dome_front - 0.08
    hr = ((X - hx) / (0.15 + 0.3 * grow)) ** 2 + ((Y - hy) / (0.13 + 0.2 * grow)) ** 2
    heart = _smooth((1.0 - hr) / 0.25) * (1.0 - below)
    fluid = np.zeros_like(X)
    for f in scene.findings:
        if f.kind == "pleural_effusion":  # layering fluid fills the posterior sulcus
            level = {"small": 0.04, "moderate": 0.1, "large": 0.2}[f.size]
            menis = dome_back - level - 0.06 * tc**1.5
            fluid = np.maximum(fluid, _smooth((Y - menis) / 0.012) * _smooth((X - 0.5) / 0.05))
    lung = air * (1.0 - 0.7 * heart) * (1.0 - fluid)
    d = d - lung * F32(AIR) + heart * 0.3 + below * 0.55
    # Vertebral bodies with darker discs, the sternum in front, the trachea's air column.
    ph = (Y / ((an.dome_right - an.lung_top) / (an.rib_count - 0.3))) % 1.0
    body = _smooth((0.045 - np.abs(X - spine - 0.045)) / 0.012)
    body *= 0.45 - 0.22 * np.exp(-(((ph - 0.92) / 0.08) ** 2))
    stern = _smooth((0.01 - np.abs(X - front - 0.02)) / 0.005) * _smooth((Y - 0.2) / 0.02)
    stern *= _smooth((0.6 - Y) / 0.02)
    tr = _smooth((0.02 - np.abs(X - (0.42 + 0.22 * Y))) / 0.008) * _smooth((0.37 - Y) / 0.03)
    d = d + body * (r < 1) + 0.45 * stern - 0.2 * tr
    return d.astype(F32)


def render_lateral(scene: Scene, size: int = 512) -> np.ndarray:
    """The lateral view of ``scene`` as uint8 (size × size); deterministic.

    Drawn at half resolution and enlarged: it is a companion image, not a test object.
    """
    half = max(32, size // 2)
    d = _lateral_density(scene, half)
    d = ndimage.zoom(d, size / half, order=1, grid_mode=True, mode="nearest")[:size, :size]
    an = scene.anatomy
    rng = np.random.default_rng([an.seed, 3])
    img = 1.0 - np.exp(-F32(0.85 / an.exposure) * np.maximum(d, 0.0))
    img = img ** F32(1.1 * an.contrast) + rng.standard_normal(d.shape, dtype=F32) * F32(0.012)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
