"""Phantom scenes: the anatomy of one synthetic patient plus the findings drawn on it.

A scene is the exact ground truth of a phantom study. It is plain data (JSON round-trip) so
that later stages can edit it (add, remove or change findings, anatomy untouched) and
re-render the image; see ``render.py`` for why anatomy and findings are kept apart.

Coordinates are image fractions (x to the viewer's right, y down). A PA film is viewed as if
facing the patient, so the patient's *right* side is on the image *left*.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

SCENE_FORMAT = "advbench-phantom-scene/1"

FINDING_KINDS: tuple[str, ...] = (
    "pleural_effusion",
    "consolidation",
    "patchy_opacity",
    "nodule",
    "mass",
    "hilar_enlargement",
    "adenopathy",
    "metastases",
    "cardiomegaly",
    "pneumothorax",
    "diaphragm_flattening",
)
SIDES: tuple[str, ...] = ("right", "left", "bilateral")
ZONES: tuple[str, ...] = ("upper", "mid", "lower")
SIZES: tuple[str, ...] = ("small", "moderate", "large")

# Kinds that always involve both lungs, or the midline, whatever side is asked for.
_BILATERAL_ONLY = {"metastases"}
_NO_SIDE = {"cardiomegaly"}


@dataclass(frozen=True)
class Anatomy:
    """Everything about the patient that no finding changes; ``seed`` drives noise and texture.

    Lengths are fractions of the image side. Defaults are a plain average adult.
    """

    seed: int = 0
    sex: str = "M"
    body_half_width: float = 0.45  # outer soft-tissue contour at mid chest
    thorax_half_width: float = 0.355  # inner rib cage (lateral lung edge) at its widest
    lung_top: float = 0.13  # lung apices
    lung_width_right: float = 1.0  # scale of each hemithorax width
    lung_width_left: float = 1.0
    dome_right: float = 0.695  # top of the right hemidiaphragm dome
    dome_left: float = 0.72  # left dome sits lower than the right one
    cp_depth: float = 0.065  # how far the costophrenic angles sit below the dome tops
    ctr: float = 0.44  # cardiothoracic ratio
    heart_left_fraction: float = 0.66  # part of the heart width to the patient's left
    heart_top: float = 0.42
    mediastinum_half_width: float = 0.062
    trachea_half_width: float = 0.018
    rib_count: int = 10  # posterior ribs above the diaphragm
    rib_curvature: float = 1.0
    rib_thickness: float = 0.5  # rib band share of one rib spacing
    clavicle_y: float = 0.175  # height of the medial clavicle ends
    clavicle_slope: float = 0.1  # lateral ends rise by this share of their length
    rotation_deg: float = 0.0  # in-plane tilt of the patient
    obliquity: float = 0.0  # spinous processes off the midline (patient rotation)
    exposure: float = 1.0  # < 1 underexposed (whiter), > 1 overexposed (darker)
    contrast: float = 1.0
    soft_tissue: float = 1.0  # habitus: more soft tissue, less lung contrast
    breast: float = 0.0  # 0 none .. 1 prominent breast shadows

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Anatomy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Finding:
    """One abnormality. ``seed`` fixes its own shape and placement, independent of others.

    ``params`` holds kind-specific numbers: ``count`` and ``diameter_mm`` (nodule),
    ``diameter_cm`` (mass), ``count`` and ``max_mm`` (metastases).
    """

    kind: str
    side: str = "right"
    zone: str = "lower"
    size: str = "moderate"
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}; known: {FINDING_KINDS}")
        if self.side not in SIDES:
            raise ValueError(f"unknown side {self.side!r}; use one of {SIDES}")
        if self.zone not in ZONES:
            raise ValueError(f"unknown zone {self.zone!r}; use one of {ZONES}")
        if self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; use one of {SIZES}")

    @property
    def sides(self) -> tuple[str, ...]:
        """The lungs involved: ``("right",)``, ``("left",)`` or both."""
        return ("right", "left") if self.side == "bilateral" else (self.side,)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "side": self.side, "zone": self.zone, "size": self.size,
                "seed": self.seed, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        return cls(kind=data["kind"], side=data.get("side", "right"),
                   zone=data.get("zone", "lower"), size=data.get("size", "moderate"),
                   seed=int(data.get("seed", 0)), params=dict(data.get("params") or {}))


@dataclass(frozen=True)
class Scene:
    """A phantom: anatomy plus findings. Equal scenes render to identical pixels."""

    anatomy: Anatomy = field(default_factory=Anatomy)
    findings: tuple[Finding, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "findings", tuple(self.findings))

    @property
    def is_normal(self) -> bool:
        return not self.findings

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(f.kind for f in self.findings)

    def with_findings(self, findings: Sequence[Finding]) -> Scene:
        """The same patient with other findings (what an edit of the image changes)."""
        return replace(self, findings=tuple(findings))

    def add(self, finding: Finding) -> Scene:
        return self.with_findings((*self.findings, finding))

    def without(self, kind: str) -> Scene:
        return self.with_findings(tuple(f for f in self.findings if f.kind != kind))

    def to_dict(self) -> dict[str, Any]:
        return {"format": SCENE_FORMAT, "anatomy": self.anatomy.to_dict(),
                "findings": [f.to_dict() for f in self.findings]}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Read ``to_dict`` output; extra keys (a layout adds ``concepts``) are ignored."""
        fmt = data.get("format", SCENE_FORMAT)
        if fmt != SCENE_FORMAT:
            raise ValueError(f"unsupported scene format {fmt!r}; expected {SCENE_FORMAT!r}")
        return cls(anatomy=Anatomy.from_dict(data.get("anatomy", {})),
                   findings=tuple(Finding.from_dict(f) for f in data.get("findings", [])))

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))


