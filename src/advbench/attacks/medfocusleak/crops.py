"""Crop boxes, batched crop-and-resize, the rendered target text and safe uint8 quantisation
for the MedFocusLeak attack (``objective``).

Crop boxes are drawn from a counter-based generator (splitmix64 of the image's seed, the step
and the draw): every image gets its own random stream, so an image's crops do not depend on
which other images share its batch, and a whole run's boxes come from one vectorised call.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seeds: Sequence[int], steps: Sequence[int], k: int, fields: int = 4) -> np.ndarray:
    """U[0, 1) draws, len(steps)×B×k×fields; entry (t, b, j, f) depends only on (seeds[b],
    steps[t], j, f). Why: per-image random streams that batch composition cannot shift."""
    with np.errstate(over="ignore"):
        s = _splitmix64(np.asarray(seeds, np.int64).astype(np.uint64))
        t = np.asarray(steps, np.int64).astype(np.uint64)
        counter = ((t[:, None, None, None] * np.uint64(k) + np.arange(k, dtype=np.uint64)
                    [None, None, :, None]) * np.uint64(fields)
                   + np.arange(fields, dtype=np.uint64)[None, None, None, :])
        z = _splitmix64(_splitmix64(s[None, :, None, None] * _GOLDEN) ^ counter)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def sample_boxes(squares: Sequence[np.ndarray] | None, seeds: Sequence[int], steps: Sequence[int],
                 k: int, scale: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    """Crop boxes (y, x, h, w), len(steps)×B×k×4 int64.

    With squares (one k'×3 (y, x, side) array per image, from ``regions``): a uniformly
    chosen square, then a square crop covering a U(scale) fraction of its area at a uniform
    position inside it (as ``regions.random_crops``). Without (the M-Attack baseline): a crop
    of the whole H×W image with the image's aspect and a U(scale) fraction of its area.
    """
    lo, hi = scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    u = uniforms(seeds, steps, k)
    frac = lo + (hi - lo) * u[..., 1]
    if squares is None:
        h, w = shape
        ch = np.clip(np.floor(np.sqrt(frac) * h), 1, h).astype(np.int64)
        cw = np.clip(np.floor(np.sqrt(frac) * w), 1, w).astype(np.int64)
        y = np.floor(u[..., 2] * (h - ch + 1)).astype(np.int64)
        x = np.floor(u[..., 3] * (w - cw + 1)).astype(np.int64)
        return np.stack([y, x, ch, cw], -1)
    counts = np.array([len(s) for s in squares], np.int64)
    if len(counts) != len(seeds):
        raise ValueError("one squares array per seed")
    if (counts == 0).any():
        raise ValueError(f"no background squares in image(s) {np.flatnonzero(counts == 0)}")
    table = np.zeros((len(squares), counts.max(), 3), np.int64)
    for i, s in enumerate(squares):
        table[i, : len(s)] = np.asarray(s, np.int64).reshape(-1, 3)
    idx = np.minimum(np.floor(u[..., 0] * counts[None, :, None]).astype(np.int64),
                     counts[None, :, None] - 1)
    pick = table[np.arange(len(squares))[None, :, None], idx]  # T×B×k×3
    side = pick[..., 2]
    crop = np.clip(np.floor(np.sqrt(frac) * side), 1, side).astype(np.int64)
    room = side - crop + 1
    y = pick[..., 0] + np.floor(u[..., 2] * room).astype(np.int64)
    x = pick[..., 1] + np.floor(u[..., 3] * room).astype(np.int64)
    return np.stack([y, x, crop, crop], -1)


def boxes_to_rois(boxes: np.ndarray, device: str | torch.device) -> torch.Tensor:
    """T×B×k×4 (y, x, h, w) → T×(B·k)×5 roi_align boxes (image index, x1, y1, x2, y2), with
    the image index repeated k times per image (crop j of image b is row b·k + j)."""
    import torch

    t, b, k, _ = boxes.shape
    bi = np.broadcast_to(np.arange(b)[None, :, None], (t, b, k))
    y, x, h, w = (boxes[..., i] for i in range(4))
    rois = np.stack([bi, x, y, x + w, y + h], -1).reshape(t, b * k, 5)
    return torch.as_tensor(rois, dtype=torch.float32, device=device)


def crop_resize(x: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """All crops of a batch resized to size×size in one differentiable op (roi_align, pixel
    boxes; adaptive sampling averages each output cell's area, i.e. antialiased downscale)."""
    from torchvision.ops import roi_align

    return roi_align(x, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
                     aligned=True)


def crop_resize_one(x: torch.Tensor, box: Sequence[int], size: int) -> torch.Tensor:
    """One crop by slicing and F.interpolate, as the released code does (the reference)."""
    import torch.nn.functional as F

    y, x0, h, w = (int(v) for v in box)
    return F.interpolate(x[:, :, y:y + h, x0:x0 + w], size=(size, size), mode="bilinear",
                         align_corners=False, antialias=True)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Whole images to size×size (antialiased bilinear, differentiable)."""
    import torch.nn.functional as F

    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def render_text(text: str, size: int = 224) -> torch.Tensor:
    """The target text as a picture (black on white, wrapped), 3×size×size in [0, 1]: the
    image-side target of the paper's code (CLIP features of the rendered text)."""
    import torch
    from PIL import Image, ImageDraw, ImageFont

    font_px = max(8, size // 12)
    try:
        font = ImageFont.load_default(size=font_px)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        font = ImageFont.load_default()
    chars = max(8, int(size / (0.55 * font_px)))
    lines = textwrap.wrap(" ".join(text.split()), chars) or [""]
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    line_h = int(font_px * 1.25)
    top = max(0, (size - line_h * len(lines)) // 2)
    for i, line in enumerate(lines):
        draw.text((size // 20, top + i * line_h), line, fill="black", font=font)
    arr = np.asarray(img, np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def epsilon_pixels(epsilon: float) -> int:
    """The L∞ bound in uint8 steps the quantised output keeps: floor(ε·255) (never above
    round(ε·255)); a tolerance absorbs 16/255·255 = 15.999…"""
    return int(math.floor(epsilon * 255 + 1e-6))


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float in [0, 1] → uint8 (rounded); same shape. For clean images; adversarial ones go
    through ``quantise`` so the bound and the mask survive rounding."""
    a = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64)
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def quantise(orig_u8: np.ndarray, delta: torch.Tensor | np.ndarray, epsilon: float,
             mask: np.ndarray | None = None) -> np.ndarray:
    """Adversarial uint8 = orig_u8 + round(δ·255), δ clipped to ±floor(ε·255), zero where
    `mask` (broadcast to orig's shape) is True, clipped to [0, 255].

    Why: rounding the adversarial float image instead could step one level past ε (x0 is
    k/255 only up to float error) and could touch a protected pixel.
    """
    d = delta.detach().float().cpu().numpy() if hasattr(delta, "detach") else np.asarray(delta)
    orig = np.asarray(orig_u8)
    if d.shape != orig.shape:
        raise ValueError(f"delta {d.shape} and image {orig.shape} differ in shape")
    bound = epsilon_pixels(epsilon)
    steps = np.clip(np.rint(d * 255.0), -bound, bound).astype(np.int16)
    if mask is not None:
        steps[np.broadcast_to(np.asarray(mask, bool), steps.shape)] = 0
    return np.clip(orig.astype(np.int16) + steps, 0, 255).astype(np.uint8)
