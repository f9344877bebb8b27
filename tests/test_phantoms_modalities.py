"""Multi-modality demo data: synthetic phantoms and the folders the dicom and image-folder
sources read."""

from __future__ import annotations

import csv
import io
import re

import numpy as np
import pytest
from PIL import Image

from advbench.config import parse_config
from advbench.phantoms.modalities import PHANTOMS, generate_case, vocabulary, write_modality_demo
from advbench.pipeline import make_source
from advbench.records import InputRejected


@pytest.mark.parametrize("name", PHANTOMS)
def test_phantoms_are_deterministic_for_a_seed(name):
    a, b = generate_case(name, 3, seed=11), generate_case(name, 3, seed=11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.findings == b.findings and a.attributes == b.attributes
    other = generate_case(name, 3, seed=12)
    assert not np.array_equal(a.image, other.image)


@pytest.mark.parametrize("name", PHANTOMS)
def test_every_kind_appears_and_the_text_states_the_attributes(name):
    spec = vocabulary()[name]
    cases = [generate_case(name, i, seed=0) for i in range(len(spec["kinds"]))]
    assert {c.attributes["kind"] for c in cases} == set(spec["kinds"])
    for case in cases:
        assert case.image.dtype == np.uint8 and case.mask.shape == case.image.shape[:2]
        assert case.mask.any() and case.modality == spec["modality"]
        assert "{" not in case.findings and case.attributes["severity"] in case.findings
        if case.attributes["present"]:
            assert f"{case.attributes['size_mm']} mm" in case.findings
            assert all(f" {word}" in case.findings for word in case.attributes["location"].split())
        if case.attributes.get("side"):
            assert case.attributes["side"] in case.findings
    assert (cases[0].image.ndim == 3) == (name == "dermoscopy")  # dermoscopy is colour


@pytest.mark.parametrize("name", ["ultrasound", "mammography"])
def test_a_finding_mask_is_smaller_than_the_organ_mask_of_a_normal_case(name):
    spec = vocabulary()[name]
    cases = [generate_case(name, i, seed=0) for i in range(len(spec["kinds"]))]
    normal = next(c for c in cases if not c.attributes["present"])
    assert "No " in normal.findings
    for case in cases:
        if case.attributes["present"]:
            assert 0 < case.mask.sum() < normal.mask.sum() / 5


def test_mammography_laterality_puts_the_chest_wall_on_its_side():
    for index in range(8):
        case = generate_case("mammography", index, seed=0)
        columns = (case.image > 20).mean(axis=0)  # share of tissue per image column
        wall = "left" if columns[:20].mean() > columns[-20:].mean() else "right"
        assert wall == case.attributes["side"]
        assert re.search(rf"\b{case.attributes['side'].title()} mediolateral", case.findings)


def test_ultrasound_lesion_is_darker_or_brighter_than_the_liver_as_its_kind_says():
    for index in range(4):
        case = generate_case("ultrasound", index, seed=0)
        kind = case.attributes["kind"]
        if kind == "none":
            continue
        lesion = case.image[case.mask].mean()
        box = np.zeros_like(case.mask)
        ys, xs = np.nonzero(case.mask)
        box[max(ys.min() - 12, 0):ys.max() + 12, max(xs.min() - 12, 0):xs.max() + 12] = True
        around = case.image[box & ~case.mask & (case.image > 0)].mean()
        assert abs(lesion - around) > 20 and (lesion > around) == (kind == "hemangioma"), kind


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("modality-demo")
    return root, write_modality_demo(root, seed=0, per_modality=4)


def _load_all(kind: str, root):
    cfg = parse_config({"name": "t", "version": "1.0.0", "output": "out",
                        "sources": [{"kind": kind, "root": str(root)}]})
    source = make_source(cfg, 0)
    plan = source.plan()
    loaded, rejected = [], []
    for ref in plan.refs:
        try:
            loaded.append(source.load(ref))
        except InputRejected as exc:
            rejected.append(exc)
    return plan, loaded, rejected


def test_demo_writer_summary_lists_seven_modalities(demo):
    root, summary = demo
    assert set(summary["modalities"]) == {"CT", "MR", "US", "DMS", "MG", "OP", "SM"}
    assert summary["dicom"]["studies"] == 2 and summary["images"]["studies"] == 2 + 3 * 4
    with (root / "images" / "metadata.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "test"}


@pytest.mark.parametrize(("kind", "folder", "modalities"), [
    ("dicom", "dicom", {"CT", "MR"}),
    ("image-folder", "images", {"US", "DMS", "MG", "OP", "SM"}),
])
def test_demo_folders_load_through_the_sources_with_every_study_accepted(demo, kind, folder,
                                                                         modalities):
    root, _ = demo
    plan, loaded, rejected = _load_all(kind, root / folder)
    assert not plan.rejected and not rejected
    assert {s.modality for s in loaded} == modalities
    for study in loaded:
        assert study.report.strip() and study.body_part != "unknown"
        mask = np.asarray(Image.open(io.BytesIO(study.mask_bytes)))
        assert mask.shape == (study.height, study.width)
        assert set(np.unique(mask)) == {0, 255}


def test_demo_dicom_masks_cover_the_structures_the_findings_name(demo):
    root, _ = demo
    _, loaded, _ = _load_all("dicom", root / "dicom")
    ct = next(s for s in loaded if s.modality == "CT")
    image = np.asarray(Image.open(io.BytesIO(ct.image_bytes)))
    mask = np.asarray(Image.open(io.BytesIO(ct.mask_bytes))) > 0
    assert "vertebra" in ct.report and ct.body_part == "chest"
    assert image[mask].mean() > image[~mask].mean() + 40  # bone is bright in any window
