"""MedFocusLeak regions: diagnostic mask cleaning and choice, background squares, crops."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from advbench.attacks.medfocusleak.regions import (
    background_squares,
    background_squares_batch,
    choose_mask,
    clean_mask,
    mask_from_saliency,
    random_crops,
    squares_to_mask,
)

# --- brute-force references -------------------------------------------------------------


def brute_largest_side(blocked: np.ndarray) -> int:
    """Largest s such that some s×s window of `blocked` is all False (plain window search)."""
    h, w = blocked.shape
    for s in range(min(h, w), 0, -1):
        if (~sliding_window_view(blocked, (s, s)).any(axis=(-1, -2))).any():
            return s
    return 0


def random_mask(rng: np.random.Generator) -> np.ndarray:
    """Random masks of several kinds and shapes (noise, rectangles, blobs, empty, full)."""
    h, w = rng.integers(6, 36, size=2)
    kind = rng.integers(0, 5)
    if kind == 0:
        return rng.random((h, w)) < rng.choice([0.01, 0.05, 0.2, 0.5])
    if kind == 1:
        m = np.zeros((h, w), bool)
        for _ in range(rng.integers(1, 5)):
            y, x = rng.integers(0, h), rng.integers(0, w)
            m[y: y + rng.integers(1, h), x: x + rng.integers(1, w)] = True
        return m
    if kind == 2:
        return ndimage.gaussian_filter(rng.random((h, w)), 2) > 0.55
    if kind == 3:
        return np.zeros((h, w), bool)
    return rng.random((h, w)) < 0.995


def check_squares(mask: np.ndarray, squares: np.ndarray, k: int, min_side: int) -> None:
    h, w = mask.shape
    assert squares.dtype.kind == "i" and squares.ndim == 2 and squares.shape[1] == 3
    assert len(squares) <= k
    blocked = mask.copy()
    for y, x, s in squares:
        assert s >= min_side
        assert 0 <= y and 0 <= x and y + s <= h and x + s <= w, "square out of bounds"
        # all background and disjoint from earlier squares; greedy: the largest still free
        assert not blocked[y: y + s, x: x + s].any(), "square overlaps mask or a square"
        assert s == brute_largest_side(blocked), "not the largest square still free"
        blocked[y: y + s, x: x + s] = True
    assert (np.diff(squares[:, 2]) <= 0).all(), "sides not sorted descending"
    if len(squares) < k:  # stopped early: nothing of min_side is left
        assert brute_largest_side(blocked) < min_side


# --- background squares -----------------------------------------------------------------


def test_background_squares_match_brute_force_greedy_on_random_masks():
    rng = np.random.default_rng(1234)
    for _ in range(250):
        mask = random_mask(rng)
        k, min_side = int(rng.integers(0, 8)), int(rng.integers(1, 5))
        squares = background_squares(mask, k, min_side=min_side)
        check_squares(mask, squares, k, min_side)


def test_first_square_is_the_largest_possible():
    rng = np.random.default_rng(7)
    for _ in range(200):
        mask = random_mask(rng)
        squares = background_squares(mask, 1, min_side=1)
        assert (squares[0, 2] if len(squares) else 0) == brute_largest_side(mask)


def test_background_squares_batch_equals_per_image_and_does_not_leak_between_images():
    rng = np.random.default_rng(99)
    masks = rng.random((6, 20, 27)) < 0.03
    masks[2] = True  # a fully diagnostic image in the middle of the stack
    masks[3] = False  # a free one right below it
    batch = background_squares_batch(masks, 6, min_side=2)
    assert len(batch) == 6
    for mask, squares in zip(masks, batch, strict=True):
        np.testing.assert_array_equal(squares, background_squares(mask, 6, min_side=2))
        check_squares(mask, squares, 6, 2)
    assert batch[2].shape == (0, 3)
    assert batch[3][0, 2] == 20


def test_background_squares_known_layout():
    mask = np.zeros((40, 60), bool)
    mask[:, 20:40] = True  # two free 40×20 strips
    squares = background_squares(mask, 10, min_side=8)
    np.testing.assert_array_equal(squares, [[0, 0, 20], [0, 40, 20], [20, 0, 20],
                                            [20, 40, 20]])


def test_even_and_odd_sides_both_found():
    for side in (5, 6, 9, 12):
        mask = np.ones((20, 20), bool)
        mask[3: 3 + side, 4: 4 + side] = False
        np.testing.assert_array_equal(background_squares(mask, 3, min_side=1)[:1],
                                      [[3, 4, side]])


def test_background_squares_edge_cases():
    assert background_squares(np.ones((10, 10), bool)).shape == (0, 3)
    assert background_squares(np.zeros((10, 10), bool), 0).shape == (0, 3)
    assert background_squares(np.zeros((10, 10), bool), 5, min_side=11).shape == (0, 3)
    np.testing.assert_array_equal(background_squares(np.zeros((10, 14), bool), 1),
                                  [[0, 0, 10]])
    with pytest.raises(ValueError, match="B×H×W"):
        background_squares_batch(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="H×W"):
        background_squares(np.zeros((2, 4, 4), bool))


def test_squares_to_mask_is_the_union_of_squares():
    m = squares_to_mask(np.array([[0, 0, 2], [3, 1, 1]]), (4, 3))
    np.testing.assert_array_equal(m, [[1, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    assert not squares_to_mask(np.zeros((0, 3), int), (3, 3)).any()


# --- random crops -----------------------------------------------------------------------


def test_random_crops_lie_inside_squares_with_area_in_scale():
    squares = np.array([[0, 0, 40], [50, 60, 17], [5, 100, 8]])
    crops = random_crops(squares, 2000, np.random.default_rng(0), scale=(0.5, 0.9))
    assert crops.shape == (2000, 3) and crops.dtype.kind == "i"
    y, x, s = crops.T
    inside = ((y[:, None] >= squares[:, 0]) & (x[:, None] >= squares[:, 1])
              & (y[:, None] + s[:, None] <= squares[:, 0] + squares[:, 2])
              & (x[:, None] + s[:, None] <= squares[:, 1] + squares[:, 2]))
    assert inside.any(1).all(), "a crop leaves every square"
    owner = inside.argmax(1)
    frac = s**2 / squares[owner, 2] ** 2
    assert (frac <= 0.9 + 1e-9).all()
    # floor of the side loses < 1 pixel: area fraction >= (sqrt(0.5) - 1/S)^2
    assert (frac >= (np.sqrt(0.5) - 1 / squares[owner, 2]) ** 2 - 1e-9).all()
    assert set(np.unique(owner)) == {0, 1, 2}, "not every square gets picked"
    assert len(np.unique(crops[owner == 0, :2], axis=0)) > 50, "offsets do not vary"


def test_random_crops_seeded_and_validated():
    squares = np.array([[3, 4, 30]])
    np.testing.assert_array_equal(random_crops(squares, 10, 5), random_crops(squares, 10, 5))
    full = random_crops(squares, 5, 0, scale=(1.0, 1.0))
    np.testing.assert_array_equal(full, np.repeat(squares, 5, 0))
    assert random_crops(squares, 0, 0).shape == (0, 3)
    with pytest.raises(ValueError, match="no background squares"):
        random_crops(np.zeros((0, 3), int), 3, 0)
    with pytest.raises(ValueError, match="scale"):
        random_crops(squares, 3, 0, scale=(0.0, 0.5))


# --- mask cleaning and choice -----------------------------------------------------------


def test_clean_mask_removes_speckle_fills_holes_and_closes_gaps():
    m = np.zeros((60, 60), bool)
    m[10:30, 10:20] = True
    m[10:30, 22:32] = True  # 2-pixel gap to the first block: closed
    m[18:22, 14:18] = False  # a hole: filled
    m[50, 50] = m[5, 55] = True  # speckle: removed
    out = clean_mask(m, min_area=20, close=2, dilate=0)
    assert out[12:28, 10:32].all()  # a disk closing leaves the gap's two ends rounded
    assert out[18:22, 14:18].all()
    assert not out[50, 50] and not out[5, 55]
    assert out.sum() == out[10:30, 10:32].sum()  # nothing grows outside the blocks' hull
    assert not clean_mask(m, min_area=20, close=0, dilate=0)[12:28, 20:22].any()


def test_clean_mask_min_area_as_fraction_and_dilation_margin():
    m = np.zeros((50, 50), bool)
    m[20:30, 20:30] = True  # 100 px = 4 % of the image
    m[2:4, 2:4] = True  # 4 px = 0.16 %
    out = clean_mask(m, min_area=0.01, close=0, dilate=0)
    assert out.sum() == 100
    assert clean_mask(m, min_area=0.05, close=0, dilate=0).sum() == 0
    dilated = clean_mask(m, min_area=0.01, close=0, dilate=3)
    dist = ndimage.distance_transform_edt(~out)
    np.testing.assert_array_equal(dilated, dist <= 3)
    assert dilated[20, 17] and not dilated[20, 16]


def test_clean_mask_closing_does_not_shrink_at_the_border():
    m = np.zeros((30, 30), bool)
    m[:, :6] = True  # touches three borders
    out = clean_mask(m, min_area=0, close=4, dilate=0)
    np.testing.assert_array_equal(out, m)
    assert not clean_mask(np.zeros((8, 8), bool), min_area=3, close=2, dilate=2).any()
    with pytest.raises(ValueError):
        clean_mask(m, min_area=0, close=-1, dilate=0)


def blob_saliency(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:64, :64]
    return np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 288.0) + 0.05 * rng.random((64, 64))


def test_mask_from_saliency_finds_the_salient_blob():
    sal = blob_saliency(np.random.default_rng(3))
    for method in ("quantile", "otsu"):
        m = mask_from_saliency(sal, method=method)
        assert m[20, 40] and not m[60, 5] and not m[0, 0]
        labels, n = ndimage.label(m)
        assert n == 1
    raw = mask_from_saliency(sal, quantile=0.9, min_area=0, close=0, dilate=0)
    assert raw.sum() == pytest.approx(0.1 * sal.size, abs=2)


def test_mask_from_saliency_constant_map_is_empty_and_bad_input_raises():
    assert not mask_from_saliency(np.full((16, 16), 0.3)).any()
    assert not mask_from_saliency(np.full((16, 16), 0.3), method="otsu").any()
    with pytest.raises(ValueError, match="NaN"):
        mask_from_saliency(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="method"):
        mask_from_saliency(np.zeros((8, 8)), method="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantile"):
        mask_from_saliency(np.zeros((8, 8)), quantile=1.0)


def test_choose_mask_follows_source_then_saliency_then_ground_truth():
    source = np.zeros((64, 64), bool)
    source[5:10, 5:10] = True
    sal = blob_saliency(np.random.default_rng(0))
    scene = np.zeros((64, 64), bool)
    scene[50:60, 50:60] = True
    m, used = choose_mask(source, sal, scene, dilate=2)
    assert used == "source"
    np.testing.assert_array_equal(m, ndimage.distance_transform_edt(~source) <= 2)
    m, used = choose_mask(None, sal, scene)
    assert used == "saliency" and m[20, 40] and not m[55, 55]
    m, used = choose_mask(None, None, scene, dilate=0)
    assert used == "ground_truth"
    np.testing.assert_array_equal(m, scene)
    # an empty saliency mask (no structure) falls through to the ground truth
    _, used = choose_mask(None, np.ones((64, 64)), scene)
    assert used == "ground_truth"


def test_choose_mask_raises_when_nothing_usable():
    with pytest.raises(ValueError, match="no diagnostic mask"):
        choose_mask(None, None, None)
    with pytest.raises(ValueError, match="empty diagnostic mask"):
        choose_mask(None, np.ones((16, 16)), None)
