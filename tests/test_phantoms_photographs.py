"""CT, MR, fundus and histology phantoms (``phantoms.cross_section`` and ``phantoms.photographs``):
seeded, every kind, text stating the attributes, exact masks, visible laterality."""

from __future__ import annotations

import re

import numpy as np
import pytest

from advbench.phantoms import cross_section, photographs

GENERATORS = [(cross_section, "ct"), (cross_section, "mr"), (photographs, "fundus"),
              (photographs, "histology")]
IDS = [name for _, name in GENERATORS]
SIZE = 96  # small: fast, and the geometry is resolution independent
NORMAL = {"ct": "none", "mr": "none", "fundus": "none", "histology": "normal"}


def _cases(module, name, seed=0):
    kinds = module.vocabulary()[name]["kinds"]
    return [module.generate_case(name, i, seed=seed, size=SIZE) for i in range(len(kinds))]


@pytest.mark.parametrize(("module", "name"), GENERATORS, ids=IDS)
def test_phantoms_are_deterministic_for_a_seed(module, name):
    a = module.generate_case(name, 2, seed=11, size=SIZE)
    b = module.generate_case(name, 2, seed=11, size=SIZE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.findings == b.findings and a.attributes == b.attributes
    assert not np.array_equal(a.image, module.generate_case(name, 2, seed=12, size=SIZE).image)


@pytest.mark.parametrize(("module", "name"), GENERATORS, ids=IDS)
def test_every_kind_appears_and_the_text_states_the_attributes(module, name):
    spec = module.vocabulary()[name]
    cases = _cases(module, name)
    assert {c.attributes["kind"] for c in cases} == set(spec["kinds"])
    colour = name in ("fundus", "histology")
    for case in cases:
        assert case.image.dtype == np.uint8
        assert case.image.shape == ((SIZE, SIZE, 3) if colour else (SIZE, SIZE))
        assert case.mask.shape == (SIZE, SIZE) and case.mask.any()
        assert case.modality == spec["modality"] and case.body_part == spec["body_part"]
        assert "{" not in case.findings and case.attributes["severity"] in case.findings
        attrs = case.attributes
        if attrs.get("size_mm") is not None:
            assert f"{attrs['size_mm']} mm" in case.findings
        if attrs.get("side"):
            assert re.search(rf"\b{attrs['side']}\b", case.findings)
        if attrs.get("location"):
            assert all(re.search(rf"\b{w}\b", case.findings) for w in attrs["location"].split())
        if not attrs["present"]:
            assert re.search(r"\b(No|no|normal)\b", case.findings)
    assert (cases[0].image.ndim == 3) == colour


@pytest.mark.parametrize(("module", "name"), GENERATORS, ids=IDS)
def test_a_finding_changes_exactly_the_pixels_of_its_mask(module, name):
    """The same case rendered without its finding differs only inside the finding's mask."""
    for index in range(len(module.vocabulary()[name]["kinds"])):
        case = module.generate_case(name, index, seed=3, size=SIZE)
        if not case.attributes["present"]:
            continue
        clear = module.generate_case(name, index, seed=3, size=SIZE, kind=NORMAL[name])
        assert not clear.attributes["present"]
        diff = case.image != clear.image
        diff = diff.any(-1) if diff.ndim == 3 else diff
        assert diff.any(), case.attributes["kind"]
        assert not (diff & ~case.mask).any(), case.attributes["kind"]  # nothing outside the mask
        assert diff.sum() >= 0.5 * case.mask.sum(), case.attributes["kind"]  # and most of it


@pytest.mark.parametrize(("module", "name"), GENERATORS, ids=IDS)
def test_unknown_kinds_are_refused(module, name):
    with pytest.raises(ValueError, match="unknown"):
        module.generate_case(name, 0, seed=0, kind="nonsense")


def _centre_column(mask: np.ndarray) -> float:
    """Mean column of a mask, -1 (left edge) .. 1 (right edge)."""
    return float(np.nonzero(mask)[1].mean() / mask.shape[1] * 2 - 1)


def test_cross_section_laterality_is_radiological():
    """The patient's left is the image's right (CT renal masses, MR masses and infarcts)."""
    seen = set()
    for index in range(24):
        for name, kinds in (("ct", {"renal_mass"}), ("mr", {"mass", "infarct"})):
            case = cross_section.generate_case(name, index, seed=5, size=SIZE)
            if case.attributes["kind"] in kinds:
                side = "left" if _centre_column(case.mask) > 0 else "right"
                assert side == case.attributes["side"], case.findings
                seen.add((name, side))
    assert len(seen) >= 3


def test_fundus_disc_is_on_the_side_of_the_eye_and_grades_add_lesions():
    areas: dict[str, list[int]] = {}
    for index in range(15):
        case = photographs.generate_case("fundus", index, seed=1, size=128)
        bright = case.image.astype(float).sum(-1)
        disc_col = np.unravel_index(np.argmax(bright), bright.shape)[1]
        side = "right" if disc_col > 64 else "left"  # the right eye's disc is on image right
        assert side == case.attributes["side"]
        assert f"of the {side} eye" in case.findings
        if case.attributes["present"]:
            areas.setdefault(case.attributes["kind"], []).append(int(case.mask.sum()))
    assert np.mean(areas["mild"]) < np.mean(areas["moderate"]) < np.mean(areas["severe"])
    assert "Fazekas" in cross_section.generate_case("mr", 3, seed=0).findings


def test_histology_tumour_lies_where_the_text_says():
    for index in range(1, 8):
        case = photographs.generate_case("histology", index, seed=2, size=SIZE)
        if not case.attributes["present"]:
            continue
        ys, xs = np.nonzero(case.mask)
        vertical, horizontal = case.attributes["location"].split()
        assert (ys.mean() < SIZE / 2) == (vertical == "upper") or abs(ys.mean() - SIZE / 2) < 8
        assert (xs.mean() < SIZE / 2) == (horizontal == "left") or abs(xs.mean() - SIZE / 2) < 8
        assert f"grade {case.attributes['grade']}" in case.findings


@pytest.mark.parametrize(("module", "name"), GENERATORS, ids=IDS)
def test_medfocusleak_target_rules_can_edit_the_findings(module, name):
    """The texts use the words of the attack's target rules (laterality, grade, ...)."""
    from advbench.attacks.medfocusleak.targets import rule_targets

    for case in _cases(module, name):
        targets = rule_targets(case.findings, case.modality, 3, seed=0, max_edits=1)
        assert len(targets) == 3, (case.findings, targets.reason)
