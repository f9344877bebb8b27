"""The mimic-cxr-jpg source on a tiny folder in the real layout (see conftest.make_mimic_root)."""

from __future__ import annotations

import gzip
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from advbench.config import load_config
from advbench.pipeline import make_source
from advbench.sources.base import SourceError
from tests.conftest import load_all, make_mimic_root, make_test_source


def _source(root: Path, **extra):
    return make_test_source({"kind": "mimic-cxr-jpg", "root": str(root), **extra})


def test_selection_reasons(mimic_root):
    plan = _source(mimic_root).plan()
    assert [r.id for r in plan.refs] == [
        "d0001-pa", "d0002-pa", "d0003-pa", "d0004-pa", "d0005-pa", "d0006-pa", "d0007-pa",
        "d0008-pa",
    ]
    reasons = {o.id: o.reason for o in plan.rejected}
    assert reasons == {"d0001-lat": "view_not_selected", "d0002-pb": "extra_image_of_study",
                       "d0007-ap": "view_not_selected"}
    assert all(o.message for o in plan.rejected)
    assert {r.id: r.split for r in plan.refs}["d0005-pa"] == "validation"


def test_load_rejections_name_the_input(mimic_root):
    _, loaded, rejected = load_all(_source(mimic_root))
    assert sorted(loaded) == ["d0001-pa", "d0002-pa", "d0003-pa", "d0008-pa"]
    assert {k: v.reason for k, v in rejected.items()} == {
        "d0004-pa": "missing_report", "d0005-pa": "empty_report",
        "d0006-pa": "unreadable_image", "d0007-pa": "missing_image",
    }
    assert "s50000004" in rejected["d0004-pa"].message
    assert "d0006-pa.jpg" in rejected["d0006-pa"].message
    assert "d0007-pa.jpg" in rejected["d0007-pa"].message


def test_loaded_study_fields_and_chexpert_join(mimic_root):
    _, loaded, _ = load_all(_source(mimic_root))
    s = loaded["d0001-pa"]
    assert (s.subject_id, s.study_id, s.view_position, s.split) == ("10000001", "50000001",
                                                                    "PA", "train")
    assert s.image_path == "files/p10/p10000001/s50000001/d0001-pa.jpg"
    assert s.report_path.endswith("files/p10/p10000001/s50000001.txt")
    assert "mimic-cxr-reports.zip" in s.report_path
    assert "Right lower lobe pneumonia" in s.report
    assert (s.width, s.height) == (64, 64) and s.image_bytes[:2] == b"\xff\xd8"
    assert s.chexpert["Pneumonia"] == 1.0 and s.chexpert["Edema"] is None
    assert s.scene is None


def test_reports_folder_and_plain_csv_read_the_same(tmp_path):
    root = make_mimic_root(tmp_path / "m", reports_as="txt")
    for gz in root.glob("*.csv.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    _, loaded, rejected = load_all(_source(root))
    assert sorted(loaded) == ["d0001-pa", "d0002-pa", "d0003-pa", "d0008-pa"]
    assert rejected["d0004-pa"].reason == "missing_report"
    assert loaded["d0003-pa"].report_path == "mimic-cxr-reports/files/p10/p10000003/s50000003.txt"


def test_explicit_reports_path_relative_to_config(tmp_path, monkeypatch):
    root = make_mimic_root(tmp_path / "m")
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.move(root / "mimic-cxr-reports.zip", configs / "elsewhere.zip")
    with pytest.raises(SourceError, match=r"no reports .* found in .*files"):
        _source(root).plan()
    path = configs / "build.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "version": "1.0.0", "output": "out",
        "sources": [{"kind": "mimic-cxr-jpg", "root": "../m", "reports": "elsewhere.zip"}],
    }))
    # A working directory with no such files: only the config's folder can resolve them.
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    source = make_source(load_config(path), 0)
    assert source.reports_path().resolve() == (configs / "elsewhere.zip").resolve()
    _, loaded, _ = load_all(source)
    assert len(loaded) == 4


def test_options_views_splits_limit_all_images(mimic_root):
    plan = _source(mimic_root, views=["PA", "LATERAL"], one_image_per_study=False).plan()
    ids = {r.id for r in plan.refs}
    assert {"d0001-lat", "d0002-pb"} <= ids and "d0007-ap" not in ids

    plan = _source(mimic_root, splits=["test"]).plan()
    assert {r.split for r in plan.refs} == {"test"}
    assert Counter(o.reason for o in plan.rejected)["split_not_selected"] == 6

    plan = _source(mimic_root, limit=3).plan()
    assert len(plan.refs) == 3
    assert Counter(o.reason for o in plan.rejected)["beyond_limit"] == 5
    assert len(plan.refs) + len(plan.rejected) == 11


def test_unusable_roots_raise_source_error(tmp_path):
    with pytest.raises(SourceError, match="not a folder"):
        _source(tmp_path / "absent").plan()
    root = make_mimic_root(tmp_path / "m")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(SourceError, match="missing mimic-cxr-2.0.0-split.csv.gz"):
        _source(root).plan()


def test_license_is_credentialed(mimic_root):
    lic = _source(mimic_root).license_info()
    assert lic.credentialed and "PhysioNet" in lic.name


def test_loaded_studies_are_chest_radiographs(mimic_root):
    _, loaded, _ = load_all(_source(mimic_root))
    assert {(s.modality, s.body_part) for s in loaded.values()} == {("XR", "chest")}


def test_missing_report_names_the_study_and_the_reports_zip(mimic_root):
    _, _, rejected = load_all(_source(mimic_root))
    message = rejected["d0004-pa"].message
    assert "s50000004" in message and "mimic-cxr-reports.zip" in message


def test_default_image_option_keeps_the_file_bytes(mimic_root):
    source = _source(mimic_root)
    _, loaded, _ = load_all(source)
    for study in loaded.values():
        assert study.image_bytes == (mimic_root / study.image_path).read_bytes()
