"""Phantom rendering: deterministic, anatomy kept under edits, findings where they belong."""

from __future__ import annotations

import numpy as np
import pytest

from advbench.phantoms import (
    FINDING_KINDS,
    Finding,
    Scene,
    geometry,
    render,
    render_lateral,
    sample_anatomy,
)
from advbench.phantoms import rendering as R

SIZE = 256


@pytest.fixture(scope="module")
def base() -> Scene:
    return Scene(sample_anatomy(np.random.default_rng(2024)))


def _img(scene: Scene) -> np.ndarray:
    return render(scene, SIZE).astype(np.int16)


def _rows(y0: float, y1: float) -> slice:
    return slice(int(y0 * SIZE), int(y1 * SIZE))


def _lung_cols(scene: Scene, side: str, s0: float, s1: float, v: float) -> slice:
    """Columns at lateral shares s0..s1 of one lung at height v (image fractions)."""
    geo = geometry(scene)
    med, lat = float(geo.medial(side, v)), float(geo.lateral(side, v))
    xs = [0.5 + (-1 if side == "right" else 1) * (med + s * (lat - med)) for s in (s0, s1)]
    lo, hi = sorted(xs)
    return slice(int(lo * SIZE), int(hi * SIZE))


def test_render_is_deterministic_and_uint8(base):
    scene = base.add(Finding("consolidation", side="left", zone="mid", seed=3))
    a = render(scene, SIZE)
    R._CACHE.clear()  # a cold render (no cached anatomy) gives the same pixels
    b = render(scene, SIZE)
    assert a.dtype == np.uint8 and a.shape == (SIZE, SIZE)
    assert np.array_equal(a, b)
    assert 30 < a.mean() < 200 and a.std() > 25


def test_renders_at_other_sizes():
    scene = Scene(sample_anatomy(np.random.default_rng(1)),
                  (Finding("pleural_effusion", side="bilateral", size="large", seed=1),))
    for size in (64, 128, 300):
        assert render(scene, size).shape == (size, size)


