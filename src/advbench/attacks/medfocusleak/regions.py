"""The diagnostic region to protect and the background squares MedFocusLeak may perturb.

The released code searches patches pixel by pixel in Python and can pick squares that touch
the pathology; here every step is vectorised and every square is exactly disjoint from the
(dilated) diagnostic mask, from the image border and from the other squares.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

MaskSource = Literal["source", "saliency", "ground_truth"]


def _as_mask(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"{name} must be H×W, got shape {m.shape}")
    return m.astype(bool, copy=False)


def _disk_dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Dilation by a Euclidean disk of radius r (the distance transform: any radius, one pass)."""
    if r <= 0 or not m.any():
        return m.copy()
    if m.all():
        return m.copy()
    return ndimage.distance_transform_edt(~m) <= r


def _disk_erode(m: np.ndarray, r: int) -> np.ndarray:
    """Erosion by a disk; the image border does not erode (the EDT ignores what lies outside)."""
    if r <= 0 or m.all() or not m.any():
        return m.copy()
    return ndimage.distance_transform_edt(m) > r


def clean_mask(mask: np.ndarray, *, min_area: int | float, close: int, dilate: int) -> np.ndarray:
    """Close gaps (disk of radius `close`), fill holes, drop 8-connected components smaller than
    `min_area` (pixels; a fraction of the image when < 1), then dilate by a `dilate`-pixel margin.

    Why: a thresholded saliency map is speckled, and a perturbation hugging the pathology's
    edge leaks into it. Closing does not shrink a mask that touches the image border.
    """
    m = _as_mask(mask)
    if close < 0 or dilate < 0 or min_area < 0:
        raise ValueError("close, dilate and min_area must be >= 0")
    m = _disk_erode(_disk_dilate(m, close), close) | m  # closing is extensive: keep m
    m = ndimage.binary_fill_holes(m)
    area = int(np.ceil(min_area * m.size)) if min_area < 1 else int(min_area)
    if area > 1 and m.any():
        labels, _ = ndimage.label(m, structure=np.ones((3, 3), bool))
        sizes = np.bincount(labels.ravel())
        keep = sizes >= area
        keep[0] = False
        m = keep[labels]
    return _disk_dilate(m, dilate)


def mask_from_saliency(saliency: np.ndarray, *, quantile: float = 0.8,
                       method: Literal["quantile", "otsu"] = "quantile",
                       min_area: int | float = 0.001, close: int = 3,
                       dilate: int = 4) -> np.ndarray:
    """Diagnostic mask from a saliency map (H×W, e.g. attention rollout upsampled): pixels
    strictly above the `quantile` (or Otsu) threshold, then `clean_mask`. A constant map has
    nothing above its threshold and gives an empty mask."""
    s = np.asarray(saliency, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"saliency must be H×W, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("saliency has NaN or infinite values")
    if method == "quantile":
        if not 0.0 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0, 1), got {quantile}")
        threshold = np.quantile(s, quantile)
    elif method == "otsu":
        from skimage.filters import threshold_otsu

        threshold = threshold_otsu(s) if s.max() > s.min() else s.max()
    else:
        raise ValueError(f"method must be 'quantile' or 'otsu', got {method!r}")
    return clean_mask(s > threshold, min_area=min_area, close=close, dilate=dilate)


def choose_mask(source_mask: np.ndarray | None, saliency: np.ndarray | None,
                scene_mask: np.ndarray | None, *, quantile: float = 0.8,
                method: Literal["quantile", "otsu"] = "quantile",
                min_area: int | float = 0.001, close: int = 3,
                dilate: int = 4) -> tuple[np.ndarray, MaskSource]:
    """The diagnostic mask in the spec's order: the source's own mask, else the saliency mask,
    else the phantom's ground truth; returns it and which one was used.

    Given masks (source, ground truth) are annotations: only dilated by the safety margin, never
    closed or thinned (small lesions are real). A saliency mask that comes out empty carries no
    location and falls through to the ground truth; with none, ValueError (perturbing the
    whole image would break the rule that the diagnostic region stays unchanged).
    """
    if source_mask is not None:
        return _disk_dilate(_as_mask(source_mask, "source_mask"), dilate), "source"
    if saliency is not None:
        m = mask_from_saliency(saliency, quantile=quantile, method=method, min_area=min_area,
                               close=close, dilate=dilate)
        if m.any():
            return m, "saliency"
        if scene_mask is None:
            raise ValueError("the saliency map gives an empty diagnostic mask (no structure "
                             "above the threshold) and there is no ground-truth mask")
    if scene_mask is not None:
        return _disk_dilate(_as_mask(scene_mask, "scene_mask"), dilate), "ground_truth"
    raise ValueError("no diagnostic mask: give a source mask, a saliency map or a ground-truth "
                     "(scene) mask")


