"""CT and MR phantoms: an axial abdominal CT slice and an axial brain FLAIR slice, with findings.

The multi-modality demo needs CT and MR cases with known findings in any number (the CLIP
surrogates are trained on them, the attack is scored on them), which pydicom's two sample files
cannot give. Each case is a pure function of (name, index, seed, size), numpy only: the anatomy
(body outline, fat, muscle, liver, spleen, kidneys, spine, vessels, bowel, in Hounsfield units
then windowed; skull, cortex, white matter, ventricles, deep grey nuclei in FLAIR signal) comes
from one random stream, the finding from a second and the noise from a third, so
``generate_case(..., kind="none")`` of the same index is the same slice without the finding:
the two differ only inside the finding's mask (pairs that differ in one attribute).

The mask is exact: every pixel a finding changes, and none other (its opacity is positive
exactly where the mask is); with no finding it is the organ searched (liver and kidneys; the
brain). Geometry is in normalised coordinates, so ``size`` changes the resolution, not the
picture. Vocabulary, templates and tissue values are in ``cross_section.yaml``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml
from scipy import ndimage

from advbench.phantoms.modalities import ModalityCase, blob, case_kind, make_case, smooth_noise

F32 = np.float32
CROSS_SECTIONS = ("ct", "mr")
_ORDER = {"ct": 4, "mr": 5}  # random-stream ids (modalities.py uses 1-3)


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, Any]:
    """``cross_section.yaml``: kinds, tissue values and templates of the CT and MR phantoms."""
    text = resources.files("advbench.phantoms").joinpath("cross_section.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pixel-centre coordinates (v down, u right), both in (-1, 1)."""
    c = ((np.arange(size, dtype=F32) + 0.5) / size) * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    return v, u


def noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Unit-variance smooth noise with a correlation length of ``sigma`` (normalised units)."""
    s = max(sigma * size / 2, 0.05)
    return smooth_noise(rng, (size, size), (s, s))


def ellipse(v: np.ndarray, u: np.ndarray, centre: tuple[float, float],
            radii: tuple[float, float], angle: float = 0.0) -> np.ndarray:
    """Normalised distance to a rotated ellipse outline (< 1 inside)."""
    dv, du = v - centre[0], u - centre[1]
    a = (du * np.cos(angle) + dv * np.sin(angle)) / radii[1]
    b = (-du * np.sin(angle) + dv * np.cos(angle)) / radii[0]
    return np.hypot(a, b).astype(F32)


def opacity(distance: np.ndarray, edge: float) -> np.ndarray:
    """1 deep inside, falling to 0 at the outline: positive exactly where ``distance < 1``."""
    return np.clip((1 - distance) / edge, 0, 1).astype(F32)


def pick_point(region: np.ndarray, clearance: float, rng: np.random.Generator
               ) -> tuple[float, float]:
    """A random point of ``region`` at least ``clearance`` (normalised) from its edge, or its
    deepest point if none is that deep; returned as normalised (v, u)."""
    size = region.shape[0]
    if clearance > 0:
        depth = ndimage.distance_transform_edt(region) * (2 / size)
        region = depth >= min(clearance, depth.max())
    ys, xs = np.nonzero(region)
    j = int(rng.integers(ys.size))
    return (ys[j] + 0.5) / size * 2 - 1, (xs[j] + 0.5) / size * 2 - 1


def _ct(spec: dict, attrs: dict, rngs: list[np.random.Generator], size: int
        ) -> tuple[np.ndarray, np.ndarray]:
    ra, rf, rn = rngs
    hu = spec["hu"]
    v, u = grid(size)
    s = ra.uniform(0.9, 1.0)
    fat = ra.uniform(0.05, 0.13)  # subcutaneous fat thickness
    body = blob(v, u, (0.08, 0.0), (0.7 * s, 0.9 * s), ra, 0.015) < 1
    wall = blob(v, u, (0.09, 0.0), (0.7 * s - fat, 0.9 * s - fat), ra, 0.02)
    cavity = (wall < 0.93) & (v < 0.5)
    img = np.full(v.shape, hu["air"], F32)
    img[body] = hu["fat"]
    img[(wall < 1) & ~cavity] = hu["muscle"]
    img[cavity] = hu["fat"]
    loops = noise(ra, size, 0.05)
    bowel = cavity & (loops > 0.15)
    img[bowel] = hu["bowel"] + 15 * loops[bowel]
    img[bowel & (noise(ra, size, 0.025) > 1.4)] = hu["air"]  # gas in the bowel
    liver = (blob(v, u, (-0.12, -0.38 * s), (0.38 * s, 0.5 * s), ra, 0.05, 0.35) < 1) & cavity
    spleen = ellipse(v, u, (0.18, 0.62 * s), (0.24 * s, 0.11 * s), -0.5) < 1
    stomach = ellipse(v, u, (-0.28, 0.3 * s), (0.15, 0.2), 0.2)
    img[liver] = hu["liver"]
    img[spleen & cavity] = hu["spleen"]
    img[(stomach < 1) & cavity] = hu["bowel"]
    gas_level = -0.28 + ra.uniform(-0.05, 0.02)
    img[(stomach < 0.85) & cavity] = np.where(v < gas_level, hu["air"], hu["fluid"])[
        (stomach < 0.85) & cavity]
    for _ in range(int(ra.integers(4, 8))):  # hepatic and portal veins
        c = pick_point(liver, 0.06, ra)
        ves = ellipse(v, u, c, (ra.uniform(0.01, 0.025), ra.uniform(0.015, 0.04)),
                      ra.uniform(0, np.pi)) < 1
        img[ves & liver] = hu["aorta"] - 40
    kidneys = np.zeros(v.shape, bool)
    centres = {}
    for side, sign in (("right", -1), ("left", 1)):  # the patient's right is image left
        c = (0.34 + ra.uniform(-0.03, 0.03), sign * 0.34 * s)
        centres[side] = c
        d = ellipse(v, u, c, (0.15, 0.095), sign * -0.35)
        kid = d < 1
        img[kid] = hu["cortex"]
        img[kid & (d < 0.72) & (noise(ra, size, 0.02) > -0.3)] = hu["medulla"]
        img[ellipse(v, u, (c[0], c[1] - sign * 0.06), (0.06, 0.035)) < 1] = hu["sinus"]
        kidneys |= kid
        img[ellipse(v, u, (0.36, sign * 0.17), (0.06, 0.055)) < 1] = hu["muscle"]  # psoas
        img[ellipse(v, u, (0.6, sign * 0.16), (0.08, 0.13)) < 1] = hu["muscle"]  # erector
    vert = ellipse(v, u, (0.38, 0.0), (0.1, 0.12))
    img[vert < 1] = np.where(vert > 0.84, hu["cortical_bone"], hu["marrow"])[vert < 1]
    canal = ellipse(v, u, (0.56, 0.0), (0.045, 0.05))
    img[(canal >= 1) & (canal < 1.8) & (v > 0.5) & (v < 0.62)] = hu["cortical_bone"]
    img[(np.abs(u) < 0.022) & (v > 0.58) & (v < 0.68)] = hu["cortical_bone"]
    img[canal < 1] = hu["fluid"]
    img[ellipse(v, u, (0.24, 0.06), (0.045, 0.045)) < 1] = hu["aorta"]
    img[ellipse(v, u, (0.24, -0.13), (0.045, 0.06)) < 1] = hu["ivc"]
    img += np.where(body, 6 * noise(ra, size, 0.02), 0)  # parenchymal mottle
    bottom = float(v[body].max()) + 0.02
    img[np.abs(v - (bottom - 0.06 * u**2)) < 0.012] = hu["table"]
    mask = liver | kidneys
    kind = attrs["kind"]
    if attrs["present"]:
        size_mm = int(rf.integers(*spec["size_mm"][kind], endpoint=True))
        r = size_mm / spec["fov_mm"]  # normalised radius
        if kind == "renal_mass":
            side = str(rf.choice(["right", "left"]))
            where = str(rf.choice(["anterior", "posterior", "lateral"]))
            c0 = centres[side]
            sign = 1 if side == "left" else -1
            step = {"anterior": (-0.11, 0.0), "posterior": (0.1, 0.0),
                    "lateral": (0.0, 0.08 * sign)}[where]
            centre = (c0[0] + step[0], c0[1] + step[1])
            d = blob(v, u, centre, (r * rf.uniform(0.85, 1), r), rf, 0.12, rf.uniform(0, np.pi))
            value = spec["lesion_hu"][kind] + 30 * noise(rf, size, 0.02)
            edge = 0.2
        else:
            centre = pick_point(liver, r * 1.25 + 0.02, rf)
            # Cantlie's line, from the IVC forwards and to the left, parts the two lobes
            side = "left" if centre[1] > -0.13 - 0.6 * (0.24 - centre[0]) else "right"
            where = "anterior" if centre[0] < -0.12 else "posterior"
            cyst = kind == "liver_cyst"
            d = blob(v, u, centre, (r * rf.uniform(0.85, 1), r), rf, 0.03 if cyst else 0.14,
                     rf.uniform(0, np.pi))
            value = spec["lesion_hu"][kind] + (0 if cyst else 45 * np.exp(
                -((d - 0.82) / 0.1) ** 2))  # a metastasis's enhancing rim
            edge = 0.06 if cyst else 0.25
        a = opacity(d, edge) * body
        img = img * (1 - a) + value * a
        mask = a > 0
        attrs.update(size_mm=size_mm, side=side, location=where)
    img += 14 * noise(rn, size, 0.004)
    lo = spec["window"]["level"] - spec["window"]["width"] / 2
    image = np.clip((img - lo) / spec["window"]["width"], 0, 1) * 255
    return np.round(image).astype(np.uint8), mask


def _mr(spec: dict, attrs: dict, rngs: list[np.random.Generator], size: int
        ) -> tuple[np.ndarray, np.ndarray]:
    ra, rf, rn = rngs
    sig = spec["signal"]
    v, u = grid(size)
    s = ra.uniform(0.9, 1.0)
    head = blob(v, u, (0.02, 0.0), (0.88 * s, 0.72 * s), ra, 0.015)
    img = np.full(v.shape, sig["background"], F32)
    img[head < 1] = sig["scalp"]
    img[head < 0.94] = sig["skull"]
    img[(head < 0.91) & (head > 0.885)] = sig["diploe"]
    img[head < 0.865] = sig["csf"]
    brain = head < 0.845
    depth = (0.845 - head) * 0.8  # ~ normalised distance below the brain surface
    gyri = noise(ra, size, 0.03)
    grey = brain & ((depth < 0.035) | ((depth < 0.2) & (np.abs(gyri) < 0.75)))
    img[brain] = sig["white"]
    img[grey] = sig["grey"]
    img[brain & (depth < 0.17) & (np.abs(gyri) < 0.16)] = sig["csf"]  # sulci
    fissure = (v < -0.28) | (v > 0.5)
    img[brain & fissure & (np.abs(u) < 0.045)] = sig["grey"]
    img[brain & fissure & (np.abs(u) < 0.01)] = sig["csf"]
    width = ra.uniform(0.8, 1.35)  # ventricular size (age)
    vent = np.zeros(v.shape, bool)
    for sign in (-1, 1):
        img[ellipse(v, u, (-0.2, sign * 0.16), (0.07, 0.05)) < 1] = sig["deep_grey"]  # caudate
        img[ellipse(v, u, (-0.02, sign * 0.28), (0.14, 0.05), sign * -0.15) < 1] = sig[
            "deep_grey"]  # lentiform nucleus
        img[ellipse(v, u, (0.1, sign * 0.1), (0.1, 0.075)) < 1] = sig["deep_grey"]  # thalamus
        vent |= ellipse(v, u, (-0.12, sign * 0.085 * width), (0.2, 0.04 * width),
                        sign * 0.25) < 1
        vent |= ellipse(v, u, (0.24, sign * 0.16 * width), (0.09, 0.045 * width),
                        sign * -0.6) < 1
    vent |= (np.abs(u) < 0.012 * width) & (v > 0.02) & (v < 0.18)  # third ventricle
    img[vent & brain] = sig["csf"]
    white = brain & (img == sig["white"])
    mask = brain
    kind = attrs["kind"]
    if kind == "white_matter_lesions":
        grade = int(rf.integers(1, 4))
        fz = spec["fazekas"][grade]
        spread = str(rf.choice(list(spec["distributions"])))
        dist_v = ndimage.distance_transform_edt(~vent) * (2 / size)
        near = white & (dist_v > 0.015) & (dist_v < 0.12)
        a = np.zeros(v.shape, F32)
        radii = []
        for _ in range(int(rf.integers(*fz["foci"], endpoint=True))):
            side_ok = near if spread == "bilateral" or rf.random() < 0.2 else near & (
                (u > 0) if spread == "left" else (u < 0))
            r = rf.uniform(*fz["radius"])
            radii.append(r)
            d = blob(v, u, pick_point(side_ok, 0, rf), (r, r * rf.uniform(1, 1.6)), rf, 0.3,
                     rf.uniform(0, np.pi))
            a = np.maximum(a, opacity(d, 0.4))
        if fz["cap"]:
            cap = fz["cap"] * (1 + 0.5 * noise(rf, size, 0.04))
            a = np.maximum(a, np.clip((cap - dist_v) / 0.02, 0, 1) * (np.abs(v + 0.05) > 0.12))
        a *= white
        img = img * (1 - a) + sig["lesion"] * a
        mask = a > 0
        attrs.update(grade=grade, count_text=fz["count"], pattern=fz["pattern"],
                     distribution=spec["distributions"][spread],
                     side=None if spread == "bilateral" else spread,
                     size_mm=round(2 * max(radii) * spec["fov_mm"] / 2), location="periventricular")
    elif attrs["present"]:
        side, lobe = str(rf.choice(["right", "left"])), str(rf.choice(list(spec["lobes"])))
        size_mm = int(rf.integers(*spec["size_mm"][kind], endpoint=True))
        r = size_mm / spec["fov_mm"]
        sign = 1 if side == "left" else -1
        if kind == "mass":
            centre = (rf.uniform(*spec["lobes"][lobe]), sign * rf.uniform(0.25, 0.36))
            d = blob(v, u, centre, (r * rf.uniform(0.8, 1), r), rf, 0.15, rf.uniform(0, np.pi))
            od = np.hypot(v - centre[0], u - centre[1]) / (2.3 * r) + 0.3 * noise(rf, size, 0.05)
            a = np.clip((1 - od) / 0.15, 0, 1) * white
            img = img * (1 - a) + sig["oedema"] * a
            m = opacity(d, 0.2) * brain
            value = sig["lesion"] - 0.2 * np.exp(-(d / 0.45) ** 2) + 0.05 * noise(rf, size, 0.02)
            img = img * (1 - m) + value * m
            mask = (a > 0) | (m > 0)
        else:  # a wedge with its base on the cortex of a lobe (the lobe's artery territory)
            theta0 = {"frontal": -0.55, "parietal": 0.0, "occipital": 0.6}[lobe] * np.pi / 2
            theta = np.arctan2(v - 0.02, np.abs(u))
            half = r / 0.6
            reach = 0.2 + 0.4 * r + 0.03 * noise(rf, size, 0.05)  # depth of the wedge's apex
            taper = 1 - 0.6 * np.clip(depth / reach, 0, 1)  # narrower towards the apex
            a = (np.clip((half * taper - np.abs(theta - theta0)) / 0.08, 0, 1)
                 * np.clip((reach - depth) / 0.03, 0, 1) * (np.sign(u) == sign))
            a = a * brain * ~vent
            img = img * (1 - a) + (sig["lesion"] - 0.08) * a
            mask = a > 0
        attrs.update(side=side, location=lobe, size_mm=size_mm,
                     territory=spec["territories"][lobe])
    bias = 1 + 0.08 * noise(ra, size, 0.6)
    sigma = 0.025
    img = np.hypot(img * bias + sigma * noise(rn, size, 0.004), sigma * noise(rn, size, 0.004))
    image = np.clip(img / 0.95, 0, 1) * 255
    return np.round(image).astype(np.uint8), mask


_RENDER = {"ct": _ct, "mr": _mr}


def generate_case(name: str, index: int, *, seed: int, size: int | None = None,
                  kind: str | None = None) -> ModalityCase:
    """Phantom ``index`` of ``name`` (``ct`` or ``mr``): the same pixels, mask and text for the
    same arguments in any process. Kinds cycle with the index (every kind appears); ``kind``
    forces one, on the same anatomy and noise (``"none"``: the slice without its finding)."""
    spec = vocabulary()[name]
    size = int(size or spec["size"])
    kind = case_kind(name, spec, index, seed, kind)
    rngs = [np.random.default_rng([seed, _ORDER[name], index, k]) for k in range(3)]
    attrs: dict[str, Any] = {"kind": kind, "present": kind != "none", "side": None,
                             "location": None, "size_mm": None}
    image, mask = _RENDER[name](spec, attrs, rngs, size)
    attrs["severity"] = spec["severity"][kind].format(**attrs)
    return make_case(name, index, spec, image, mask, spec["templates"][kind], attrs)
