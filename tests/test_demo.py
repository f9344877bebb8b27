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