def test_adding_a_finding_changes_only_its_region_and_removing_it_restores(base):
    clean = _img(base)
    edited = base.add(Finding("pleural_effusion", side="right", size="moderate", seed=11))
    after = _img(edited)
    changed = np.argwhere(after != clean)
    assert len(changed) > 500
    # Everything changed lies in the lower right hemithorax (image left, lower part).
    assert changed[:, 1].max() < SIZE * 0.5
    assert changed[:, 0].min() > SIZE * 0.4
    # Pixels far from the effusion are bit-identical: the whole left lung, the upper chest.
    assert np.array_equal(after[:, SIZE // 2:], clean[:, SIZE // 2:])
    assert np.array_equal(after[: int(SIZE * 0.4)], clean[: int(SIZE * 0.4)])
    assert np.array_equal(_img(edited.without("pleural_effusion")), clean)


def test_edit_keeps_anatomy_for_every_kind_far_from_the_finding(base):
    clean = _img(base)
    top = slice(0, int(SIZE * 0.06))  # above the shoulders: nothing clinical is drawn there
    for kind in FINDING_KINDS:
        scene = base.add(Finding(kind, side="left", zone="lower", seed=5))
        img = _img(scene)
        assert np.array_equal(img[top], clean[top]), kind
        assert not np.array_equal(img, clean), f"{kind} changed nothing"


def test_effusion_brightens_the_lower_zone_of_its_side_only(base):
    clean = _img(base)
    geo = geometry(base)
    dome = geo.sides["left"].dome_top
    img = _img(base.add(Finding("pleural_effusion", side="left", size="moderate", seed=2)))
    rows = _rows(dome - 0.035, dome - 0.005)  # just above the dome: lung before, fluid after
    cols = _lung_cols(base, "left", 0.3, 0.9, dome - 0.02)
    assert img[rows, cols].mean() > clean[rows, cols].mean() + 25
    right = _lung_cols(base, "right", 0.3, 0.9, dome - 0.02)
    assert np.array_equal(img[rows, right], clean[rows, right])
    # The meniscus: fluid climbs the lateral wall higher than it reaches medially.
    diff = img.astype(int) - clean
    v = dome - 0.08
    lateral = diff[_rows(v - 0.01, v + 0.01), _lung_cols(base, "left", 0.85, 0.95, v)].mean()
    medial = diff[_rows(v - 0.01, v + 0.01), _lung_cols(base, "left", 0.1, 0.3, v)].mean()
    assert lateral > medial + 5


def _fluid_top(diff: np.ndarray, scene: Scene, side: str, s: float, v: float) -> float | None:
    """Highest row (image fraction) the effusion brightens, in the column at lateral share s
    of the lung at height v; None when the column is untouched."""
    geo = geometry(scene)
    med, lat = float(geo.medial(side, v)), float(geo.lateral(side, v))
    col = int((0.5 + (-1 if side == "right" else 1) * (med + s * (lat - med))) * SIZE)
    rows = np.nonzero(diff[:, col] > 30)[0]
    return rows.min() / SIZE if len(rows) else None


def test_small_effusion_blunts_the_costophrenic_angle_only(base):
    clean = _img(base)
    diff = _img(base.add(Finding("pleural_effusion", side="right", size="small", seed=3))) - clean
    sd = geometry(base).sides["right"]
    v = sd.cp - 0.03  # just above the lateral costophrenic angle
    rows = _rows(v - 0.01, v + 0.01)
    assert diff[rows, _lung_cols(base, "right", 0.8, 1.0, v)].mean() > 60  # liver-dense
    # The medial dome stays clear: a small effusion fills only the lateral angle.
    v = sd.dome_top - 0.05
    assert _fluid_top(diff, base, "right", 0.2, v) is None
    assert _fluid_top(diff, base, "right", 0.9, v) is not None


def test_effusion_meniscus_is_concave_up_and_grows_with_size(base):
    clean = _img(base)
    v = geometry(base).sides["right"].dome_top - 0.05
    tops = {}
    for size in ("moderate", "large"):
        diff = _img(base.add(Finding("pleural_effusion", side="right", size=size, seed=3)))
        tops[size] = [_fluid_top(diff - clean, base, "right", s, v) for s in (0.2, 0.5, 0.8)]
    t = tops["moderate"]
    # Higher laterally, and climbing ever more steeply towards the chest wall.
    assert t[0] > t[1] > t[2]
    assert t[1] - t[2] > 1.8 * (t[0] - t[1])
    assert all(lg < md - 0.05 for lg, md in zip(tops["large"], t, strict=True))


def test_pneumothorax_darkens_the_lateral_lung_and_removes_markings(base):
    clean = _img(base)
    scene = base.add(Finding("pneumothorax", side="right", zone="upper", size="large", seed=4))
    img = _img(scene)
    geo = geometry(base)
    v = geo.sides["right"].apex + 0.2
    rows = _rows(v - 0.03, v + 0.03)
    cols = _lung_cols(base, "right", 0.8, 0.92, v)
    assert img[rows, cols].mean() < clean[rows, cols].mean() - 4
    # No markings there: hiding the vessel/texture layer changes nothing beyond the line,
    # while it does change the same place without the pneumothorax.
    lay = R._layers(base.anatomy, SIZE)
    with_marks = (R.density(base, SIZE)[rows, cols], R.density(scene, SIZE)[rows, cols])
    saved = lay.markings
    try:
        lay.markings = np.zeros_like(saved)
        without = (R.density(base, SIZE)[rows, cols], R.density(scene, SIZE)[rows, cols])
    finally:
        lay.markings = saved
    assert np.abs(with_marks[0] - without[0]).max() > 0.02
    assert np.abs(with_marks[1] - without[1]).max() < 1e-6
    # The other lung is untouched.
    left = _lung_cols(base, "left", 0.1, 0.9, v)
    assert np.array_equal(img[rows, left], clean[rows, left])


def test_pneumothorax_shows_a_thin_bright_pleural_line(base):
    scene = base.add(Finding("pneumothorax", side="left", size="moderate", seed=9))
    d_clean = R.density(base, SIZE)
    d = R.density(scene, SIZE) - d_clean
    # Along a row through the upper lung, moving out from the midline: the density change is
    # a positive spike (the line) followed, laterally, by a negative band (the air).
    geo = geometry(base)
    v = geo.sides["left"].apex + 0.22
    row = d[int(v * SIZE), SIZE // 2:]
    peak = int(np.nonzero(row > 0.1)[0].max())  # the outermost spike is the lung edge
    assert row[peak + 3: peak + 12].mean() < -0.05


def test_pneumothorax_gap_is_widest_at_the_apex(base):
    scene = base.add(Finding("pneumothorax", side="right", size="moderate", seed=9))
    d = R.density(scene, SIZE) - R.density(base, SIZE)
    sd = geometry(base).sides["right"]
    h = sd.dome_top - sd.apex

    def gap(t: float) -> int:  # lucent pixels along a row through the right lung
        return int((d[int((sd.apex + t * h) * SIZE), : SIZE // 2] < -0.05).sum())

    assert gap(0.25) > 3 * gap(0.8) > 0


@pytest.mark.parametrize("kind", ["consolidation", "patchy_opacity", "nodule", "mass"])
def test_parenchymal_findings_brighten_their_lung_zone(base, kind):
    clean = _img(base)
    finding = Finding(kind, side="right", zone="mid", size="large", seed=8,
                      params={"count": 1, "diameter_mm": 25, "diameter_cm": 6.0})
    img = _img(base.add(finding))
    geo = geometry(base)
    v0, v1 = geo.zone_rows("right", "mid")
    diff = img.astype(int) - clean
    zone = diff[_rows(v0 - 0.08, v1 + 0.08), : SIZE // 2]
    assert zone.clip(0).sum() > 0.75 * np.abs(diff).sum()
    assert (zone > 20).sum() > {"nodule": 10}.get(kind, 60)
    assert np.array_equal(img[:, SIZE // 2 + 8:], clean[:, SIZE // 2 + 8:])


def test_consolidation_has_dark_air_bronchograms_inside(base):
    scene = base.add(Finding("consolidation", side="right", zone="lower", size="large",
                             seed=12))
    d = R.density(scene, SIZE) - R.density(base, SIZE)
    inside = d[d > 0.3]
    # Inside the dense region some pixels stay markedly less dense: the bronchi.
    assert inside.size > 300
    assert np.percentile(inside, 5) < np.percentile(inside, 60) - 0.1


def test_cardiomegaly_widens_the_heart(base):
    big = base.add(Finding("cardiomegaly", size="large", seed=1))
    g0, g1 = geometry(base), geometry(big)
    assert g1.ctr > g0.ctr and g1.heart.left > g0.heart.left
    v = (g0.heart.top + g0.heart.center) / 2 + 0.08
    row0, row1 = _img(base)[int(v * SIZE)], _img(big)[int(v * SIZE)]
    assert (row1 > 170).sum() > (row0 > 170).sum() + 0.04 * SIZE


def test_diaphragm_flattening_lowers_the_domes(base):
    flat = base.add(Finding("diaphragm_flattening", side="bilateral", size="large", seed=1))
    g0, g1 = geometry(base), geometry(flat)
    for side in ("right", "left"):
        assert g1.sides[side].dome_top > g0.sides[side].dome_top + 0.05
    # Where there was liver under the right dome there is now dark lung.
    v = g0.sides["right"].dome_top + 0.03
    cols = _lung_cols(base, "right", 0.3, 0.6, v)
    rows = _rows(v - 0.005, v + 0.015)
    assert _img(flat)[rows, cols].mean() < _img(base)[rows, cols].mean() - 30


def test_hilar_findings_and_metastases_change_the_right_places(base):
    clean = _img(base)
    hilar = _img(base.add(Finding("hilar_enlargement", side="left", size="large", seed=2)))
    diff = hilar - clean
    hx, hy = geometry(base).hilum("left")
    ys, xs = np.nonzero(diff > 10)
    assert len(ys) > 20
    assert abs(xs.mean() / SIZE - hx) < 0.06 and abs(ys.mean() / SIZE - hy) < 0.08
    mets = _img(base.add(Finding("metastases", side="bilateral", size="large", seed=2,
                                 params={"count": 40, "max_mm": 14})))
    ys, xs = np.nonzero(mets - clean > 10)
    assert (xs < SIZE / 2).sum() > 20 and (xs > SIZE / 2).sum() > 20  # both lungs


def test_lateral_view_is_deterministic_and_shows_an_effusion(base):
    a = render_lateral(base, SIZE)
    assert a.shape == (SIZE, SIZE) and a.dtype == np.uint8
    assert np.array_equal(a, render_lateral(base, SIZE))
    wet = render_lateral(base.add(Finding("pleural_effusion", side="left", size="large")),
                         SIZE)
    assert wet.astype(int).sum() > a.astype(int).sum()
