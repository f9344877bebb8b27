"""Fundus and histology phantoms: colour photographs with findings and exact masks.

The multi-modality demo needs fundus photographs and H&E sections with known findings in any
number (the CLIP surrogates are trained on them, the attack is scored on them), which
scikit-image's two sample images cannot give. Each case is a pure function of (name, index,
seed, size), numpy and scipy only:

* fundus: an orange-red disc with vignetting, the optic disc and cup, arteries and veins
  branching from the disc around the macula; findings by diabetic-retinopathy grade
  (microaneurysms, dot-blot haemorrhages, hard exudates, cotton-wool spots, new vessels at the
  disc), stated with the eye, the quadrant, the exudates' site and macular oedema;
* histology: colonic mucosa in H&E (Beer-Lambert mixing of haematoxylin and eosin), regular
  crypts with goblet cells and basal nuclei in pink lamina propria; or an adenocarcinoma region
  by grade (stratified, crowded, cribriform glands with necrosis; solid sheets of pleomorphic
  nuclei), stated with its grade, size, extent and place in the field.

As in ``cross_section``, anatomy, finding and noise come from separate random streams, so
``generate_case(..., kind=<normal kind>)`` of the same index is the same picture without the
finding, differing only inside the mask. The mask is every pixel the finding changes (lesion
coverage > 0; the tumour region); with no finding it is what is examined (optic disc and
macula; the crypts). Vocabulary, colours and stain densities are in ``photographs.yaml``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np
import yaml
from scipy.spatial import cKDTree

from advbench.phantoms.cross_section import ellipse, grid, noise, opacity
from advbench.phantoms.modalities import ModalityCase, blob, case_kind, make_case

F32 = np.float32
PHOTOGRAPHS = ("fundus", "histology")
NORMAL = {"fundus": "none", "histology": "normal"}
_ORDER = {"fundus": 6, "histology": 7}  # random-stream ids (modalities.py uses 1-3)


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, Any]:
    """``photographs.yaml``: kinds, colours, stains and templates of the two phantoms."""
    text = resources.files("advbench.phantoms").joinpath("photographs.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _window(size: int, centre: tuple[float, float], reach: float):
    """Pixel rows and columns (as normalised coordinates) of a square around ``centre``."""
    lo = [max(int((c + 1) * size / 2 - reach * size / 2) - 2, 0) for c in centre]
    hi = [min(int((c + 1) * size / 2 + reach * size / 2) + 3, size) for c in centre]
    rows = ((np.arange(lo[0], hi[0], dtype=F32) + 0.5) / size * 2 - 1)[:, None]
    cols = ((np.arange(lo[1], hi[1], dtype=F32) + 0.5) / size * 2 - 1)[None, :]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1])), rows, cols


def stamp_ellipse(alpha: np.ndarray, centre: tuple[float, float], radii: tuple[float, float],
                  angle: float = 0.0, strength: float = 1.0) -> None:
    """Raise ``alpha`` to an ellipse's anti-aliased coverage (about a pixel of soft edge),
    computed in its bounding window only."""
    size = alpha.shape[0]
    where, rows, cols = _window(size, centre, max(radii))
    d = ellipse(rows, cols, centre, radii, angle)
    cover = np.clip((1 - d) * min(radii) * size / 2 + 0.5, 0, 1) * strength
    alpha[where] = np.maximum(alpha[where], cover)


def stamp_segment(alpha: np.ndarray, p: tuple[float, float], q: tuple[float, float],
                  width: float, strength: float = 1.0) -> None:
    """Raise ``alpha`` to the coverage of a line segment ``width`` wide (a capsule)."""
    size = alpha.shape[0]
    mid = ((p[0] + q[0]) / 2, (p[1] + q[1]) / 2)
    where, rows, cols = _window(size, mid, np.hypot(q[0] - p[0], q[1] - p[1]) / 2 + width)
    dv, du = q[0] - p[0], q[1] - p[1]
    t = np.clip(((rows - p[0]) * dv + (cols - p[1]) * du) / max(dv * dv + du * du, 1e-12), 0, 1)
    dist = np.hypot(rows - p[0] - t * dv, cols - p[1] - t * du) * size / 2
    cover = np.clip(width * size / 4 - dist + 0.5, 0, 1) * strength
    alpha[where] = np.maximum(alpha[where], cover)


def _mix(image: np.ndarray, colour: Any, alpha: np.ndarray) -> np.ndarray:
    return image * (1 - alpha[..., None]) + np.asarray(colour, F32) * alpha[..., None]


def _vessels(rng: np.random.Generator, disc: tuple[float, float], temporal: int
             ) -> list[tuple[float, float, float, float, float, bool]]:
    """Vessel segments (v0, u0, v1, u1, width, vein) from the disc: two temporal arcades that
    curve round the macula, two nasal trunks and small macular branches, each branching."""
    segments: list[tuple[float, float, float, float, float, bool]] = []

    def grow(p, heading, width, steps, bend, vein):
        for k in range(steps):
            heading += bend + rng.normal(0, 0.1)
            q = (p[0] + 0.035 * np.sin(heading), p[1] + 0.035 * np.cos(heading))
            segments.append((p[0], p[1], q[0], q[1], width, vein))
            p = q
            if np.hypot(*q) > 0.97:
                return
            if k > 2 and width > 0.008 and rng.random() < 0.14:
                side = float(rng.choice([-1, 1]))
                grow(p, heading + side * rng.uniform(0.5, 0.9), width * 0.65, (steps - k) // 2,
                     bend * 0.5, vein)
                width *= 0.88

    for vein in (True, False):
        w = 0.024 if vein else 0.017
        off = rng.normal(0, 0.12)
        for s in (-1, 1):  # superior, inferior
            lean = -s * 0.5 * temporal
            grow(disc, s * np.pi / 2 + lean + off, w, 30, np.sign(lean) * 0.065, vein)
            nasal = 0.0 if temporal < 0 else np.pi
            grow(disc, nasal + s * rng.uniform(0.5, 0.9), w * 0.8, 14, s * 0.02, vein)
            toward = 0.0 if temporal > 0 else np.pi
            grow(disc, toward + s * rng.uniform(0.15, 0.35), w * 0.45, 9, 0.0, vein)
    return segments


def _fundus(spec: dict, attrs: dict, rngs: list[np.random.Generator], size: int
            ) -> tuple[np.ndarray, np.ndarray]:
    ra, rf, rn = rngs
    col = spec["colours"]
    v, u = grid(size)
    side = str(ra.choice(["right", "left"]))
    temporal = -1 if side == "right" else 1  # the right eye's disc is on the image's right
    disc = (ra.uniform(-0.06, 0.06), -temporal * ra.uniform(0.4, 0.48))
    fovea = (disc[0] + ra.uniform(0.0, 0.06), disc[1] + temporal * ra.uniform(0.48, 0.55))
    r = np.hypot(v, u)
    fov = np.clip((0.95 - r) * size / 2 + 0.5, 0, 1)
    shade = (1 - 0.5 * r**2) * (1 + 0.05 * noise(ra, size, 0.08))
    image = np.asarray(col["fundus"], F32) * shade[..., None]
    dist_f = np.hypot(v - fovea[0], u - fovea[1])
    image = _mix(image, np.asarray(col["macula"], F32), 0.75 * np.exp(-(dist_f / 0.17) ** 2))
    image = _mix(image, (230, 150, 110), 0.6 * np.clip((0.013 - dist_f) * size / 2 + 0.5, 0, 1))
    disc_r = ra.uniform(0.1, 0.12)
    disc_a = opacity(ellipse(v, u, disc, (disc_r * 1.08, disc_r)), 0.15)
    image = _mix(image, col["disc"], disc_a)
    cup = (disc[0], disc[1] + temporal * 0.25 * disc_r)
    image = _mix(image, col["cup"], opacity(ellipse(v, u, cup, (disc_r * 0.5,) * 2), 0.4)
                 * ra.uniform(0.6, 0.95))
    for vein in (True, False):
        a = np.zeros(v.shape, F32)
        for v0, u0, v1, u1, w, is_vein in _vessels(ra, disc, temporal):
            if is_vein == vein:
                stamp_segment(a, (v0, u0), (v1, u1), w)
        image = _mix(image, col["vein" if vein else "artery"], 0.92 * a)
    grade = attrs["kind"]
    counts = {k: int(rf.integers(lo, hi, endpoint=True))
              for k, (lo, hi) in spec["lesions"][grade].items()}
    quadrant = str(rf.choice(spec["quadrants"]))
    site = str(rf.choice(["macula", "periphery"]))

    def places(n: int, focus: bool) -> np.ndarray:
        """``n`` points on the retina away from the disc; with ``focus``, mostly in the
        quadrant named in the text (superior = up; temporal = away from the disc)."""
        rad = rf.uniform(0.12, 0.8, 8 * n + 8)
        ang = rf.uniform(0, 2 * np.pi, rad.size)
        pts = np.stack([fovea[0] + rad * np.sin(ang), fovea[1] + rad * np.cos(ang)], 1)
        ok = (np.hypot(*pts.T) < 0.88) & (np.hypot(pts[:, 0] - disc[0], pts[:, 1] - disc[1])
                                          > disc_r * 1.4)
        if focus:
            up = quadrant.startswith("supero")
            tmp = quadrant.endswith("temporal")
            in_q = ((pts[:, 0] < fovea[0]) == up) & (((pts[:, 1] - fovea[1]) * temporal > 0)
                                                      == tmp)
            ok &= in_q | (rf.random(rad.size) < 0.15)
        return pts[ok][:n]

    focus = grade in ("mild", "moderate")
    red = np.zeros(v.shape, F32)
    for c in places(counts["microaneurysms"], focus):
        stamp_ellipse(red, tuple(c), (rf.uniform(0.006, 0.011),) * 2)
    for c in places(counts["haemorrhages"], focus):
        rad = rf.uniform(0.014, 0.034)
        stamp_ellipse(red, tuple(c), (rad, rad * rf.uniform(1, 1.6)), rf.uniform(0, np.pi), 0.9)
    if grade == "proliferative":  # new vessels: a fine tangle over and around the disc
        for _ in range(30):
            p = (disc[0] + rf.uniform(-1.5, 1.5) * disc_r, disc[1] + rf.uniform(-1.5, 1.5) * disc_r)
            h = rf.uniform(0, 2 * np.pi)
            q = (p[0] + 0.05 * np.sin(h), p[1] + 0.05 * np.cos(h))
            stamp_segment(red, p, q, 0.008, 0.85)
    image = _mix(image, col["haemorrhage"], red)
    yellow = np.zeros(v.shape, F32)
    for _ in range(counts["exudates"]):
        if site == "macula":
            a, rad = rf.uniform(0, 2 * np.pi), rf.uniform(0.06, 0.16)
            c0 = (fovea[0] + rad * np.sin(a), fovea[1] + rad * np.cos(a))
        else:
            c0 = tuple(places(1, False)[0])
        for _ in range(int(rf.integers(3, 8))):
            c = (c0[0] + rf.normal(0, 0.02), c0[1] + rf.normal(0, 0.02))
            stamp_ellipse(yellow, c, (rf.uniform(0.006, 0.015),) * 2, 0.0, 0.95)
    image = _mix(image, col["exudate"], yellow)
    white = np.zeros(v.shape, F32)
    for _ in range(counts["cotton_wool"]):
        s = float(rf.choice([-1, 1]))
        c = (disc[0] + s * rf.uniform(0.2, 0.4), disc[1] + temporal * rf.uniform(0.05, 0.45))
        rad = rf.uniform(0.025, 0.045)
        stamp_ellipse(white, c, (rad, rad * 1.5), rf.uniform(0, np.pi), 0.8)
    image = _mix(image, col["cotton_wool"], white)
    mask = (red > 0) | (yellow > 0) | (white > 0)
    if grade == "none":
        mask = (disc_a > 0) | (dist_f < 2 * disc_r)  # what a grader examines
    image = image * fov[..., None] + 2.0 * rn.standard_normal(image.shape) * (fov > 0)[..., None]
    where = {"none": None, "mild": quadrant, "moderate": quadrant}.get(grade, site)
    attrs.update(side=side, quadrant=quadrant if focus else None, location=where,
                 exudate_site=site if counts["exudates"] else None,
                 oedema=spec["oedema"][site], grade=spec["grades"][grade],
                 ma_count=_words(counts["microaneurysms"]), h_count=counts["haemorrhages"],
                 cw_count=counts["cotton_wool"])
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask & (fov > 0)


def _words(n: int) -> str:
    names = "zero one two three four five six seven eight nine ten".split()
    return (names[n] if n < len(names) else str(n)).capitalize()


def _nuclei(v: np.ndarray, u: np.ndarray, centres: np.ndarray, radii: np.ndarray,
            angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of many small ellipses (nuclei) at once, and which nucleus covers each pixel:
    the two nearest centres of every pixel are tested (nuclei barely overlap)."""
    size = v.shape[0]
    if len(centres) == 0:
        return np.zeros(v.shape, F32), np.zeros(v.shape, int)
    pts = np.stack([v.ravel(), u.ravel()], 1)
    k = min(2, len(centres))
    _, idx = cKDTree(centres).query(pts, k=k)
    idx = idx.reshape(len(pts), k)
    best, who = np.full(len(pts), np.inf, F32), np.zeros(len(pts), int)
    for j in range(k):
        i = idx[:, j]
        d = ellipse(pts[:, 0], pts[:, 1], (centres[i, 0], centres[i, 1]),
                    (radii[i, 0], radii[i, 1]), angles[i])
        better = d < best
        best, who = np.where(better, d, best), np.where(better, i, who)
    cover = np.clip((1 - best) * radii[who].min(1) * size / 2 + 0.5, 0, 1)
    return cover.reshape(v.shape).astype(F32), who.reshape(v.shape)


