"""The hf-dataset source on small local datasets (save_to_disk folders and Parquet files)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from advbench.sources.base import SourceError
from tests.conftest import load_all, make_test_source

FEATURES = Features({"uid": Value("string"), "image": Image(), "findings": Value("string"),
                     "mask": Image(), "modality": Value("string")})


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rows(prefix: str, count: int, **overrides) -> dict[str, list]:
    """``count`` rows of 10 x 14 images (colour), 0/255 masks and findings."""
    images = [_png(np.full((10, 14, 3), 40 * k)) for k in range(count)]
    region = np.zeros((10, 14))
    region[2:6, 3:9] = 255
    rows = {"uid": [f"{prefix}{k}" for k in range(count)],
            "image": [{"bytes": b, "path": None} for b in images],
            "findings": [f"finding {k}" for k in range(count)],
            "mask": [{"bytes": _png(region), "path": None} for _ in range(count)],
            "modality": ["fundus"] * count}
    rows.update(overrides)
    return rows


def _source(path: Path, **extra):
    return make_test_source({"kind": "hf-dataset", "path": str(path), **extra})


def test_saved_dataset_dict_loads_with_its_splits_bytes_and_masks(tmp_path):
    train, test = _rows("tr", 3), _rows("te", 2)
    DatasetDict({"train": Dataset.from_dict(train, features=FEATURES),
                 "test": Dataset.from_dict(test, features=FEATURES)}).save_to_disk(tmp_path / "d")
    plan, loaded, rejected = load_all(_source(
        tmp_path / "d", id_column="uid", mask_column="mask", modality_column="modality",
        body_part="eye"))
    assert not rejected and not plan.rejected
    assert {r.id: r.split for r in plan.refs} == {"tr0": "train", "tr1": "train", "tr2": "train",
                                                  "te0": "test", "te1": "test"}
    study = loaded["tr2"]
    assert study.image_bytes == train["image"][2]["bytes"]  # kept as stored, not re-encoded
    assert PILImage.open(io.BytesIO(study.image_bytes)).mode == "RGB"
    assert (study.report, study.modality, study.body_part) == ("finding 2", "OP", "eye")
    mask = np.asarray(PILImage.open(io.BytesIO(study.mask_bytes)))
    assert mask.shape == (10, 14) and mask[2:6, 3:9].min() == 255 and mask.sum() == 24 * 255


def test_parquet_folder_groups_files_into_splits_by_name(tmp_path):
    folder = tmp_path / "pq"
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict(_rows("a", 2), features=FEATURES).to_parquet(
        folder / "data" / "train-00000-of-00001.parquet")
    Dataset.from_dict(_rows("b", 1), features=FEATURES).to_parquet(
        folder / "data" / "validation-00000-of-00001.parquet")
    plan, loaded, rejected = load_all(_source(folder, id_column="uid", modality="OP",
                                              cache_dir=str(tmp_path / "cache")))
    assert not rejected
    assert {r.id: r.split for r in plan.refs} == {"a0": "train", "a1": "train",
                                                  "b0": "validation"}
    assert loaded["b0"].modality == "OP" and loaded["b0"].mask_bytes is None
    assert loaded["a1"].width == 14 and loaded["a1"].height == 10


def test_unsplit_dataset_uses_the_split_column_or_the_seeded_split(tmp_path):
    rows = _rows("u", 4, split=["train", "test", "", "dev"])
    Dataset.from_dict(rows).save_to_disk(tmp_path / "one")
    plan = _source(tmp_path / "one", id_column="uid", split_column="split",
                   split_fractions={"validation": 1.0}).plan()
    assert {r.id: r.split for r in plan.refs} == {"u0": "train", "u1": "test",
                                                  "u2": "validation"}
    assert [(o.id, o.reason) for o in plan.rejected] == [("u3", "unknown_split")]
    ids = [r.id for r in _source(tmp_path / "one").plan().refs]
    assert ids == ["unsplit-000000", "unsplit-000001", "unsplit-000002", "unsplit-000003"]


def test_bad_rows_are_rejected_with_reasons(tmp_path):
    small = {"bytes": _png(np.zeros((3, 3))), "path": None}
    rows = _rows("r", 4, findings=["ok", "", "ok", "ok"])
    rows["mask"][2] = small
    rows["image"][3] = {"bytes": b"\x89PNG\r\n\x1a\n broken", "path": None}
    Dataset.from_dict(rows, features=FEATURES).save_to_disk(tmp_path / "bad")
    _, loaded, rejected = load_all(_source(tmp_path / "bad", id_column="uid",
                                           mask_column="mask"))
    assert list(loaded) == ["r0"]
    assert {k: v.reason for k, v in rejected.items()} == {
        "r1": "no_findings", "r2": "mask_size_mismatch", "r3": "unreadable_image"}
    assert "row 3" in rejected["r3"].message


def test_image_paths_are_read_relative_to_the_dataset_folder(tmp_path):
    folder = tmp_path / "paths"
    folder.mkdir()
    (folder / "img.png").write_bytes(_png(np.full((5, 6), 9)))
    Dataset.from_dict({"file": ["img.png", "gone.png"], "text": ["a", "b"]}).save_to_disk(folder)
    _, loaded, rejected = load_all(_source(folder, image_column="file", text_column="text"))
    (study,) = loaded.values()
    assert study.image_bytes == (folder / "img.png").read_bytes()
    (exc,) = rejected.values()
    assert exc.reason == "missing_image" and "gone.png" in exc.message


def test_missing_folder_files_or_columns_raise_source_error(tmp_path):
    with pytest.raises(SourceError, match="absent"):
        _source(tmp_path / "absent").plan()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no save_to_disk dataset and no Parquet files"):
        _source(tmp_path / "empty").plan()
    Dataset.from_dict(_rows("c", 1), features=FEATURES).save_to_disk(tmp_path / "c")
    with pytest.raises(SourceError, match="lacks columns: report"):
        _source(tmp_path / "c", text_column="report").plan()
