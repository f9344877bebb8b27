"""A release built from the real MIMIC-CXR-JPG layout: counts reconcile, shards are sound,
and ``datasets.load_dataset`` reads it back without a loading script."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from advbench.concepts.vocabulary import CLASSES, CONCEPTS
from advbench.config import load_config
from advbench.pipeline import BuildError, build_release, plan_build
from advbench.release.shards import sha256_file
from tests.conftest import write_config

EXPECTED_REASONS = {
    ("rejected", "select", "view_not_selected"): 2,
    ("rejected", "select", "extra_image_of_study"): 1,
    ("rejected", "load", "missing_report"): 1,
    ("rejected", "load", "empty_report"): 1,
    ("rejected", "load", "unreadable_image"): 1,
    ("rejected", "load", "missing_image"): 1,
}


@pytest.fixture
def built(mimic_root, tmp_path):
    cfg = load_config(write_config(tmp_path / "build.yaml", mimic_root, tmp_path / "out"))
    seen = []
    summary = build_release(cfg, on_shard=seen.append)
    return cfg, summary, seen


def check_release(release: Path, summary) -> dict:
    """What every release must satisfy; shared with the Prefect and CLI tests."""
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["counts"] == {"inputs": 11, "accepted": 4, "rejected": 7, "failed": 0}
    got = {(r["status"], r["stage"], r["reason"]): r["count"] for r in manifest["reasons"]}
    assert got == EXPECTED_REASONS
    assert summary.counts == manifest["counts"]

    rejections = [json.loads(line) for line in (release / "rejections.jsonl").open()]
    assert len(rejections) == 7 and all(r["message"] for r in rejections)

    files = sorted(p.relative_to(release).as_posix() for p in release.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "data/clean/test-00000-of-00001.parquet",
        "data/clean/train-00000-of-00001.parquet",
        "data/clean/validation-00000-of-00001.parquet",
        "manifest.json", "rejections.jsonl",
    ]
    for shard in manifest["shards"]:
        assert sha256_file(release / shard["path"]) == shard["sha256"]
        assert pq.read_metadata(release / shard["path"]).num_rows == shard["rows"]
    assert sum(s["rows"] for s in manifest["shards"]) == 4
    assert manifest["package"]["name"] == "advbench"
    assert manifest["config"]["sources"][0]["kind"] == "mimic-cxr-jpg"
    assert manifest["credentialed"] is True
    assert not list(release.parent.glob(".*staging"))
    return manifest


def test_counts_reconcile_and_shards_are_checksummed(built):
    cfg, summary, seen = built
    check_release(cfg.release_dir(), summary)
    # shard_size 2: train and test plan 3 studies each (2 shards), validation 2 (1 shard);
    # shards left empty by rejections are dropped and the rest renumbered (see check_release).
    # shards finish in any order on the worker pool; the plan's order is split, then index
    order = sorted(seen, key=lambda r: (("train", "validation", "test").index(r.split), r.index))
    assert [r.rows() for r in order] == [2, 0, 1, 1, 0]
    assert summary.splits == {"train": 2, "validation": 1, "test": 1}


def test_load_dataset_returns_images_and_concepts(built):
    from datasets import load_dataset
    from PIL import Image

    cfg, _, _ = built
    ds = load_dataset(str(cfg.release_dir()), "clean", split="train")
    assert len(ds) == 2
    row = {r["id"]: r for r in ds}["d0001-pa"]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (64, 64)
    assert row["concept_consolidation"] == "positive"
    assert row["concept_pneumonitis"] == "positive"
    assert row["concept_effusion"] == "negative"
    assert row["concept_absent_lung_markings"] == "negative"
    assert row["concept_enlarged_heart"] == "negative"
    assert row["label_pneumonia"] == "positive" and "pneumonia" in row["positive_classes"]
    assert row["chexpert"]["pneumonia"] == 1.0
    assert row["image_path"] == "files/p10/p10000001/s50000001/d0001-pa.jpg"
    for c in CONCEPTS:
        assert row[f"concept_{c}"] in ("positive", "negative", "uncertain", "absent")
    for c in CLASSES:
        assert f"label_{c}" in row
    mention = row["mentions"][0]
    assert row["report"][mention["start"]:mention["end"]] == mention["text"]

    normal = load_dataset(str(cfg.release_dir()), "clean", split="validation")[0]
    assert normal["id"] == "d0008-pa"
    test = load_dataset(str(cfg.release_dir()), "clean", split="test")[0]
    assert test["concept_enlarged_heart"] == "positive" and test["concept_effusion"] == "positive"


def test_card_header_declares_configs_and_features(built):
    cfg, _, _ = built
    text = (cfg.release_dir() / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["configs"][0]["config_name"] == "clean"
    assert {d["split"] for d in header["configs"][0]["data_files"]} == {
        "train", "validation", "test"}
    info = header["dataset_info"]
    assert info["config_name"] == "clean"
    assert {"name": "image", "dtype": "image"} in info["features"]
    assert "Credentialed data" in text and "rejected 7" in text


def test_existing_release_is_kept_unless_overwrite(built):
    cfg, first, _ = built
    release = cfg.release_dir()

    def snapshot() -> dict[str, tuple[str, int]]:
        return {p.relative_to(release).as_posix(): (sha256_file(p), p.stat().st_mtime_ns)
                for p in sorted(release.rglob("*")) if p.is_file()}

    before = snapshot()
    with pytest.raises(BuildError, match="already exists"):
        build_release(cfg)
    assert snapshot() == before  # same files, same bytes, not even rewritten
    check_release(release, first)

    # Mark the old release so that a rebuild is visible even within the same second.
    (release / "stale.txt").write_text("left from the previous build")
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["created"] = "2000-01-01T00:00:00+00:00"
    (release / "manifest.json").write_text(json.dumps(manifest))
    summary = build_release(cfg, overwrite=True)
    assert summary.path == release
    rebuilt = check_release(release, summary)  # complete, and stale.txt is gone
    assert rebuilt["created"] != "2000-01-01T00:00:00+00:00"


def test_nothing_accepted_is_an_error_and_publishes_nothing(mimic_root, tmp_path):
    cfg = load_config(write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out",
                                   views=["LL"]))
    with pytest.raises(BuildError, match=r"nothing was accepted from 11 inputs"):
        build_release(cfg)
    assert not cfg.release_dir().exists()


def test_duplicate_ids_across_sources_are_rejected(mimic_root, tmp_path):
    path = write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out")
    data = yaml.safe_load(path.read_text())
    data["sources"].append(dict(data["sources"][0]))
    path.write_text(yaml.safe_dump(data))
    plan = plan_build(load_config(path))
    dup = [o for o in plan.selection if o.reason == "duplicate_id"]
    assert len(dup) == 8 and all(o.source_index == 1 for o in dup)
    assert plan.inputs == 22


def test_unexpected_error_fails_one_input_not_the_build(mimic_root, tmp_path, monkeypatch):
    import advbench.sources.mimic_cxr_jpg as mod

    real = mod.MimicCxrJpg.load

    def flaky(self, ref):
        if ref.id == "d0003-pa":
            raise RuntimeError("disk hiccup")
        return real(self, ref)

    monkeypatch.setattr(mod.MimicCxrJpg, "load", flaky)
    # threads: the patched loader lives in this process only (spawned workers import afresh)
    cfg = load_config(write_config(tmp_path / "b.yaml", mimic_root, tmp_path / "out",
                                   top={"runner": "threads"}))
    summary = build_release(cfg)
    assert summary.counts == {"inputs": 11, "accepted": 3, "rejected": 7, "failed": 1}
    failed = [json.loads(x) for x in (cfg.release_dir() / "rejections.jsonl").open()
              if '"failed"' in x]
    assert failed[0]["id"] == "d0003-pa" and "disk hiccup" in failed[0]["message"]