def _glands(v: np.ndarray, u: np.ndarray, centres: np.ndarray, radius: np.ndarray,
            irregularity: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radial distance to the nearest gland's wobbly outline (< 1 inside) and the
    angle around its centre."""
    _, g = cKDTree(centres).query(np.stack([v.ravel(), u.ravel()], 1))
    g = g.reshape(v.shape)
    dv, du = v - centres[g, 0], u - centres[g, 1]
    theta = np.arctan2(dv, du)
    h = np.arange(2, 6, dtype=F32)
    amps = irregularity * rng.uniform(0.3, 1, (len(centres), h.size)) / h
    phases = rng.uniform(0, 2 * np.pi, (len(centres), h.size))
    edge = 1 + (amps[g] * np.cos(h * theta[..., None] + phases[g])).sum(-1)
    return np.hypot(dv, du) / (radius[g] * edge), theta


def _lattice(rng: np.random.Generator, spacing: float, jitter: float) -> np.ndarray:
    """Jittered hexagonal lattice points covering the field (and a margin)."""
    rows = np.arange(-1.2, 1.2 + 1e-6, spacing * 0.866)
    pts = [(y, x + (i % 2) * spacing / 2) for i, y in enumerate(rows)
           for x in np.arange(-1.2, 1.2 + 1e-6, spacing)]
    return np.asarray(pts, F32) + rng.uniform(-jitter, jitter, (len(pts), 2)).astype(F32)


def _ring_nuclei(rng, centres, radius, layers, scale, pleo, polarity):
    """Nuclei along each gland's epithelium, ``layers`` deep (1 = basal, regular)."""
    out_c, out_r, out_a = [], [], []
    for c, rad in zip(centres, radius, strict=True):
        for layer in range(layers):
            rho = rad * (0.88 - 0.17 * layer)
            n = max(int(2 * np.pi * rho / (0.018 * scale)), 6)
            th = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 1)
            th = th + rng.normal(0, 0.15 / max(1, 6 - layers), n)
            rr = rho * (1 + rng.normal(0, 0.04 * layers, n))
            out_c.append(np.stack([c[0] + rr * np.sin(th), c[1] + rr * np.cos(th)], 1))
            size = 0.008 * scale * np.exp(rng.normal(0, pleo, n))
            out_r.append(np.stack([size * 1.7, size], 1))
            out_a.append(th + rng.normal(0, polarity, n))
    return np.concatenate(out_c), np.concatenate(out_r), np.concatenate(out_a)