# --------------------------------------------------------------------------- sampling

def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 4)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A plausible adult: habitus, lung and heart sizes, ribs, positioning and exposure vary."""
    sex = "F" if rng.random() < 0.5 else "M"
    dome_right = _u(rng, 0.665, 0.725)
    return Anatomy(
        seed=int(rng.integers(0, 2**31 - 1)),
        sex=sex,
        body_half_width=_u(rng, 0.43, 0.475),
        thorax_half_width=round(_u(rng, 0.345, 0.385) * (0.97 if sex == "F" else 1.0), 4),
        lung_top=_u(rng, 0.115, 0.15),
        lung_width_right=_u(rng, 0.95, 1.04),
        lung_width_left=_u(rng, 0.93, 1.02),
        dome_right=dome_right,
        dome_left=round(dome_right + float(rng.uniform(0.012, 0.04)), 4),
        cp_depth=_u(rng, 0.065, 0.1),
        ctr=_u(rng, 0.39, 0.47),
        heart_left_fraction=_u(rng, 0.62, 0.7),
        heart_top=_u(rng, 0.40, 0.44),
        mediastinum_half_width=_u(rng, 0.055, 0.07),
        trachea_half_width=_u(rng, 0.015, 0.021),
        rib_count=int(rng.integers(9, 12)),
        rib_curvature=_u(rng, 0.8, 1.2),
        rib_thickness=_u(rng, 0.44, 0.56),
        clavicle_y=_u(rng, 0.16, 0.2),
        clavicle_slope=_u(rng, 0.05, 0.2),
        rotation_deg=_u(rng, -2.5, 2.5),
        obliquity=_u(rng, -0.012, 0.012),
        exposure=_u(rng, 0.9, 1.1),
        contrast=_u(rng, 0.9, 1.12),
        soft_tissue=_u(rng, 0.85, 1.25),
        breast=_u(rng, 0.3, 1.0) if sex == "F" else 0.0,
    )


def _pick(rng: np.random.Generator, options: Sequence[str], p: Sequence[float]) -> str:
    p = np.asarray(p, dtype=float)
    return str(options[int(rng.choice(len(options), p=p / p.sum()))])


def sample_finding(
    kind: str,
    rng: np.random.Generator,
    *,
    side: str | None = None,
    zone: str | None = None,
    size: str | None = None,
) -> Finding:
    """One finding of ``kind`` with plausible side, zone, size and parameters."""
    if kind not in FINDING_KINDS:
        raise ValueError(f"unknown finding kind {kind!r}; known: {FINDING_KINDS}")
    seed = int(rng.integers(0, 2**31 - 1))
    side_p = {"pleural_effusion": (0.4, 0.3, 0.3), "adenopathy": (0.25, 0.15, 0.6),
              "hilar_enlargement": (0.4, 0.3, 0.3), "diaphragm_flattening": (0.1, 0.1, 0.8)}
    zone_p = {"consolidation": (0.3, 0.25, 0.45), "patchy_opacity": (0.2, 0.3, 0.5),
              "nodule": (0.45, 0.35, 0.2), "mass": (0.5, 0.35, 0.15),
              "pneumothorax": (1.0, 0.0, 0.0), "pleural_effusion": (0.0, 0.0, 1.0),
              "diaphragm_flattening": (0.0, 0.0, 1.0), "metastases": (0.2, 0.3, 0.5),
              "hilar_enlargement": (0.0, 1.0, 0.0), "adenopathy": (0.2, 0.8, 0.0),
              "cardiomegaly": (0.0, 0.3, 0.7)}
    size_p = {"pleural_effusion": (0.5, 0.35, 0.15), "pneumothorax": (0.45, 0.35, 0.2),
              "cardiomegaly": (0.4, 0.4, 0.2)}
    if side is None:
        if kind in _BILATERAL_ONLY:
            side = "bilateral"
        elif kind in _NO_SIDE:
            side = "left"
        else:
            side = _pick(rng, SIDES, side_p.get(kind, (0.5, 0.5, 0.0)))
    zone = zone or _pick(rng, ZONES, zone_p.get(kind, (1 / 3, 1 / 3, 1 / 3)))
    size = size or _pick(rng, SIZES, size_p.get(kind, (0.4, 0.4, 0.2)))
    params: dict[str, Any] = {}
    if kind == "nodule":
        params["count"] = int(rng.choice([1, 1, 1, 2, 2, 3]))
        lo, hi = {"small": (5, 9), "moderate": (9, 16), "large": (16, 28)}[size]
        params["diameter_mm"] = int(rng.integers(lo, hi + 1))
    elif kind == "mass":
        lo, hi = {"small": (3.0, 4.0), "moderate": (4.0, 5.5), "large": (5.5, 8.0)}[size]
        params["diameter_cm"] = round(float(rng.uniform(lo, hi)), 1)
    elif kind == "metastases":
        lo, hi = {"small": (12, 20), "moderate": (20, 35), "large": (35, 55)}[size]
        params["count"] = int(rng.integers(lo, hi + 1))
        params["max_mm"] = int(rng.integers(8, 16))
    return Finding(kind=kind, side=side, zone=zone, size=size, seed=seed, params=params)


# Which findings tend to come with a primary one (probability, and how the side follows).
_CO_OCCUR: dict[str, tuple[tuple[str, float], ...]] = {
    "pleural_effusion": (("cardiomegaly", 0.35), ("consolidation", 0.15)),
    "consolidation": (("pleural_effusion", 0.3), ("patchy_opacity", 0.25)),
    "patchy_opacity": (("pleural_effusion", 0.2), ("consolidation", 0.1)),
    "nodule": (("hilar_enlargement", 0.15), ("diaphragm_flattening", 0.15)),
    "mass": (("adenopathy", 0.35), ("hilar_enlargement", 0.2), ("pleural_effusion", 0.2)),
    "hilar_enlargement": (("adenopathy", 0.3), ("mass", 0.15)),
    "adenopathy": (("hilar_enlargement", 0.35), ("mass", 0.2)),
    "metastases": (("pleural_effusion", 0.3), ("adenopathy", 0.15)),
    "cardiomegaly": (("pleural_effusion", 0.45), ("patchy_opacity", 0.1)),
    "pneumothorax": (("diaphragm_flattening", 0.2), ("pleural_effusion", 0.08)),
    "diaphragm_flattening": (("nodule", 0.2), ("pneumothorax", 0.1)),
}
_PRIMARY_P: dict[str, float] = {
    "pleural_effusion": 0.16, "consolidation": 0.14, "patchy_opacity": 0.1, "nodule": 0.11,
    "mass": 0.07, "hilar_enlargement": 0.05, "adenopathy": 0.05, "metastases": 0.05,
    "cardiomegaly": 0.12, "pneumothorax": 0.09, "diaphragm_flattening": 0.06,
}
# Second findings that share the primary's side when both are one-sided.
_SAME_SIDE = {("consolidation", "pleural_effusion"), ("pleural_effusion", "consolidation"),
              ("mass", "hilar_enlargement"), ("mass", "pleural_effusion"),
              ("pneumothorax", "diaphragm_flattening"), ("patchy_opacity", "pleural_effusion"),
              ("hilar_enlargement", "mass"), ("adenopathy", "mass"),
              ("pneumothorax", "pleural_effusion"), ("consolidation", "patchy_opacity")}


def sample_scene(
    rng: np.random.Generator,
    *,
    findings: Sequence[str] | None = None,
    normal: bool | None = None,
    p_normal: float = 0.33,
    co_occurrence: bool = True,
    anatomy: Anatomy | None = None,
) -> Scene:
    """A plausible study: about a third normal, the rest 1-3 findings that go together.

    ``findings`` forces those kinds (others may join when ``co_occurrence``); ``normal=True``
    forces a normal scene; ``anatomy`` keeps a given patient.
    """
    anatomy = anatomy or sample_anatomy(rng)
    if normal and findings:
        raise ValueError("a normal scene cannot have forced findings")
    if findings is None and (normal or (normal is None and rng.random() < p_normal)):
        return Scene(anatomy=anatomy)

    kinds = list(findings) if findings else [
        _pick(rng, list(_PRIMARY_P), list(_PRIMARY_P.values()))]
    chosen = [sample_finding(k, rng) for k in kinds]
    if co_occurrence and len(chosen) < 3:
        for partner, p in _CO_OCCUR[kinds[0]]:
            if len(chosen) >= 3:
                break
            if partner in kinds or rng.random() >= p:
                continue
            first = chosen[0]
            side = None
            if (kinds[0], partner) in _SAME_SIDE and first.side != "bilateral":
                side = first.side
            if partner == "pleural_effusion" and kinds[0] == "cardiomegaly":
                side = "bilateral" if rng.random() < 0.6 else "right"
            if partner == "diaphragm_flattening" and kinds[0] != "pneumothorax":
                side = "bilateral"
            chosen.append(sample_finding(partner, rng, side=side))
            kinds.append(partner)
    return Scene(anatomy=anatomy, findings=tuple(chosen))
