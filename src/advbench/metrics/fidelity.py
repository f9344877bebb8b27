"""Fidelity of an adversarial image to its original: L∞, L2, PSNR, SSIM (whole image or
restricted to inside/outside a mask) and the largest change inside the diagnostic mask.

Images are H×W or H×W×C (channels last) on the 0–255 scale (uint8 as stored); masks are bool
H×W. Everything runs offline with no weights (scikit-image); embedding similarity for AvgSim
is `cosine_similarity`.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

SSIM_WINDOW = 7  # scikit-image's default uniform window; regions are eroded by it

Where = Literal["all", "outside", "inside"]


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: a {x.shape} vs b {y.shape}")
    if x.ndim not in (2, 3):
        raise ValueError(f"images must be H×W or H×W×C, got shape {x.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def _region(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != image_shape[:2]:
        raise ValueError(f"mask shape {m.shape} does not match image shape {image_shape}")
    return m.astype(bool, copy=False)


def linf(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute pixel difference, 0–255 scale."""
    x, y = _pair(a, b)
    return float(np.abs(x - y).max()) if x.size else 0.0


def l2(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean norm of the difference over all pixel values (every channel) on the 0–1
    scale, i.e. ||(a - b) / 255||_2 — the convention of the adversarial literature."""
    x, y = _pair(a, b)
    return float(np.sqrt((((x - y) / 255.0) ** 2).sum()))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (scikit-image, data_range 255); float("inf") for
    identical images (zero error)."""
    from skimage.metrics import peak_signal_noise_ratio

    x, y = _pair(a, b)
    if np.array_equal(x, y):
        return float("inf")
    return float(peak_signal_noise_ratio(x, y, data_range=255.0))


def ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None,
         where: Where = "all") -> float:
    """SSIM (scikit-image, 7×7 uniform window, data_range 255, channels averaged).

    - "all": scikit-image's standard mean SSIM over the whole image (mask not used).
    - "outside" / "inside": the mean of the SSIM map over the pixels whose whole 7×7 window
      lies outside / inside the mask, so a change on the other side cannot reach the value
      (unchanged pixels there give 1 up to float rounding). "outside" with no mask averages
      the whole map. NaN when no window fits in the region.
    """
    from scipy.ndimage import binary_erosion
    from skimage.metrics import structural_similarity

    if where not in ("all", "outside", "inside"):
        raise ValueError(f"where must be 'all', 'outside' or 'inside', got {where!r}")
    x, y = _pair(a, b)
    channel_axis = -1 if x.ndim == 3 else None
    if where == "all":
        return float(structural_similarity(x, y, data_range=255.0, channel_axis=channel_axis))
    if mask is None:
        if where == "inside":
            raise ValueError("ssim(where='inside') needs a mask")
        region = np.ones(x.shape[:2], bool)
    else:
        m = _region(mask, x.shape)
        region = binary_erosion(~m if where == "outside" else m,
                                structure=np.ones((SSIM_WINDOW, SSIM_WINDOW), bool),
                                border_value=1)
    if not region.any():
        return float("nan")
    _, full = structural_similarity(x, y, data_range=255.0, full=True,
                                    channel_axis=channel_axis)
    if full.ndim == 3:
        full = full.mean(axis=-1)
    return float(full[region].mean())


def mask_change(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Largest absolute change inside the mask (any channel), 0–255 scale; 0 for an empty mask.
    MedFocusLeak's rule is that this is exactly 0."""
    x, y = _pair(a, b)
    m = _region(mask, x.shape)
    if not m.any():
        return 0.0
    return float(np.abs(x[m] - y[m]).max())


def fidelity(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
    """All metrics at once, stable keys: linf, l2, ssim (whole image), psnr, mask_change
    (None when no mask is given)."""
    return {
        "linf": linf(a, b),
        "l2": l2(a, b),
        "ssim": ssim(a, b),
        "psnr": psnr(a, b),
        "mask_change": None if mask is None else mask_change(a, b, mask),
    }


def cosine_similarity(u: Any, v: Any, eps: float = 1e-8) -> Any:
    """Row-wise cosine similarity of embedding batches N×D (or D), broadcasting rows (N×D with
    1×D). numpy in → numpy out; a torch tensor on either side → torch out (on its device). A
    zero vector gives 0 (norms are clamped to eps)."""
    if _is_torch(u) or _is_torch(v):
        import torch

        ref = u if _is_torch(u) else v
        tu = torch.as_tensor(u, device=ref.device)
        tv = torch.as_tensor(v, device=ref.device)
        dtype = torch.promote_types(tu.dtype, tv.dtype)
        if not dtype.is_floating_point:
            dtype = torch.float32
        tu, tv = tu.to(dtype), tv.to(dtype)
        if tu.shape[-1] != tv.shape[-1]:
            raise ValueError(f"embedding sizes differ: u {tuple(tu.shape)} vs v {tuple(tv.shape)}")
        return torch.nn.functional.cosine_similarity(tu, tv, dim=-1, eps=eps)
    x, y = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"embedding sizes differ: u {x.shape} vs v {y.shape}")
    nx = np.maximum(np.linalg.norm(x, axis=-1), eps)
    ny = np.maximum(np.linalg.norm(y, axis=-1), eps)
    return (x * y).sum(-1) / (nx * ny)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"