def _histology(spec: dict, attrs: dict, rngs: list[np.random.Generator], size: int
               ) -> tuple[np.ndarray, np.ndarray]:
    ra, rf, rn = rngs
    den = {k: np.asarray(x, F32) for k, x in spec["density"].items()}
    v, u = grid(size)
    fibres = noise(ra, size, 0.01) * 0.6 + noise(ra, size, 0.04) * 0.4
    he = den["stroma"] * (1 + 0.3 * fibres[..., None])
    crypts = _lattice(ra, 0.5, 0.08)
    radius = ra.uniform(0.16, 0.2, len(crypts)).astype(F32)
    rho, theta = _glands(v, u, crypts, radius, 0.1, ra)
    goblet = (np.cos(9 * theta + rho * 3) > 0.1) & (rho > 0.5) & (rho < 0.8)
    he = np.where((rho < 1)[..., None], den["cytoplasm"], he)
    he = np.where(((rho < 1) & goblet)[..., None], den["mucin"], he)
    he = np.where((rho < 0.42)[..., None], den["lumen"], he)
    nc, nr, na = _ring_nuclei(ra, crypts, radius, 1, 1.0, 0.1, 0.1)
    lym = ra.uniform(-1, 1, (400, 2)).astype(F32)
    _, near = cKDTree(crypts).query(lym)
    lym = lym[np.hypot(*(lym - crypts[near]).T) > radius[near] * 1.15]
    nc = np.concatenate([nc, lym])
    nr = np.concatenate([nr, np.full((len(lym), 2), 0.0075, F32)])
    na = np.concatenate([na, np.zeros(len(lym))])
    cover, who = _nuclei(v, u, nc, nr, na)
    chrom = 1 + 0.15 * noise(ra, size, 0.004)
    nuc = np.where((who >= len(nc) - len(lym))[..., None], den["lymphocyte"], den["nucleus"])
    he = he * (1 - cover[..., None]) + nuc * chrom[..., None] * cover[..., None]
    kind = attrs["kind"]
    mask = rho < 1
    if attrs["present"]:
        t = spec["tumour"][kind]
        centre = (rf.uniform(-0.45, 0.45), rf.uniform(-0.45, 0.45))
        extent = rf.uniform(0.45, 0.75)
        region = blob(v, u, centre, (extent * rf.uniform(0.7, 1), extent), rf, 0.25,
                      rf.uniform(0, np.pi))
        tum = den["desmoplasia"] * (1 + 0.3 * fibres[..., None])
        if t["layers"]:
            cents = _lattice(rf, t["spacing"], t["spacing"] * 0.2)
            rad = rf.uniform(*t["radius"], len(cents)).astype(F32)
            g_rho, g_th = _glands(v, u, cents, rad, t["irregularity"], rf)
            holes = noise(rf, size, 0.012)
            lumen = (g_rho < 0.4) | ((g_rho < 0.8) & (holes > 1.3) & (t["necrosis"] > 0))
            he_g = np.where((g_rho < 1)[..., None], den["cytoplasm"] * 1.15, tum)
            debris = den["necrosis"] * (0.8 + 0.4 * (noise(rf, size, 0.005) > 0.8))[..., None]
            he_g = np.where(lumen[..., None], np.where(
                (noise(rf, size, 0.05) < t["necrosis"] - 0.5)[..., None], debris, den["lumen"]),
                he_g)
            tc, tr, tan = _ring_nuclei(rf, cents, rad, t["layers"], t["scale"],
                                       t["pleomorphism"], 0.6)
            tum = he_g
        else:  # solid sheets: nuclei on a dense jittered lattice, thin stromal strands
            tc = _lattice(rf, 0.036 * t["scale"] / 1.4, 0.008)
            tc = tc[rf.random(len(tc)) > 0.12]
            tr = 0.008 * t["scale"] * np.exp(rf.normal(0, t["pleomorphism"], (len(tc), 1)))
            tr = tr * np.stack([rf.uniform(1, 1.5, len(tc)), np.ones(len(tc))], 1)
            tan = rf.uniform(0, np.pi, len(tc))
            strands = np.abs(noise(rf, size, 0.06)) < 0.12
            tum = np.where(strands[..., None], tum, den["cytoplasm"] * 1.2)
        tcover, _ = _nuclei(v, u, tc.astype(F32), tr.astype(F32), tan)
        dark = den["nucleus"] * np.asarray([1.4, 1.0], F32)  # hyperchromatic
        tum = tum * (1 - tcover[..., None]) + dark * chrom[..., None] * tcover[..., None]
        a = opacity(region, 0.08)
        he = he * (1 - a[..., None]) + tum * a[..., None]
        mask = a > 0
        diameter = 2 * extent * spec["field_mm"] / 2
        attrs.update(grade=t["grade"], grade_text=spec["grades"][kind],
                     features=spec["features"][kind], size_mm=round(float(diameter), 2),
                     extent=int(round(float(mask.mean()) * 20) * 5),
                     side="left" if centre[1] < 0 else "right",
                     location=f"{'upper' if centre[0] < 0 else 'lower'} "
                              f"{'left' if centre[1] < 0 else 'right'}")
    stains = np.stack([np.asarray(spec["stains"]["haematoxylin"], F32),
                       np.asarray(spec["stains"]["eosin"], F32)])
    od = he @ stains  # H x W x 3 optical density
    image = 255 * np.exp(-od) + 2.0 * rn.standard_normal(od.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


_RENDER = {"fundus": _fundus, "histology": _histology}


def generate_case(name: str, index: int, *, seed: int, size: int | None = None,
                  kind: str | None = None) -> ModalityCase:
    """Phantom ``index`` of ``name`` (``fundus`` or ``histology``): the same pixels, mask and
    text for the same arguments in any process. Kinds cycle with the index (every kind
    appears); ``kind`` forces one on the same anatomy and noise (``NORMAL[name]``: the picture
    without its finding)."""
    spec = vocabulary()[name]
    size = int(size or spec["size"])
    kind = case_kind(name, spec, index, seed, kind)
    rngs = [np.random.default_rng([seed, _ORDER[name], index, k]) for k in range(3)]
    attrs: dict[str, Any] = {"kind": kind, "present": kind != NORMAL[name], "side": None,
                             "location": None, "size_mm": None}
    image, mask = _RENDER[name](spec, attrs, rngs, size)
    attrs["severity"] = spec["severity"][kind]
    template = spec["templates"].get(kind) or spec["templates"]["tumour"]
    return make_case(name, index, spec, image, mask, template, attrs)
