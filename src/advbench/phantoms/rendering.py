"""Render a phantom scene as a PA chest radiograph (uint8 grayscale).

The image is built as a projected *density* map (how much attenuating tissue a ray crosses),
then turned into film brightness by a fixed characteristic curve, with film grain and a
slight blur. Anatomy layers and noise depend only on ``Anatomy`` (its seed), and each finding
only adds density inside its own window, so an edited scene re-renders with identical pixels
away from the edit. That is what the CoRPA image editing relies on. No step normalises by
image statistics, which would leak an edit into the whole image.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

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


_CACHE: OrderedDict[tuple[Anatomy, int], _Layers] = OrderedDict()
_CACHE_SIZE = 6


def _layers(anatomy: Anatomy, size: int) -> _Layers:
    key = (anatomy, size)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    layers = _build_layers(anatomy, size)
    _CACHE[key] = layers
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return layers


def _build_layers(an: Anatomy, n: int) -> _Layers:
    frame = Frame(n, an.rotation_deg)
    geo = Geometry(an)
    full = (0, n, 0, n)
    X, Y = frame.coords(full)
    u = X - F32(0.5)
    a = np.abs(u)
    rng = np.random.default_rng([an.seed, 1])

    body = _body(an, a, Y)
    static = body * F32(TISSUE * an.soft_tissue)
    static += _mediastinum(an, geo, u, Y)
    static += _spine(an, geo, u, Y, n)
    for side in ("right", "left"):
        _add_ribs(static, an, geo, frame, side)
        _add_shoulder(static, an, geo, frame, side)
    if an.breast > 0:
        for side in ("right", "left"):
            _add_breast(static, an, frame, side)

    markings = _vessels(an, geo, frame, rng)
    markings += _texture(n, rng)
    grain = _grain(n, rng)
    bubble = None
    if rng.random() < 0.85:
        bubble = (float(rng.uniform(0.17, 0.24)), float(rng.uniform(0.03, 0.05)),
                  float(rng.uniform(0.03, 0.05)), float(rng.uniform(0.018, 0.03)))
    return _Layers(frame, geo, static.astype(F32), body.astype(F32), markings.astype(F32),
                   grain, {}, {}, bubble)


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


def _arms(an: Anatomy, a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Upper arms beside the torso; visible only at the image edges."""
    centre = an.body_half_width + 0.09
    r = np.abs(a - centre) / 0.075
    t = np.sqrt(np.clip(1.0 - r * r, 0.0, None)) * _smooth((v - 0.12) / 0.1)
    return (t * 0.85).astype(F32)


