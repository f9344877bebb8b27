"""Fidelity metrics (L∞, L2, PSNR, SSIM, mask change) and attack rates (MTR, AvgSim, MAS)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from advbench.metrics.fidelity import (
    cosine_similarity,
    fidelity,
    l2,
    linf,
    mask_change,
    psnr,
    ssim,
)
from advbench.metrics.rates import avg_sim, mas_geometric, mas_product, mtr, summarise

C1 = (0.01 * 255) ** 2  # SSIM's luminance constant for data_range 255


def texture(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 236, size=shape).astype(np.uint8)


def centre_mask(h: int = 48, w: int = 48) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[12:36, 12:36] = True
    return m


# --- L∞, L2, PSNR -----------------------------------------------------------------------


def test_uniform_shift_gives_hand_computed_linf_l2_psnr():
    a = np.full((64, 64), 100, np.uint8)
    b = a + np.uint8(3)
    assert linf(a, b) == 3.0
    assert l2(a, b) == pytest.approx(3 / 255 * 64)  # sqrt(4096 · (3/255)²)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 9))


def test_partial_change_l2_is_0_to_1_scale_norm_and_symmetric():
    a = texture((32, 40))
    b = a.copy()
    b[:5, :4] = np.clip(b[:5, :4].astype(int) + 10, 0, 255)  # 20 pixels up by 10
    assert linf(a, b) == linf(b, a) == 10.0
    assert l2(a, b) == pytest.approx(10 / 255 * math.sqrt(20))
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (20 * 100 / (32 * 40))))


def test_colour_single_channel_change():
    a = texture((16, 16, 3))
    b = a.copy()
    b[4, 5, 2] = a[4, 5, 2] - 7
    assert linf(a, b) == 7.0
    assert l2(a, b) == pytest.approx(7 / 255)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (49 / (16 * 16 * 3))))


def test_identical_images_psnr_is_inf_and_distances_zero():
    a = texture((20, 20))
    assert psnr(a, a.copy()) == float("inf")
    assert linf(a, a) == 0.0 and l2(a, a) == 0.0


def test_uint8_inputs_do_not_wrap_around():
    a = np.array([[0, 255]], np.uint8)
    b = np.array([[255, 0]], np.uint8)
    assert linf(a, b) == 255.0
    assert l2(a, b) == pytest.approx(math.sqrt(2))


# --- SSIM -------------------------------------------------------------------------------


def test_ssim_identical_is_one_grey_and_colour():
    for shape in ((40, 50), (40, 50, 3)):
        a = texture(shape)
        assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
        assert ssim(a, a.copy(), centre_mask(40, 50), where="outside") == pytest.approx(1.0)
        assert ssim(a, a.copy(), centre_mask(40, 50), where="inside") == pytest.approx(1.0)


def test_ssim_of_constant_images_matches_the_formula():
    a = np.full((30, 30), 100, np.uint8)
    b = np.full((30, 30), 120, np.uint8)
    expected = (2 * 100 * 120 + C1) / (100**2 + 120**2 + C1)  # no variance: luminance only
    assert ssim(a, b) == pytest.approx(expected)
    assert ssim(a, b, centre_mask(30, 30), where="inside") == pytest.approx(expected)
    assert ssim(a, b, where="outside") == pytest.approx(expected)


def test_change_outside_mask_leaves_inside_ssim_one_and_mask_change_zero():
    for shape in ((48, 48), (48, 48, 3)):
        a = texture(shape, seed=1)
        mask = centre_mask()
        b = a.copy()
        noise = np.random.default_rng(2).integers(-30, 31, size=shape)
        b[~mask] = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)[~mask]
        assert ssim(a, b, mask, where="inside") == pytest.approx(1.0, abs=1e-9)
        assert mask_change(a, b, mask) == 0.0
        assert ssim(a, b, mask, where="outside") < 0.99
        assert ssim(a, b) < ssim(a, b, mask, where="inside")


def test_change_inside_mask_leaves_outside_ssim_one():
    a = texture((48, 48), seed=4)
    mask = centre_mask()
    b = a.copy()
    b[mask] = 255 - a[mask]
    assert ssim(a, b, mask, where="outside") == pytest.approx(1.0, abs=1e-9)
    assert ssim(a, b, mask, where="inside") < 0.5
    assert mask_change(a, b, mask) == float(np.abs(a[mask].astype(int) - b[mask]).max())


def test_ssim_region_too_thin_for_a_window_is_nan_and_bad_arguments_raise():
    a, b = texture((30, 30)), texture((30, 30), seed=1)
    thin = np.zeros((30, 30), bool)
    thin[:, 10:14] = True  # 4 px wide: no 7×7 window fits inside
    assert math.isnan(ssim(a, b, thin, where="inside"))
    assert math.isnan(ssim(a, b, np.ones((30, 30), bool), where="outside"))
    with pytest.raises(ValueError, match="needs a mask"):
        ssim(a, b, where="inside")
    with pytest.raises(ValueError, match="where"):
        ssim(a, b, thin, where="border")  # type: ignore[arg-type]


def test_ssim_outside_matches_corpa_ssim_outside():
    from advbench.attacks.corpa.attack import ssim_outside

    for shape in ((40, 44), (40, 44, 3)):
        a, b = texture(shape, seed=5), texture(shape, seed=6)
        mask = np.random.default_rng(7).random((40, 44)) < 0.01
        assert ssim(a, b, mask, where="outside") == ssim_outside(a, b, mask)
        assert ssim(a, b, None, where="outside") == ssim_outside(a, b, None)


# --- mask change, fidelity, validation --------------------------------------------------


def test_mask_change_empty_mask_is_zero_and_colour_takes_any_channel():
    a = texture((20, 20, 3))
    b = a.copy()
    b[10, 10, 1] = a[10, 10, 1] ^ np.uint8(0x40)  # changes by exactly 64
    assert mask_change(a, b, np.zeros((20, 20), bool)) == 0.0
    m = np.zeros((20, 20), bool)
    m[10, 10] = True
    assert mask_change(a, b, m) == 64.0


def test_shape_mismatch_raises_naming_both_shapes():
    with pytest.raises(ValueError, match=r"\(10, 10\).*\(10, 12\)"):
        linf(np.zeros((10, 10), np.uint8), np.zeros((10, 12), np.uint8))
    with pytest.raises(ValueError, match=r"\(10, 10, 3\).*\(10, 10\)"):
        fidelity(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match=r"mask shape \(9, 10\).*\(10, 10\)"):
        mask_change(np.zeros((10, 10)), np.zeros((10, 10)), np.zeros((9, 10), bool))


def test_fidelity_returns_all_metrics_with_stable_keys():
    a = texture((32, 32))
    b = a.copy()
    b[0, 0] = a[0, 0] + 5
    mask = np.zeros((32, 32), bool)
    mask[0, 0] = True
    out = fidelity(a, b, mask)
    assert list(out) == ["linf", "l2", "ssim", "psnr", "mask_change"]
    assert out == {"linf": 5.0, "l2": pytest.approx(5 / 255), "ssim": ssim(a, b),
                   "psnr": psnr(a, b), "mask_change": 5.0}
    unmasked = fidelity(a, a)
    assert unmasked["mask_change"] is None and unmasked["psnr"] == float("inf")
    assert unmasked["ssim"] == pytest.approx(1.0)


# --- cosine similarity ------------------------------------------------------------------


def test_cosine_similarity_numpy_known_values():
    u = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    v = np.array([[0.0, 3.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(u, v), [0.0, 1 / math.sqrt(2), -1.0, 0.0])
    np.testing.assert_allclose(cosine_similarity(u[:3], [1.0, 0.0]), [1.0, 1 / math.sqrt(2), 1.0])
    assert cosine_similarity([3.0, 4.0], [3.0, 4.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sizes differ"):
        cosine_similarity(np.ones((2, 3)), np.ones((2, 4)))


def test_cosine_similarity_torch_in_torch_out_and_mixed():
    torch = pytest.importorskip("torch")
    u = np.random.default_rng(0).normal(size=(5, 8))
    v = np.random.default_rng(1).normal(size=(5, 8))
    ref = cosine_similarity(u, v)
    out = cosine_similarity(torch.tensor(u), torch.tensor(v))
    assert isinstance(out, torch.Tensor) and out.shape == (5,)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6)
    mixed = cosine_similarity(torch.tensor(u, dtype=torch.float32), v)
    assert isinstance(mixed, torch.Tensor)
    np.testing.assert_allclose(mixed.numpy(), ref, rtol=1e-5)


# --- attack rates -----------------------------------------------------------------------


def test_mtr_avg_sim_and_both_mas_forms():
    assert mtr([True, False, True, True]) == 0.75
    assert mtr([]) is None and avg_sim([]) is None
    assert avg_sim([0.8, 0.9, 0.85]) == pytest.approx(0.85)
    # the paper's MedFocusLeak / InternVL-8B row: .79 × .85 = .67 in its table
    assert round(mas_product(0.79, 0.85), 2) == 0.67
    assert mas_geometric(0.79, 0.85) == pytest.approx(math.sqrt(0.79 * 0.85))
    assert mas_product(None, 0.85) is None and mas_geometric(0.5, None) is None
    assert math.isnan(mas_geometric(0.5, -0.2))


def test_summarise_groups_rows_and_sorts_deterministically():
    rows = (
        [{"victim": "qwen", "modality": "ct", "method": "mfl", "misdirected": m, "avg_sim": s}
         for m, s in [(True, 0.8), (False, 0.9), (True, None), (None, 0.7)]]
        + [{"victim": "internvl", "modality": "xray", "method": "mfl", "misdirected": True,
            "avg_sim": 0.85}]
        + [{"victim": "qwen", "modality": "ct", "method": "m-attack", "misdirected": False,
            "avg_sim": 0.75}]
    )
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    out = summarise(rows)
    assert summarise(shuffled) == out
    assert [(r["victim"], r["method"]) for r in out] == [
        ("internvl", "mfl"), ("qwen", "m-attack"), ("qwen", "mfl")]
    qwen = out[2]
    assert qwen["n"] == 4 and qwen["modality"] == "ct"
    assert qwen["mtr"] == pytest.approx(2 / 3)  # the unjudged row is left out
    assert qwen["avg_sim"] == pytest.approx(0.8)  # (0.8 + 0.9 + 0.7) / 3
    assert qwen["mas_product"] == pytest.approx(2 / 3 * 0.8)
    assert qwen["mas_geometric"] == pytest.approx(math.sqrt(2 / 3 * 0.8))
    by_victim = summarise(rows, by=("victim",))
    assert [(r["victim"], r["n"]) for r in by_victim] == [("internvl", 1), ("qwen", 5)]
    assert summarise([]) == []
