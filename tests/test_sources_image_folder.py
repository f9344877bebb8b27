"""The image-folder source: images listed by a metadata CSV or JSONL file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advbench.config import ConfigError
from advbench.sources.base import SourceError
from advbench.sources.metadata import seeded_split
from tests.conftest import load_all, make_test_source


def _source(root: Path, **extra):
    return make_test_source({"kind": "image-folder", "root": str(root), **extra})


def _save(array: np.ndarray, path: Path, **kwargs) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path, **kwargs)
    return path.read_bytes()


def _write_csv(root: Path, rows: list[dict], name: str = "metadata.csv") -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (root / name).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


RGB = np.dstack([np.full((12, 16), 200), np.tile(np.arange(16) * 10, (12, 1)),
                 np.full((12, 16), 30)])


def test_colour_images_stay_colour_and_keep_their_bytes(tmp_path):
    png = _save(RGB, tmp_path / "a" / "colour.png")
    jpg = _save(RGB, tmp_path / "b.jpg", quality=95)
    tif = _save(RGB, tmp_path / "c.tiff")
    _write_csv(tmp_path, [
        {"id": "p", "path": "a/colour.png", "findings": "f", "modality": "fundus"},
        {"id": "j", "path": "b.jpg", "findings": "f", "modality": "DERMOSCOPY"},
        {"id": "t", "path": "c.tiff", "findings": "f", "modality": "SM"},
    ])
    _, loaded, rejected = load_all(_source(tmp_path))
    assert not rejected
    assert loaded["p"].image_bytes == png and loaded["j"].image_bytes == jpg
    assert loaded["t"].image_bytes == tif
    for study in loaded.values():
        assert _decode(study.image_bytes).mode == "RGB"
        assert (study.width, study.height) == (16, 12)
    assert [loaded[k].modality for k in "pjt"] == ["OP", "DMS", "SM"]
    as_png = load_all(_source(tmp_path, image={"format": "png"}))[1]["j"]
    assert _decode(as_png.image_bytes).mode == "RGB"


def test_missing_corrupt_and_unsupported_images_are_rejected_naming_the_file(tmp_path):
    _save(RGB, tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(_save(RGB, tmp_path / "tmp.png")[:60])
    _write_csv(tmp_path, [
        {"id": "ok", "path": "ok.png", "findings": "f"},
        {"id": "gone", "path": "gone.png", "findings": "f"},
        {"id": "broken", "path": "broken.png", "findings": "f"},
        {"id": "anim", "path": "anim.gif", "findings": "f"},
    ])
    plan, loaded, rejected = load_all(_source(tmp_path))
    assert list(loaded) == ["ok"]
    assert rejected["gone"].reason == "missing_image" and "gone.png" in rejected["gone"].message
    assert rejected["broken"].reason == "unreadable_image"
    assert "broken.png" in rejected["broken"].message
    assert [(o.id, o.reason) for o in plan.rejected] == [("anim", "unsupported_format")]


def test_images_not_in_the_metadata_are_ignored(tmp_path):
    for name in ("listed.png", "other.png", "deep/also.png"):
        _save(RGB, tmp_path / name)
    _write_csv(tmp_path, [{"id": "listed", "path": "listed.png", "findings": "f"}])
    plan, loaded, _ = load_all(_source(tmp_path))
    assert list(loaded) == ["listed"] and not plan.rejected


def test_jsonl_metadata_reads_like_csv_and_keeps_extra_columns(tmp_path):
    _save(RGB[..., 0], tmp_path / "g.png")
    row = {"path": "g.png", "findings": "Small cyst.", "modality": "US", "body_part": "Liver",
           "size_mm": 12, "side": "right", "split": "test"}
    (tmp_path / "meta.jsonl").write_text(json.dumps(row) + "\n\n")
    (study,) = load_all(_source(tmp_path, metadata=str(tmp_path / "meta.jsonl")))[1].values()
    assert study.id.startswith("img-") and study.report == "Small cyst."
    assert (study.modality, study.body_part, study.split) == ("US", "liver", "test")
    assert study.extra["metadata"] == {"size_mm": "12", "side": "right"}
    assert _decode(study.image_bytes).mode == "L"


def test_metadata_splits_unknown_splits_duplicates_and_seeded_splits(tmp_path):
    _save(RGB, tmp_path / "x.png")
    _write_csv(tmp_path, [
        {"id": "a", "path": "x.png", "findings": "f", "split": "train"},
        {"id": "b", "path": "x.png", "findings": "f", "split": "validate"},
        {"id": "c", "path": "x.png", "findings": "f", "split": "holdout"},
        {"id": "a", "path": "x.png", "findings": "f", "split": "test"},
        {"id": "d", "path": "x.png", "findings": "f", "split": ""},
    ])
    fractions = {"train": 0.3, "validation": 0.3, "test": 0.4}
    plan = _source(tmp_path, split_fractions=fractions).plan()
    splits = {r.id: r.split for r in plan.refs}
    assert splits == {"a": "train", "b": "validation",
                      "d": seeded_split("d", 0, fractions)}
    assert {o.reason for o in plan.rejected} == {"unknown_split", "duplicate_id"}
    assert "holdout" in next(o.message for o in plan.rejected if o.reason == "unknown_split")
    default = _source(tmp_path).plan()
    assert {r.id: r.split for r in default.refs}["d"] == "test"  # default: all test


def test_seeded_split_depends_on_seed_and_id_only():
    fractions = {"train": 0.6, "validation": 0.2, "test": 0.2}
    ids = [f"s{k}" for k in range(300)]
    first = [seeded_split(i, 3, fractions) for i in ids]
    assert first == [seeded_split(i, 3, fractions) for i in ids]
    assert first != [seeded_split(i, 4, fractions) for i in ids]
    assert 140 <= first.count("train") <= 220 and first.count("validation") > 30


def test_findings_are_required_unless_configured(tmp_path):
    _save(RGB, tmp_path / "x.png")
    _write_csv(tmp_path, [{"id": "a", "path": "x.png", "findings": "  "}])
    _, _, rejected = load_all(_source(tmp_path))
    assert rejected["a"].reason == "no_findings" and "x.png" in rejected["a"].message
    _, loaded, _ = load_all(_source(tmp_path, require_findings=False))
    assert loaded["a"].report == ""


def test_masks_good_missing_wrong_size_and_resized_with_the_image(tmp_path):
    _save(RGB, tmp_path / "x.png")
    region = np.zeros((12, 16))
    region[3:9, 4:12] = 255
    _save(region, tmp_path / "m" / "good.png")
    _save(region.T, tmp_path / "m" / "turned.png")
    _write_csv(tmp_path, [
        {"id": "good", "path": "x.png", "findings": "f", "mask": "m/good.png"},
        {"id": "gone", "path": "x.png", "findings": "f", "mask": "m/gone.png"},
        {"id": "turned", "path": "x.png", "findings": "f", "mask": "m/turned.png"},
        {"id": "none", "path": "x.png", "findings": "f"},
    ])
    _, loaded, rejected = load_all(_source(tmp_path))
    mask = np.asarray(_decode(loaded["good"].mask_bytes))
    assert mask.shape == (12, 16) and set(np.unique(mask)) == {0, 255}
    assert (mask == region).all() and loaded["none"].mask_bytes is None
    assert rejected["gone"].reason == "missing_mask" and "gone.png" in rejected["gone"].message
    assert rejected["turned"].reason == "mask_size_mismatch"
    assert "turned.png" in rejected["turned"].message

    _, loaded, _ = load_all(_source(tmp_path, image={"max_side": 8}))
    small = np.asarray(_decode(loaded["good"].mask_bytes))
    assert (loaded["good"].width, loaded["good"].height) == (8, 6) and small.shape == (6, 8)
    assert small[1:4, 2:6].min() == 255 and small[0].max() == 0 and small[4:].max() == 0


def test_missing_root_metadata_or_columns_raise_source_error(tmp_path):
    with pytest.raises(SourceError, match="absent"):
        _source(tmp_path / "absent").plan()
    with pytest.raises(SourceError, match="no metadata.csv or metadata.jsonl in"):
        _source(tmp_path).plan()
    with pytest.raises(SourceError, match="other.csv"):
        _source(tmp_path, metadata="other.csv").plan()
    _write_csv(tmp_path, [{"file": "x.png", "findings": "f"}])
    with pytest.raises(SourceError, match="lacks columns: path"):
        _source(tmp_path).plan()


def test_limit_and_split_selection(tmp_path):
    _save(RGB, tmp_path / "x.png")
    _write_csv(tmp_path, [{"id": f"s{k}", "path": "x.png", "findings": "f",
                           "split": "train" if k % 2 else "test"} for k in range(6)])
    plan = _source(tmp_path, splits=["test"], limit=2).plan()
    assert [r.id for r in plan.refs] == ["s0", "s2"]
    assert sorted(o.reason for o in plan.rejected) == ["beyond_limit"] + [
        "split_not_selected"] * 3


def test_bad_config_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        _source(tmp_path, split_fractions={"dev": 1.0})
    with pytest.raises(ConfigError, match="unknown key"):
        _source(tmp_path, colour=True)
