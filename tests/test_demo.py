"""The embedded demo path: phantoms in the MIMIC layout → the real ingest → a loadable release."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from advbench.concepts.vocabulary import CONCEPTS
from advbench.config import parse_config
from advbench.demo import demo_config, write_phantoms
from advbench.pipeline import build_release, make_source
from advbench.sources.base import PHANTOM_MARKER


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "phantoms"
    write_phantoms(root, 16, seed=3, size=128)
    return root


def test_demo_release_through_the_flow_loads(prefect_harness, phantom_root, tmp_path):
    from datasets import load_dataset
    from PIL import Image

    from flows.build import build_flow

    cfg = demo_config(phantom_root, tmp_path / "releases", models=False)  # no demo training
    summary = build_flow(cfg)
    assert summary.counts["inputs"] == 32  # 16 PA + 16 lateral images
    assert summary.counts["accepted"] == 16
    assert {r["reason"] for r in summary.reasons} == {"view_not_selected"}
    manifest = json.loads((summary.path / "manifest.json").read_text())
    assert manifest["credentialed"] is False
    assert "synthetic" in manifest["sources"][0]["license"]

    rows = []
    for split in summary.splits:
        ds = load_dataset(str(summary.path), "clean", split=split)
        rows.extend(ds)
    assert len(rows) == 16
    for row in rows:
        assert isinstance(row["image"], Image.Image) and row["image"].size == (128, 128)
        row["image"].load()
        scene = json.loads(row["scene"])
        # The report was written from the scene: the extractor must read back what it says.
        for c in CONCEPTS:
            assert row[f"concept_{c}"] == scene["report_concepts"][c], (row["id"], c)


def test_phantom_source_makes_the_same_studies_as_the_layout(phantom_root):
    from advbench.sources.base import SOURCES  # noqa: F401

    mimic = make_source(demo_config(phantom_root, phantom_root.parent / "r", models=False), 0)
    cfg = parse_config({"name": "p", "version": "1.0.0", "seed": 3, "output": "o",
                        "sources": [{"kind": "phantom-cxr", "studies": 16, "size": 128}]})
    phantom = make_source(cfg, 0)
    from_layout = {r.id: r for r in mimic.plan().refs}
    in_memory = {r.id: r for r in phantom.plan().refs}
    assert from_layout.keys() == in_memory.keys()
    pixels = []
    for ref_id in list(in_memory)[:4]:
        a, b = mimic.load(from_layout[ref_id]), phantom.load(in_memory[ref_id])
        assert a.report == b.report and a.split == b.split
        assert (a.subject_id, a.study_id, a.image_path) == (b.subject_id, b.study_id, b.image_path)
        assert a.scene == b.scene
        # the same image: the JPEG read from the layout is the one made in memory
        assert a.image_bytes == b.image_bytes
        assert (a.width, a.height) == (b.width, b.height) == (128, 128)
        pixels.append(np.asarray(Image.open(io.BytesIO(a.image_bytes))))
        assert np.array_equal(pixels[-1], np.asarray(Image.open(io.BytesIO(b.image_bytes))))
    # the comparison can fail: different studies have different images
    assert all(not np.array_equal(pixels[0], p) for p in pixels[1:])
    assert phantom.license_info().credentialed is False


def test_phantom_source_builds_without_prefect(tmp_path):
    cfg = parse_config({"name": "p", "version": "1.0.0", "seed": 1, "output": str(tmp_path),
                        "shard_size": 4,
                        "sources": [{"kind": "phantom-cxr", "studies": 10, "size": 96,
                                     "splits": ["train"]}]})
    summary = build_release(cfg)
    c = summary.counts
    assert c["inputs"] == 10 and c["failed"] == 0
    assert c["accepted"] + c["rejected"] == 10
    assert {r["reason"] for r in summary.reasons} <= {"split_not_selected"}
    assert list(summary.splits) == ["train"]


@pytest.fixture(scope="module")
def modality_root(tmp_path_factory):
    import advbench.demo as demo

    root = tmp_path_factory.mktemp("demo-modalities") / "modalities"
    saved = demo.DEMO_PER_MODALITY
    demo.DEMO_PER_MODALITY = 2
    try:
        demo.ensure_modalities(root)
    finally:
        demo.DEMO_PER_MODALITY = saved
    return root


def test_ensure_modalities_reuses_matching_data_and_rewrites_otherwise(modality_root,
                                                                        monkeypatch):
    import advbench.demo as demo

    monkeypatch.setattr(demo, "DEMO_PER_MODALITY", 2)
    stamp = (modality_root / "images" / "metadata.csv").stat().st_mtime_ns
    demo.ensure_modalities(modality_root)
    assert (modality_root / "images" / "metadata.csv").stat().st_mtime_ns == stamp
    (modality_root / "images" / "stray.txt").write_text("x")
    marker = modality_root / PHANTOM_MARKER
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "seed": 99}))  # another seed: not ours any more
    demo.ensure_modalities(modality_root)
    assert not (modality_root / "images" / "stray.txt").exists()
    assert json.loads(marker.read_text()) == data


def test_demo_config_reads_all_eight_modalities_through_the_real_sources(
        phantom_root, modality_root, tmp_path):
    cfg = demo_config(phantom_root, tmp_path / "releases", modalities=modality_root,
                      models=False)
    assert [s.kind for s in cfg.sources] == ["mimic-cxr-jpg", "dicom", "image-folder"]
    assert [a.kind for a in cfg.attacks] == ["corpa"]  # no surrogates without models
    from datasets import load_dataset

    summary = build_release(cfg)
    assert summary.counts["failed"] == 0
    rows = [r for split in summary.splits
            for r in load_dataset(str(summary.path), "clean", split=split)]
    assert {r["modality"] for r in rows} == {"XR", "CT", "MR", "OP", "SM", "US", "DMS", "MG"}
    for r in rows:  # the sources' masks travel in the clean config; the chest phantoms have none
        if r["modality"] == "XR":
            assert r["mask"] is None
        else:
            assert r["mask"].size == r["image"].size, r["id"]
            m = np.asarray(r["mask"])
            assert 0 < (m > 0).mean() < 1, r["id"]
    manifest = json.loads((summary.path / "manifest.json").read_text())
    licenses = [s["license"] for s in manifest["sources"]]
    assert "pydicom" in licenses[1] and "scikit-image" in licenses[2]


def test_demo_config_points_the_medfocusleak_models_at_the_demo_clip_cache(
        phantom_root, modality_root, tmp_path, monkeypatch):
    """Paths are filled before any training (the config is parsed, nothing is trained)."""
    from advbench.models.demo_clip import clip_folder, gallery_folder

    monkeypatch.setenv("ADVBENCH_CACHE", str(tmp_path / "cache"))
    cfg = demo_config(phantom_root, tmp_path / "releases", modalities=modality_root)
    mfl = next(a for a in cfg.attacks if a.kind == "medfocusleak")
    assert [s.model for s in mfl.surrogates] == ["demo-clip-vit", "demo-clip-resnet"]
    for s in mfl.surrogates:
        assert s.pretrained.startswith(str(clip_folder(s.model)))
        assert s.model_config_file == clip_folder(s.model) / f"{s.model}.json"
    judge = clip_folder("demo-clip-judge")
    assert mfl.similarity_model.pretrained.startswith(str(judge))
    assert {v.kind for v in mfl.victims} == {"open-clip", "retrieval"}
    retrieval = next(v for v in mfl.victims if v.kind == "retrieval")
    assert retrieval.gallery == gallery_folder("demo-clip-judge")
    assert not judge.exists()  # nothing was trained
