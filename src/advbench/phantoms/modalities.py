"""Demo data beyond chest X-ray: synthetic phantoms and real sample images, with masks.

Three synthetic phantoms (numpy only, vectorised; a case is a pure function of (modality,
index, seed)): liver ultrasound (a fan-shaped sector with speckle, a cyst, solid mass or
haemangioma, or none), dermoscopy (a pigmented lesion with an irregular border and colour
variegation on skin) and mammography (an MLO view with fibroglandular texture and a mass,
spiculated mass or calcification cluster, or none). Each has findings text from
``modalities.yaml`` stating the attributes an attack could edit, and the exact mask of its
diagnostic region: the finding's pixels (for calcifications, the disc the cluster spans), or,
with no finding, the organ searched (the liver in the sector, the breast).

``write_modality_demo`` writes them, with pydicom's CT and MR files and scikit-image's fundus
and histology images (masks derived from the pixels), as a DICOM folder and an image folder
that the ``dicom`` and ``image-folder`` sources read.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage

from advbench.images import encode_png

F32 = np.float32
PHANTOMS = ("ultrasound", "dermoscopy", "mammography")
_ORDER = {"ultrasound": 1, "dermoscopy": 2, "mammography": 3}


@lru_cache(maxsize=1)
def vocabulary() -> dict[str, Any]:
    """``modalities.yaml``: each modality's findings vocabulary and templates, read once."""
    text = resources.files("advbench.phantoms").joinpath("modalities.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@dataclass
class ModalityCase:
    """One phantom: 8-bit pixels, the exact diagnostic-region mask, findings, attributes."""

    id: str
    modality: str
    body_part: str
    image: np.ndarray  # uint8, H x W (gray) or H x W x 3 (RGB)
    mask: np.ndarray  # bool, H x W
    findings: str
    attributes: dict[str, Any]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                 sigma: tuple[float, float]) -> np.ndarray:
    """White noise blurred by a Gaussian of ``sigma`` (y, x) pixels (in Fourier space), scaled
    to zero mean and unit variance."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    kernel = np.exp(-2 * np.pi**2 * ((fy * sigma[0]) ** 2 + (fx * sigma[1]) ** 2))
    out = np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * kernel, s=shape)
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(F32)


def blob(yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], radii: tuple[float, float],
         rng: np.random.Generator, irregularity: float, angle: float = 0.0) -> np.ndarray:
    """Normalised distance to a lesion outline (< 1 inside): a rotated ellipse whose border
    wobbles by ``irregularity`` (a few random harmonics)."""
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[1]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[0]
    harmonics = np.arange(2, 9, dtype=F32)
    amps = (irregularity * rng.uniform(0.3, 1.0, harmonics.size) / np.sqrt(harmonics - 1))
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    theta = np.arctan2(v, u)[..., None]
    edge = 1 + (amps * np.cos(harmonics * theta + phases)).sum(-1)
    return (np.hypot(u, v) / np.maximum(edge, 0.3)).astype(F32)


def _soft(distance: np.ndarray, edge: float) -> np.ndarray:
    """Opacity from a normalised distance: 1 inside, 0 outside, >= 0.5 exactly where < 1."""
    return np.clip((1 - distance) / edge + 0.5, 0, 1).astype(F32)


def _band(bands: dict[str, list[float]], share: float) -> str:
    """The name of the band (listed in order, each [low, high]) a share falls in."""
    return next((name for name, (_, high) in bands.items() if share <= high), list(bands)[-1])


def _ultrasound(spec: dict, attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    h, w = spec["size"]
    mm = spec["pixel_mm"]
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    apex_y, apex_x, r0, half = -0.1 * h, w / 2, 0.14 * h, 0.44
    rho, theta = np.hypot(yy - apex_y, xx - apex_x), np.arctan2(xx - apex_x, yy - apex_y)
    depth = (rho - r0) * mm  # mm from the skin
    r1 = h - apex_y - 4
    sector = (np.abs(theta) < half) & (rho > r0) & (rho < r1)
    capsule = 20 + 1.5 * np.sin(theta * 7 + rng.uniform(0, 6))
    shift = rng.uniform(-6, 6)
    diaphragm = (r1 - r0) * mm * 0.86 - 14 * np.cos(theta * 2.2) + shift
    echo = np.where(depth < 2, 1.1, np.where(depth < 11, 0.32, np.where(depth < capsule, 0.45,
                                                                         0.55))).astype(F32)
    echo *= 1 + 0.25 * smooth_noise(rng, (h, w), (1, 9)) * ((depth > 11) & (depth < capsule))
    echo += 1.0 * np.exp(-((depth - capsule) / 0.8) ** 2)
    echo = np.where(depth > diaphragm, 0.18, echo) + 1.3 * np.exp(-((depth - diaphragm) / 1.6) ** 2)
    liver = sector & (depth > capsule + 1) & (depth < diaphragm - 2)
    for _ in range(2):  # portal veins: anechoic with bright walls
        vy, vx = rng.uniform(0.35 * h, 0.75 * h), rng.uniform(0.3 * w, 0.7 * w)
        d = blob(yy, xx, (vy, vx), (rng.uniform(2.5, 4), rng.uniform(8, 18)), rng, 0.03,
                 rng.uniform(0, np.pi))
        echo = np.where(d < 1, 0.05, echo) + 0.9 * np.exp(-((d - 1.15) / 0.15) ** 2) * liver
    attrs["field_cm"] = round((r1 - r0) * mm / 10)
    mask = liver
    if attrs["present"]:
        side = rng.choice(list(spec["sides"]))
        frac = rng.uniform(*spec["depths"][str(rng.choice(list(spec["depths"])))])
        size = int(rng.integers(spec["size_mm"][0], spec["size_mm"][1] + 1))
        t_c = (-1 if side == "right" else 1) * rng.uniform(0.08, 0.28)
        radius = size / 2 / mm
        floor = ((r1 - r0) * mm * 0.86 - 14 * np.cos(t_c * 2.2) + shift - 4) / mm  # diaphragm
        rho_c = np.clip(r0 + frac * (r1 - r0), r0 + 26 / mm + radius, r0 + floor - radius)
        band = _band(spec["depths"], (rho_c - r0) / (r1 - r0))
        centre = (apex_y + rho_c * np.cos(t_c), apex_x + rho_c * np.sin(t_c))
        irregular = {"cyst": 0.02, "mass": 0.16, "hemangioma": 0.05}[attrs["kind"]]
        d = blob(yy, xx, centre, (radius * rng.uniform(0.8, 1), radius), rng, irregular,
                 rng.uniform(0, np.pi))
        inside = {"cyst": 0.02, "mass": 0.13, "hemangioma": 1.6}[attrs["kind"]]
        behind_gain = {"cyst": 2.4, "mass": 0.3, "hemangioma": 1.1}[attrs["kind"]]
        behind = np.clip((0.9 * radius / rho_c - np.abs(theta - t_c)) / (0.3 * radius / rho_c),
                         0, 1) * (rho > rho_c)
        fade = np.exp(-(rho - rho_c) / (6 * radius))
        echo = echo * (1 + (behind_gain - 1) * fade * behind)
        lesion = _soft(d, 0.08)
        echo = echo * (1 - lesion) + inside * (1 + 0.2 * smooth_noise(rng, (h, w), (3, 3))) * lesion
        if attrs["kind"] == "cyst":
            echo += 0.6 * np.exp(-((d - 1) / 0.05) ** 2)
        mask = (d < 1) & sector
        attrs.update(side=side, side_text=spec["sides"][side], depth=band, size_mm=size,
                     depth_cm=round(float((rho_c - r0) * mm / 10), 1), location=band)
    speckle = np.hypot(smooth_noise(rng, (h, w), (0.7, 1.8)),  # Rayleigh: |complex Gaussian|
                       smooth_noise(rng, (h, w), (0.7, 1.8))) / 1.25
    gain = np.exp(-0.003 * depth) * (1 + 0.1 * depth / 150)
    image = np.log1p(5 * np.clip(echo, 0, None) * speckle * gain) / np.log1p(9.0)
    image = np.where(sector, np.clip(image, 0, 1) * 235, 0)
    ticks = (np.abs(xx - (w - 6)) < 1.5) & (np.mod(yy - apex_y - r0, 20 / mm * 0.5) < 2)
    image = np.where(ticks & (yy > apex_y + r0), 200, image)
    return image.astype(np.uint8), mask


def _dermoscopy(spec: dict, attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    h, w = spec["size"]
    mm, kind = spec["pixel_mm"], attrs["kind"]
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    tones = spec["skin_tones"]
    skin = np.asarray(tones[rng.integers(len(tones))], F32)
    shade = 1 + 0.04 * smooth_noise(rng, (h, w), (25, 25)) + 0.02 * smooth_noise(rng, (h, w),
                                                                                 (1.2, 1.2))
    image = skin * shade[..., None]
    size = float(rng.uniform(*spec["size_mm"][kind]))
    radius = size / 2 / mm
    centre = (h / 2 + rng.uniform(-12, 12), w / 2 + rng.uniform(-12, 12))
    squash = rng.uniform(0.85, 1) if kind == "naevus" else rng.uniform(0.65, 0.9)
    d = blob(yy, xx, centre, (radius * squash, radius), rng, spec["irregularity"][kind],
             rng.uniform(0, np.pi))
    alpha = _soft(d, 0.06 if kind == "naevus" else 0.12)
    palette = [np.asarray(spec["colours"][c], F32) for c in spec["palette"][kind]]
    fade = np.clip(0.7 + 0.6 * (1 - d), 0, 1)[..., None]  # paler towards the border
    colour = skin + (palette[0] - skin) * fade
    off = (rng.uniform(-0.3, 0.3) * radius, rng.uniform(-0.3, 0.3) * radius)
    strength = {"dark brown": 0.9, "black": 0.75, "blue-grey": 0.7, "red": 0.55}
    for k, name in enumerate(spec["palette"][kind][1:], 1):  # central, then eccentric patches
        patch = blob(yy, xx, (centre[0] + off[0] * k, centre[1] - off[1] * k),
                     (radius * 0.4, radius * 0.5), rng, 0.2, rng.uniform(0, np.pi))
        noise = smooth_noise(rng, (h, w), (radius / 6, radius / 6))
        weight = strength[name] / (1 + np.exp(-np.clip(5 * (1 - patch) + 1.2 * noise - 1.5,
                                                             -30, 30)))
        colour += (palette[k] - colour) * (weight * (d < 0.95))[..., None]
    band = smooth_noise(rng, (h, w), (2.4, 2.4))  # zero lines of band-limited noise: a net
    network = (np.abs(band) < 0.35) & (d < 0.85)
    colour *= 1 - (0.25 * network * np.clip(1.2 - d, 0, 1))[..., None]
    if kind == "melanoma":
        ring = (d > 0.7) & (d < 1.0)
        ys, xs = np.nonzero(ring)
        for j in rng.choice(ys.size, size=min(ys.size, 18), replace=False):
            dot = np.hypot(yy - ys[j], xx - xs[j]) < rng.uniform(1.5, 3.5)
            colour[dot] = spec["colours"]["black"]
    image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    for _ in range(int(rng.integers(0, 4))):  # hairs
        y0, slope, amp = rng.uniform(0, h), rng.uniform(-1.5, 1.5), rng.uniform(5, 30)
        curve = y0 + slope * (xx - w / 2) + amp * np.sin(xx / rng.uniform(40, 120))
        hair = np.abs(yy - curve) / np.sqrt(1 + slope**2) < rng.uniform(0.7, 1.3)
        image[hair] = (58, 42, 36)
    r = np.hypot(yy - h / 2, xx - w / 2) / (h / 2)
    image *= ((1 - 0.18 * r**2) * np.clip((0.98 - r) / 0.02, 0, 1))[..., None]
    image += 8 * (r > 0.98)[..., None]
    colours, site = list(spec["palette"][kind]), str(rng.choice(spec["sites"]))
    attrs.update(site=site, location=site, size_mm=round(size, 1), colour_count=len(colours),
                 colour_list=", ".join(colours[:-1]) + f" and {colours[-1]}",
                 side=next((s for s in ("left", "right") if site.startswith(s)), None))
    return np.clip(image, 0, 255).astype(np.uint8), d < 1


def _mammography(spec: dict, attrs: dict, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    h, w = spec["size"]
    mm = spec["pixel_mm"]
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    cy, depth = 0.56 * h, 0.66 * w * rng.uniform(0.92, 1.05)
    reach = depth * (1 + 0.3 * np.clip((cy - yy) / cy, 0, 1))  # wider towards the axilla
    vertical = np.where(yy < cy, 0.75 * h, 0.4 * h)
    q = (xx / reach) ** 1.8 + ((yy - cy) / vertical) ** 2
    nipple = np.hypot(yy - cy, xx - depth) < 5
    breast = (q < 1) | nipple
    thick = np.sqrt(np.clip(1 - q, 0, 1))
    density = str(rng.choice(list(spec["densities"])))
    # Fibrous strands converge on the nipple: noise laid out by angle and distance from it.
    phi = np.arctan2(yy - cy, depth - xx)
    dist = np.hypot(yy - cy, depth - xx)
    polar = smooth_noise(rng, (720, 160), (4.0, 5.0))
    strands = polar[((phi + np.pi) / (2 * np.pi) * 719).astype(int),
                    np.clip(dist / 3, 0, 159).astype(int)] * np.clip(dist / 150, 0, 1)
    texture = (0.3 * strands + 0.5 * smooth_noise(rng, (h, w), (8, 10))
               + 0.3 * smooth_noise(rng, (h, w), (2, 3)))
    envelope = np.clip(thick * 2 - 0.2, 0, 1) * np.exp(-((yy - cy + 0.08 * h) / (0.3 * h)) ** 2)
    bias = {"a": -2.4, "b": -0.9, "c": 0.4}[density]
    glands = envelope / (1 + np.exp(-np.clip(2.2 * texture + bias, -30, 30)))
    pectoral = xx < 0.34 * w * np.clip(1 - yy / (0.52 * h), 0, 1) ** 0.8 + 3 * smooth_noise(
        rng, (h, w), (40, 40))
    level = (0.16 + 0.2 * thick**0.5 + 0.48 * glands + 0.03 * strands
             + 0.05 * np.exp(-((1 - q) / 0.015) ** 2))
    muscle = 0.46 + 0.12 * np.clip(1 - xx / (0.34 * w), 0, 1) + 0.02 * texture
    level = np.where(pectoral & breast, muscle, level)
    mask = breast
    side = str(rng.choice(spec["sides"]))
    attrs.update(side=side, side_title=side.title(), density=density,
                 density_text=spec["densities"][density], birads=spec["birads"][attrs["kind"]])
    if attrs["present"]:
        kind = attrs["kind"]
        height = str(rng.choice(list(spec["heights"])))
        y = rng.uniform(*spec["heights"][height]) * h
        x = rng.uniform(*spec["depths"][str(rng.choice(list(spec["depths"])))]) * depth
        size = int(rng.integers(spec["size_mm"][kind][0], spec["size_mm"][kind][1] + 1))
        radius = size / 2 / mm
        muscle = 0.34 * w * max(0.0, 1 - y / (0.52 * h)) ** 0.8  # keep clear of the pectoral
        x = float(np.clip(x, muscle + radius + 6, 0.8 * depth))
        band = _band(spec["depths"], x / depth)
        attrs.update(height=height, depth=band, size_mm=size, location=f"{height} {band}")
        if kind == "calcifications":
            count = int(rng.integers(6, 17))
            spread = rng.uniform(0, radius, count) * np.sqrt(rng.uniform(0.2, 1, count))
            angle = rng.uniform(0, 2 * np.pi, count)
            dots = np.stack([y + spread * np.sin(angle), x + spread * np.cos(angle)], 1)
            dist = np.hypot(yy[..., None] - dots[:, 0], xx[..., None] - dots[:, 1])
            level = level + 0.4 * (dist < rng.uniform(0.8, 1.5, count)).any(-1)
            mask = np.hypot(yy - y, xx - x) <= radius + 2
            attrs["count"] = count
        else:
            irregular = 0.05 if kind == "mass" else 0.2
            d = blob(yy, xx, (y, x), (radius * rng.uniform(0.7, 1), radius), rng, irregular,
                     rng.uniform(0, np.pi))
            level = level + 0.15 * _soft(d, 0.2) * (1 + 0.3 * np.sqrt(np.clip(1 - d, 0, 1)))
            mask = d < 1
            if kind == "spiculated_mass":
                phi, dist = np.arctan2(yy - y, xx - x), np.hypot(yy - y, xx - x)
                for t in rng.uniform(0, 2 * np.pi, int(rng.integers(8, 15))):
                    length = radius * rng.uniform(1.6, 2.6)
                    perp = np.abs(np.sin(phi - t)) * dist
                    line = (np.cos(phi - t) > 0) & (dist < length) & (perp < 1.2)
                    level = level + 0.12 * line * (1 - dist / length)
                    mask = mask | line
            mask = mask & breast
    noise = 0.015 * rng.standard_normal((h, w))
    image = np.where(breast, np.clip(level + noise, 0, 1) ** 1.2 * 250, 6 + 3 * noise)
    image = image.astype(np.uint8)
    if side == "right":  # chest wall on the image's right, as a right MLO is hung
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


_RENDER = {"ultrasound": _ultrasound, "dermoscopy": _dermoscopy, "mammography": _mammography}


def case_kind(name: str, spec: dict, index: int, seed: int, kind: str | None = None) -> str:
    """The finding kind of phantom ``index``: ``kind`` when given (checked), else the kinds in
    turn, so that every kind appears."""
    kind = kind or spec["kinds"][(index + seed) % len(spec["kinds"])]
    if kind not in spec["kinds"]:
        raise ValueError(f"unknown {name} kind {kind!r}; known: {', '.join(spec['kinds'])}")
    return kind


def make_case(name: str, index: int, spec: dict, image: np.ndarray, mask: np.ndarray,
              template: str, attrs: dict[str, Any]) -> ModalityCase:
    """A phantom case: its findings text is the modality's header and ``template`` filled in
    with ``attrs``, on one line."""
    text = f"{spec['header']} {template}".format(**attrs)
    return ModalityCase(f"{name}-{index:03d}", spec["modality"], spec["body_part"], image,
                        np.asarray(mask, bool), " ".join(text.split()), attrs)


def generate_case(name: str, index: int, *, seed: int) -> ModalityCase:
    """Phantom ``index`` of modality ``name`` (ultrasound, dermoscopy, mammography): the same
    pixels, mask and text for the same (name, index, seed), in any process."""
    spec = vocabulary()[name]
    rng = np.random.default_rng([seed, _ORDER[name], index])
    kind = case_kind(name, spec, index, seed)
    attrs = {"kind": kind, "present": kind != "none", "severity": spec["severity"][kind]}
    image, mask = _RENDER[name](spec, attrs, rng)
    return make_case(name, index, spec, image, mask, spec["templates"][kind], attrs)


def ct_mask(hu: np.ndarray) -> np.ndarray:
    """The vertebra of a CT slice, with its spinal canal and any bone joined to it: bone
    (> 200 HU) closed, holes filled, the largest part kept."""
    bone = ndimage.binary_closing(hu > 200, iterations=2)
    return _largest(ndimage.binary_fill_holes(bone))


def mr_mask(pixels: np.ndarray) -> np.ndarray:
    """T2-bright structures: Otsu threshold, opened, parts under 12 pixels dropped."""
    from skimage.filters import threshold_otsu

    return _drop_small(ndimage.binary_opening(pixels > threshold_otsu(pixels)), 12)


def fundus_mask(rgb: np.ndarray) -> np.ndarray:
    """The circular field of view of a fundus photograph: not black, holes filled."""
    return _largest(ndimage.binary_fill_holes(rgb.astype(F32).mean(-1) > 20))


def histology_mask(rgb: np.ndarray) -> np.ndarray:
    """DAB-stained (brown) tissue: the DAB channel of a colour deconvolution, thresholded,
    closed, holes under 64 pixels filled, parts under 256 pixels dropped."""
    from skimage.color import rgb2hed

    stained = ndimage.binary_closing(rgb2hed(rgb)[..., 2] > 0.03, iterations=2)
    return _drop_small(~_drop_small(~stained, 64), 256)


def _drop_small(region: np.ndarray, min_size: int) -> np.ndarray:
    """The region without its connected parts of fewer than ``min_size`` pixels."""
    labels, count = ndimage.label(region)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= min_size
    keep[0] = False
    return keep[labels]


def _largest(region: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(region)
    if count == 0:
        return region
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


_EXTRA = ("kind", "present", "side", "size_mm", "location", "severity")


def write_modality_demo(root: Path, *, seed: int, per_modality: int = 8) -> dict[str, Any]:
    """Write ``root/dicom`` (pydicom's CT and MR files, masks, metadata.csv) and
    ``root/images`` (fundus, histology and ``per_modality`` phantoms of each synthetic
    modality, masks, metadata.csv); return what was written. Files are overwritten, none
    removed: give an empty folder or one this function wrote."""
    import pydicom
    import skimage.data
    from pydicom.data import get_testdata_file

    root = Path(root)
    samples = vocabulary()["samples"]
    dicom_rows, image_rows = [], []
    (root / "dicom" / "masks").mkdir(parents=True, exist_ok=True)
    for key, derive in (("ct", ct_mask), ("mr", mr_mask)):
        sample = samples[key]
        name = sample["file"]
        shutil.copyfile(get_testdata_file(name), root / "dicom" / name)
        ds = pydicom.dcmread(root / "dicom" / name)
        values = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0))
        mask_rel = f"masks/{Path(name).stem}.png"
        (root / "dicom" / mask_rel).write_bytes(encode_png(derive(values)))
        dicom_rows.append({"path": name, "findings": " ".join(sample["findings"].split()),
                           "split": "test", "mask": mask_rel, "body_part": sample["body_part"],
                           "region": " ".join(sample["mask"].split())})
    for key, array, derive in (("fundus", skimage.data.retina(), fundus_mask),
                               ("histology", skimage.data.immunohistochemistry(),
                                histology_mask)):
        sample = samples[key]
        folder = root / "images" / key
        folder.mkdir(parents=True, exist_ok=True)
        shipped = Path(skimage.data.data_dir) / sample["file"]
        rel = f"{key}/{sample['file']}" if shipped.is_file() else f"{key}/{key}.png"
        if shipped.is_file():  # the file's own bytes (JPEG stays JPEG)
            shutil.copyfile(shipped, root / "images" / rel)
        else:
            (root / "images" / rel).write_bytes(encode_png(array))
        (folder / f"{key}-mask.png").write_bytes(encode_png(derive(array)))
        image_rows.append({"id": f"{key}-sample", "path": rel,
                           "findings": " ".join(sample["findings"].split()),
                           "modality": sample["modality"], "body_part": sample["body_part"],
                           "mask": f"{key}/{key}-mask.png", "split": "test",
                           "region": " ".join(sample["mask"].split())})
    for name in PHANTOMS:
        folder = root / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        kinds = len(vocabulary()[name]["kinds"])
        for index in range(per_modality):
            case = generate_case(name, index, seed=seed)
            (folder / f"{case.id}.png").write_bytes(encode_png(case.image))
            (folder / f"{case.id}-mask.png").write_bytes(encode_png(case.mask))
            image_rows.append({
                "id": case.id, "path": f"{name}/{case.id}.png", "findings": case.findings,
                "modality": case.modality, "body_part": case.body_part,
                "mask": f"{name}/{case.id}-mask.png",
                "split": "test" if (index // kinds) % 2 else "train",
                "region": "finding" if case.attributes["present"] else "organ",
                **{k: "" if case.attributes.get(k) is None else case.attributes[k]
                   for k in _EXTRA}})
    _write_csv(root / "dicom" / "metadata.csv", dicom_rows)
    _write_csv(root / "images" / "metadata.csv", image_rows)
    modalities = Counter([samples["ct"]["modality"], samples["mr"]["modality"]]
                         + [row["modality"] for row in image_rows])
    return {"root": str(root), "seed": seed, "modalities": dict(modalities),
            "dicom": {"root": "dicom", "metadata": "dicom/metadata.csv",
                      "studies": len(dicom_rows)},
            "images": {"root": "images", "metadata": "images/metadata.csv",
                       "studies": len(image_rows)}}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