def _mediastinum(an: Anatomy, geo: Geometry, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Superior mediastinum, aortic knob and the air column of the trachea and bronchi."""
    right = geo.mediastinum_half("right", v)
    left = geo.mediastinum_half("left", v)
    half = np.where(u < 0, right, left)
    d = np.abs(u) / half
    band = np.sqrt(np.clip(1.0 - d**2.5, 0.0, None)) * _smooth((v - 0.04) / 0.12)
    band *= 1.0 - 0.6 * _smooth((v - an.heart_top - 0.02) / 0.12)
    band *= 1.0 - _smooth((v - 0.72) / 0.08)
    out = band * F32(0.62)
    # Trachea: midline air column down to the carina, nudged right by the aortic knob.
    carina = 0.335
    tw = an.trachea_half_width
    xc = -0.006 * np.exp(-(((v - 0.29) / 0.05) ** 2))
    dt = (u - xc) / tw
    col = np.sqrt(np.clip(1.0 - dt * dt, 0.0, None)) * (1.0 - _smooth((v - carina) / 0.012))
    out -= col * F32(0.36)
    # Main bronchi: right steeper and shorter, left longer and flatter.
    for sgn, angle, length in ((-1.0, 0.72, 0.07), (1.0, 0.95, 0.085)):
        ca, sa = np.sin(angle), np.cos(angle)
        px, py = sgn * u, v - carina
        along = px * ca + py * sa
        across = np.abs(-px * sa + py * ca) / (tw * 0.8)
        m = np.sqrt(np.clip(1.0 - across**2, 0.0, None)) * (along > 0)
        m *= 1.0 - _smooth((along - length) / 0.02)
        out -= m * F32(0.3)
    return out.astype(F32)


def _spine(an: Anatomy, geo: Geometry, u: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
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
    win = _side_window(frame, side, 0.0, sd.width + 0.09, an.lung_top - 0.09, 0.98)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - 0.5)
    s = a / sd.width
    sp = (an.dome_right - an.lung_top) / (an.rib_count - 0.3)
    lat = geo.lateral(side, Y)
    inside = _smooth((lat + 0.045 - a) / 0.02)
    # Posterior: up-and-out from the spine, arching down along the lateral wall.
    tv = np.clip((Y - an.lung_top) / (sd.cp_nominal - an.lung_top), 0.0, 1.0)
    curve = an.rib_curvature * (1.0 + 0.7 * (1.0 - tv)) * (-0.2 * s + 0.26 * s**2.6)
    k = (Y - curve - (an.lung_top - 0.035)) / sp
    k = k * (1.0 + 0.02 * k)  # interspaces widen a little downwards
    f = k - np.floor(k)
    th = an.rib_thickness
    d = np.abs(f - th / 2) / (th / 2)
    band = np.where(f < th, _tube(np.minimum(d, 1.0)), 0.0)
    band *= (k > 0) * (k < an.rib_count + 2.5)
    band *= _smooth((a - 0.02) / 0.03) * inside
    # Lower ribs are crossed by the abdomen anyway; thinner ribs laterally.
    band *= 0.9 + 0.2 * (1.0 - s)
    ant_sp = sp * 1.28
    ka = (Y + 0.2 * (1.0 - np.clip(s, 0, 1.0)) ** 1.15 - (an.lung_top + 0.05)) / ant_sp
    fa = ka - np.floor(ka)
    tha = 0.42
    da = np.abs(fa - tha / 2) / (tha / 2)
    ant = np.where(fa < tha, _tube(np.minimum(da, 1.0), 0.8), 0.0)
    ant *= (ka > 0) * (ka < 7.5) * _smooth((s - 0.3) / 0.12) * inside
    out[_sl(win)] += (0.2 * band + 0.08 * ant).astype(F32)
    _add_clavicle(out, an, frame, side)


def _add_clavicle(out: np.ndarray, an: Anatomy, frame: Frame, side: str) -> None:
    """S-shaped clavicle: thick medial head by the sternum, rising to the acromion."""
    a0, a1 = 0.03, 0.4
    win = _side_window(frame, side, a0 - 0.02, a1 + 0.03, an.clavicle_y - 0.11,
                       an.clavicle_y + 0.05)
    if win is None:
        return
    X, Y = frame.coords(win)
    a = np.abs(X - 0.5)
    t = np.clip((a - a0) / (a1 - a0), 0.0, 1.0)
    rise = an.clavicle_slope * (a1 - a0) + 0.02
    centre = an.clavicle_y + 0.008 - rise * t**1.3 + 0.014 * np.sin(2 * np.pi * t)
    half = 0.0125 + 0.007 * np.exp(-((t / 0.1) ** 2)) + 0.003 * np.exp(-(((t - 1) / 0.15) ** 2))
    d = np.abs(Y - centre) / half
    ends = _smooth((a - a0) / 0.012) * _smooth((a1 - a) / 0.02)
    bone = _tube(np.minimum(d, 1.0), 0.75)
    out[_sl(win)] += (0.6 * bone * ends).astype(F32)


def _add_shoulder(out: np.ndarray, an: Anatomy, geo: Geometry, frame: Frame, side: str) -> None:
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
    segments: list[tuple[int, float, float, float, float, float, float]] = []
    for side in ("right", "left"):
        sgn = SIGN[side]
        hx, hy = geo.hilum(side)
        # Trunks: (angle from lateral, degrees up), start width in px at 512.
        trunks = [(100, 5.5), (65, 5.0), (25, 5.0), (-15, 5.5), (-50, 6.5), (-80, 7.0)]
        if side == "left":
            trunks = [(t + 5, w * 0.95) for t, w in trunks]
        for ang, w in trunks:
            ang = ang + rng.uniform(-10, 10)
            _grow(segments, geo, side, sgn, hx, hy, np.deg2rad(ang), 0.07 + rng.uniform(0, .02),
                  w, 0, rng)
    segments.sort(key=lambda s: s[0], reverse=True)  # thick trunks drawn last, on top
    for depth, x0, y0, x1, y1, w, amp in segments:
        wpx = w * scale
        p0 = frame.to_pixel(x0, y0)
        p1 = frame.to_pixel(x1, y1)
        value = amp * min(1.0, wpx)
        draw.line([p0, p1], fill=float(value), width=max(1, int(round(wpx))))
        del depth
    arr = np.asarray(img, dtype=F32)
    arr = ndimage.gaussian_filter(arr, 1.1 * scale, truncate=3.0)
    # Hilar shadows: the main pulmonary arteries as soft lobulated blobs.
    hil = np.zeros_like(arr)
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
        hil[_sl(win)] += 0.3 * blob
    return arr + hil


def _grow(segments: list, geo: Geometry, side: str, sgn: float, x: float, y: float,
          ang: float, length: float, w: float, depth: int, rng: np.random.Generator) -> None:
    """Grow one vessel branch from (x, y) and recurse into its children."""
    steps = 3
    amp = 0.07 + 0.035 * w
    for _ in range(steps):
        ang += rng.normal(0, 0.12)
        nx = x + sgn * np.cos(ang) * length / steps
        ny = y - np.sin(ang) * length / steps
        a, v = abs(nx - 0.5), ny
        if float(geo.margin(side, np.asarray(a), np.asarray(v - 0.06))) < 0.004:
            return
        segments.append((depth, x, y, nx, ny, w, amp))
        x, y = nx, ny
    if depth >= 7 or w < 0.4:
        return
    kids = 2 if rng.random() < 0.8 else 3
    spread = rng.uniform(0.3, 0.55)
    for i in range(kids):
        off = spread * (i - (kids - 1) / 2) * (2 if kids == 2 else 1) + rng.normal(0, 0.1)
        _grow(segments, geo, side, sgn, x, y, ang + off, length * rng.uniform(0.68, 0.85),
              w * rng.uniform(0.62, 0.76), depth + 1, rng)


def _texture(n: int, rng: np.random.Generator) -> np.ndarray:
    """Fine reticular lung texture: band-passed noise, shown only in aerated lung."""
    m = max(8, n // 4)
    low = rng.standard_normal((m, m)).astype(F32)
    low = ndimage.zoom(low, n / m, order=1, grid_mode=True, mode="reflect")[:n, :n]
    return (0.045 * low).astype(F32)


def _grain(n: int, rng: np.random.Generator) -> np.ndarray:
    """Film grain plus a faint large-scale mottle, in output brightness units."""
    g = rng.standard_normal((n, n), dtype=F32) * F32(0.014)
    m = max(4, n // 32)
    mot = rng.standard_normal((m, m)).astype(F32)
    mot = ndimage.zoom(mot, n / m, order=1, grid_mode=True, mode="reflect")[:n, :n]
    return (g + F32(0.008) * mot).astype(F32)


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
    dens = below * (0.55 + 0.15 * _smooth((Y - dome) / 0.08))
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


def _effusion(cv: _Canvas, f: Finding) -> None:
    """Fluid at the base: homogeneous density under a meniscus that climbs the lateral wall,
    filling the costophrenic angle and hiding the dome."""
    level = {"small": 0.0, "moderate": 0.12, "large": 0.3}[f.size]
    rng = _frng(f)
    for side in f.sides:
        sd = cv.geo.sides[side]
        height = sd.cp - sd.apex
        top = sd.cp - 0.05 - level * height * rng.uniform(0.9, 1.1)
        rise = 0.04 + 0.3 * level
        if f.size == "small":
            top, rise = sd.cp - 0.03, 0.03
        win = _side_window(cv.frame, side, 0.0, sd.width + 0.03, top - rise - 0.03,
                           sd.cp + 0.03)
        if win is None:
            continue
        X, Y = cv.frame.coords(win)
        a = np.abs(X - 0.5)
        lat = cv.geo.lateral(side, Y)
        med = cv.geo.medial(side, Y)
        s = np.clip((a - med) / np.maximum(lat - med, 1e-3), 0.0, 1.0)
        menis = top - rise * s**1.8  # concave upwards: higher laterally
        soft = 0.006 + 0.02 * (1.0 - s)
        fill = _smooth((Y - menis) / soft)
        fill = fill * (0.85 + 0.15 * _smooth((Y - menis) / 0.06))
        lung = cv.air[_sl(win)]
        cv.add(win, fill * lung * F32(AIR * 1.06))
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
        if patchy:
            blotch = _noise_field(shape, rng, 0.012 * px)
            fine = _noise_field(shape, rng, 0.005 * px)
            field = 0.55 * (1.0 - r) + 0.35 * blotch + 0.15 * fine - 0.15
            fill = _smooth(field / 0.3) * 0.6
        else:
            field = 1.0 - r + 0.3 * _noise_field(shape, rng, 0.02 * px)
            fill = _smooth(field / 0.3) * _smooth((1.25 - r) / 0.3)
            if side == "right" and f.zone == "upper":  # horizontal fissure: a sharp floor
                fis = cv.geo.hilum("right")[1] + 0.01
                fill = fill * _smooth((fis - Y) / 0.004)
        lung = cv.air[_sl(win)]
        dens = fill * lung * F32(AIR * (0.85 if not patchy else 0.7))
        if not patchy:
            xs, ys = cv.geo.lung_point(side, sc, float(np.clip(
                (vc - sd.apex) / (sd.dome_top - sd.apex), 0.05, 0.95)))
            bronchi = _bronchograms(cv, side, win, (xs, ys), hv, rng)
            dens -= bronchi * _smooth((fill - 0.75) / 0.2) * lung * 0.5
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
        branch(sx, sy, base + (k - 1) * 0.45 + rng.normal(0, 0.1), 0.3 * reach + 0.02, 2.6, 1)
    return ndimage.gaussian_filter(np.asarray(img, dtype=F32), 0.9 * scale, truncate=2.5)


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


def _mm(cv: _Canvas, mm: float) -> float:
    """Millimetres to image fractions."""
    del cv
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
        _sphere(cv, x, y, _mm(cv, d) / 2, amp)


def _mass(cv: _Canvas, f: Finding) -> None:
    rng = _frng(f)
    diam = float(f.params.get("diameter_cm", 4.5)) * 10
    side = f.sides[0]
    x, y = _place(cv, side, f.zone, rng, margin=0.08)
    lobes = ((3, 0.1, rng.uniform(0, 6.3)), (5, 0.06, rng.uniform(0, 6.3)),
             (2, 0.05, rng.uniform(0, 6.3)))
    _sphere(cv, x, y, _mm(cv, diam) / 2, 0.62, lobes)
    for _ in range(2):  # satellite lobules give a lumpy outline
        ang = rng.uniform(0, 2 * np.pi)
        off = _mm(cv, diam) * 0.38
        _sphere(cv, x + off * np.cos(ang), y + off * np.sin(ang), _mm(cv, diam) * 0.26, 0.25)


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
        _sphere(cv, x, y, _mm(cv, d) / 2, 0.22 + 0.25 * d / 16)


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
        ca = float(geo.medial(side, 0.45)) + 0.01
        cy = geo.hilum(side)[1] + 0.12
        ma = ca + (a - ca) / k
        mv = cy + (Y - cy) / (k * (0.95 if f.size != "small" else 1.0))
        inner = geo.margin(side, ma, mv) * k  # margin of the collapsed lung
        outer = geo.margin(side, a, Y)
        px = 1.0 / cv.frame.size
        lung_in = _smooth(inner / (1.5 * px) + 0.5)
        space = _smooth(outer / 0.004) * (1.0 - lung_in)
        line = np.exp(-((inner / (0.9 * px * max(1.0, cv.frame.size / 512))) ** 2))
        line *= _smooth((outer - 0.006) / 0.006)
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