def background_squares_batch(masks: np.ndarray, k: int = 10, *,
                             min_side: int = 8) -> list[np.ndarray]:
    """Greedy k largest disjoint background squares for each B×H×W mask (True = diagnostic).

    One chessboard distance transform per greedy step serves the whole batch (the images are
    stacked, separated by blocked rows). A free pixel at chessboard distance d from the nearest
    blocked pixel (the border counts as blocked) centres a free odd square of side 2d-1, and a
    pixel corner whose four pixels have min distance e centres a free even square of side 2e:
    together they give the exact largest free square. Ties go to the first in raster order.
    Returns per image an int array k'×3 (y, x, side), k' <= k, sides non-increasing and
    >= min_side.
    """
    ms = np.asarray(masks)
    if ms.ndim != 3:
        raise ValueError(f"masks must be B×H×W, got shape {ms.shape}")
    if k < 0 or min_side < 1:
        raise ValueError("k must be >= 0 and min_side >= 1")
    b, h, w = ms.shape
    free = np.zeros((b, h + 2, w + 2), bool)
    free[:, 1:-1, 1:-1] = ~ms.astype(bool)
    out = np.zeros((b, k, 3), np.int64)
    count = np.zeros(b, np.int64)
    active = np.ones(b, bool)
    yy, xx = np.arange(h + 2)[None, :, None], np.arange(w + 2)[None, None, :]
    for step in range(k):
        if not active.any():
            break
        d = ndimage.distance_transform_cdt(free.reshape(b * (h + 2), w + 2),
                                           metric="chessboard").reshape(b, h + 2, w + 2)
        # odd squares centred on pixels (padded coordinates)
        d_flat = d.reshape(b, -1)
        i_odd = d_flat.argmax(1)
        d_odd = d_flat[np.arange(b), i_odd]
        side_odd = np.maximum(2 * d_odd - 1, 0)
        y_odd, x_odd = np.divmod(i_odd, w + 2)
        # even squares centred on pixel corners: e[i, j] is the corner before padded (i+1, j+1)
        e = np.minimum(np.minimum(d[:, :-1, :-1], d[:, 1:, :-1]),
                       np.minimum(d[:, :-1, 1:], d[:, 1:, 1:])).reshape(b, -1)
        i_even = e.argmax(1)
        e_best = e[np.arange(b), i_even]
        side_even = 2 * e_best
        y_even, x_even = np.divmod(i_even, w + 1)
        use_even = side_even > side_odd
        side = np.where(use_even, side_even, side_odd)
        # top-left in padded coordinates
        y0 = np.where(use_even, y_even + 1 - e_best, y_odd - d_odd + 1)
        x0 = np.where(use_even, x_even + 1 - e_best, x_odd - d_odd + 1)
        active &= side >= min_side
        if not active.any():
            break
        out[active, step] = np.stack([y0 - 1, x0 - 1, side], 1)[active]
        count[active] += 1
        s, y0, x0 = side[:, None, None], y0[:, None, None], x0[:, None, None]
        taken = (yy >= y0) & (yy < y0 + s) & (xx >= x0) & (xx < x0 + s) & active[:, None, None]
        free &= ~taken
    return [out[i, : count[i]].copy() for i in range(b)]


def background_squares(mask: np.ndarray, k: int = 10, *, min_side: int = 8) -> np.ndarray:
    """The k largest disjoint axis-aligned squares wholly in the background (mask False), greedy
    (largest first): int array k'×3 (y, x, side), fewer when the background runs out."""
    return background_squares_batch(_as_mask(mask)[None], k, min_side=min_side)[0]


def squares_to_mask(squares: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Union of (y, x, side) squares as a bool H×W mask (for checks and display)."""
    sq = np.asarray(squares, np.int64).reshape(-1, 3)
    yy, xx = np.arange(shape[0])[:, None, None], np.arange(shape[1])[None, :, None]
    inside = ((yy >= sq[:, 0]) & (yy < sq[:, 0] + sq[:, 2])
              & (xx >= sq[:, 1]) & (xx < sq[:, 1] + sq[:, 2]))
    return inside.any(-1)


def random_crops(squares: np.ndarray, n: int, rng: np.random.Generator | int | None, *,
                 scale: tuple[float, float] = (0.5, 1.0)) -> np.ndarray:
    """n square crop boxes (y, x, side), each inside a uniformly chosen square, covering a
    uniform `scale` fraction of its area (as torchvision's RandomResizedCrop, aspect 1: the
    crop is resized to a square model input). Why: M-Attack-style random local crops each step.
    """
    sq = np.asarray(squares, np.int64).reshape(-1, 3)
    if len(sq) == 0:
        raise ValueError("no background squares to crop from")
    lo, hi = scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
    g = np.random.default_rng(rng)
    pick = sq[g.integers(0, len(sq), size=n)]
    side = np.clip(np.floor(np.sqrt(g.uniform(lo, hi, size=n)) * pick[:, 2]), 1, pick[:, 2])
    side = side.astype(np.int64)
    room = pick[:, 2] - side + 1
    y = pick[:, 0] + g.integers(0, room)
    x = pick[:, 1] + g.integers(0, room)
    return np.stack([y, x, side], 1).reshape(n, 3)
