"""Analytic chest geometry shared by the renderer and by finding placement.

Lungs, domes and heart are closed-form functions of (a, v): ``a`` is the distance from the
body midline and ``v`` the height, both image fractions. Closed forms can be evaluated on any
grid or point, so a finding can ask "where is the left lower zone?" or evaluate the lung at
shifted coordinates (a collapsing lung) without rasterising anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from advbench.phantoms.scene import Anatomy, Scene

SIGN = {"right": -1.0, "left": 1.0}  # patient right is the image left
APEX_A = 0.125  # distance of the lung apices from the midline
# Zone bands as fractions of the apex-to-dome height.
ZONE_T = {"upper": (0.1, 0.36), "mid": (0.36, 0.62), "lower": (0.62, 0.9)}
_FLATTEN_DROP = {"small": 0.03, "moderate": 0.05, "large": 0.07}
_FLATTEN_DEPTH = {"small": 0.6, "moderate": 0.4, "large": 0.25}
_CARDIO_CTR = {"small": 0.53, "moderate": 0.59, "large": 0.66}


@dataclass(frozen=True)
class Side:
    """One hemithorax: widths, apex, dome and costophrenic angle."""

    name: str
    width: float  # widest lateral extent (lateral lung edge)
    apex: float
    cp_nominal: float  # costophrenic angle of the anatomy (fixes the rib cage shape)
    dome_top: float
    cp: float  # costophrenic angle of this scene (lower when flattened)
    medial_base: float


@dataclass(frozen=True)
class Heart:
    right: float  # extent right of the midline
    left: float  # extent left of the midline
    top: float
    center: float  # where the heart meets the diaphragm
    bottom: float
    shear: float


class Geometry:
    """The chest of one scene; findings that reshape anatomy (heart, domes) are applied."""

    def __init__(self, anatomy: Anatomy, scene: Scene | None = None):
        self.anatomy = an = anatomy
        findings = scene.findings if scene is not None else ()
        drop = {"right": 0.0, "left": 0.0}
        depth_scale = {"right": 1.0, "left": 1.0}
        ctr = an.ctr
        for f in findings:
            if f.kind == "diaphragm_flattening":
                for s in f.sides:
                    drop[s] = max(drop[s], _FLATTEN_DROP[f.size])
                    depth_scale[s] = min(depth_scale[s], _FLATTEN_DEPTH[f.size])
            elif f.kind == "cardiomegaly":
                ctr = max(ctr, _CARDIO_CTR[f.size])
        self.ctr = ctr
        self.sides: dict[str, Side] = {}
        for name, scale, dome, med in (
            ("right", an.lung_width_right, an.dome_right, an.mediastinum_half_width * 0.85),
            ("left", an.lung_width_left, an.dome_left, an.mediastinum_half_width),
        ):
            cp_nom = dome + an.cp_depth
            top = dome + drop[name]
            cp = top + an.cp_depth * depth_scale[name] + 0.2 * drop[name]
            self.sides[name] = Side(name, an.thorax_half_width * scale, an.lung_top, cp_nom,
                                    top, cp, med)
        tw = self.sides["right"].width + self.sides["left"].width
        width = ctr * tw
        grow = max(0.0, ctr - an.ctr)
        top = an.heart_top - 0.3 * grow
        base = max(an.dome_left, self.sides["left"].dome_top) + 0.02 + 0.2 * grow
        frac = an.heart_left_fraction + 0.2 * grow
        self.heart = Heart(right=width * (1 - frac), left=width * frac, top=top,
                           center=base, bottom=base + 0.1, shear=0.0)

    # ---------------------------------------------------------------- lungs
    def lateral(self, side: str, v: np.ndarray | float) -> np.ndarray:
        """Lateral lung edge (inner rib cage) at height ``v``; rounded at the apex."""
        s = self.sides[side]
        t = np.clip((np.asarray(v) - s.apex) / (s.cp_nominal - s.apex), 0.0, 1.0)
        f = np.sqrt(1.0 - (1.0 - t) ** 2.3)
        return APEX_A + (s.width - APEX_A) * f

    def medial(self, side: str, v: np.ndarray | float) -> np.ndarray:
        """Medial lung edge (mediastinal border); the aortic knob pushes the left one out."""
        s = self.sides[side]
        v = np.asarray(v)
        t = np.clip((v - s.apex) / 0.06, 0.0, 1.0)
        g = np.sqrt(t)
        m = s.medial_base
        if side == "left":
            m = m + 0.018 * np.exp(-(((v - 0.3) / 0.03) ** 2))
        return APEX_A - (APEX_A - m) * g

    def dome(self, side: str, a: np.ndarray | float) -> np.ndarray:
        """Height of the hemidiaphragm at distance ``a``; steep near the costophrenic angle."""
        s = self.sides[side]
        a = np.asarray(a)
        peak = 0.45 * s.width
        lat = float(self.lateral(side, s.cp))
        x = np.clip((a - peak) / max(lat - peak, 1e-3), 0.0, 1.6)
        xm = np.clip((peak - a) / peak, 0.0, 1.0)
        return s.dome_top + (s.cp - s.dome_top) * x**2.2 + 0.5 * (s.cp - s.dome_top) * xm**2

    def margin(self, side: str, a: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Signed distance-like margin inside the lung (> 0 inside), in image fractions."""
        m = np.minimum(self.lateral(side, v) - a, a - self.medial(side, v))
        m = np.minimum(m, v - self.sides[side].apex)
        return np.minimum(m, self.dome(side, a) - v)

    def lung_point(self, side: str, s: float, t: float) -> tuple[float, float]:
        """Image point at lateral share ``s`` (0 medial, 1 lateral) and height share ``t``."""
        sd = self.sides[side]
        v = sd.apex + t * (sd.dome_top - sd.apex)
        lo, hi = float(self.medial(side, v)), float(self.lateral(side, v))
        a = lo + s * (hi - lo)
        v = min(v, float(self.dome(side, a)) - 0.02)
        return 0.5 + SIGN[side] * a, v

    def zone_rows(self, side: str, zone: str) -> tuple[float, float]:
        sd = self.sides[side]
        t0, t1 = ZONE_T[zone]
        h = sd.dome_top - sd.apex
        return sd.apex + t0 * h, sd.apex + t1 * h

    def hilum(self, side: str) -> tuple[float, float]:
        """Hilar point; the left hilum sits a little higher than the right."""
        v = 0.425 if side == "right" else 0.405
        a = self.anatomy.mediastinum_half_width + (0.035 if side == "right" else 0.04)
        return 0.5 + SIGN[side] * a, v

    def mediastinum_half(self, side: str, v: np.ndarray) -> np.ndarray:
        """Half-width of the superior mediastinum on one side (aortic knob on the left)."""
        m = self.anatomy.mediastinum_half_width
        if side == "right":
            return m * 0.8 + 0.0 * v
        return m * 0.85 + 0.022 * np.exp(-(((v - 0.295) / 0.028) ** 2)) + 0.012 * np.exp(
            -(((v - 0.36) / 0.022) ** 2))


def geometry(scene: Scene) -> Geometry:
    return Geometry(scene.anatomy, scene)
