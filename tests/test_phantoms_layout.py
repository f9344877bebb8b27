"""Phantom studies and the MIMIC-CXR-JPG layout they are written in."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zipfile

import numpy as np
from PIL import Image

from advbench.phantoms import (
    Scene,
    generate_study,
    study_ids,
    study_split,
    write_mimic_layout,
)
from advbench.phantoms.layout import METADATA_COLUMNS
from advbench.sources.base import CHEXPERT_COLUMNS

# MIMIC-CXR-JPG dicom ids: five groups of 8 lowercase hex digits
DICOM_ID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}")


def _csv(path):
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_generate_study_is_deterministic_with_mimic_like_ids():
    a = generate_study(7, seed=3, size=96)
    b = generate_study(7, seed=3, size=96)
    assert np.array_equal(a.image, b.image) and a.report.text == b.report.text
    assert a.scene == b.scene and a.chexpert == b.chexpert
    assert len(a.subject_id) == 8 and a.subject_id.startswith("1")
    assert len(a.study_id) == 8 and a.study_id.startswith("5")
    assert DICOM_ID.fullmatch(a.dicom_id) and DICOM_ID.fullmatch(a.lateral_dicom_id)
    assert a.study_date.startswith("21") and len(a.study_date) == 8
    assert a.view_position == "PA" and a.image.shape == (96, 96)
    jpeg = a.jpeg_bytes()
    assert Image.open(io.BytesIO(jpeg)).size == (96, 96)
    assert a.lateral_image().shape == (96, 96)
    other = generate_study(8, seed=3, size=96)
    assert other.dicom_id != a.dicom_id and other.subject_id != a.subject_id
    # the anatomy seed (noise and texture) is a function of (index, seed) like the rest
    assert a.scene.anatomy.seed == b.scene.anatomy.seed
    assert other.scene.anatomy.seed != a.scene.anatomy.seed
    assert generate_study(7, seed=4, size=96).scene.anatomy.seed != a.scene.anatomy.seed


def test_anatomy_seeds_are_stable_and_differ_between_studies():
    seeds = [generate_study(i, seed=5, size=64).scene.anatomy.seed for i in range(40)]
    assert len(set(seeds)) == 40 and all(0 <= s < 2**31 - 1 for s in seeds)
    assert seeds[:3] == [generate_study(i, seed=5, size=64).scene.anatomy.seed for i in range(3)]
    other = {generate_study(i, seed=6, size=64).scene.anatomy.seed for i in range(3)}
    assert not other & set(seeds)


def test_ids_are_unique_and_splits_about_80_10_10():
    ids = [study_ids(i, seed=11) for i in range(3000)]
    for key in ("subject_id", "study_id", "dicom_id", "lateral_dicom_id"):
        assert len({d[key] for d in ids}) == 3000
    assert all(DICOM_ID.fullmatch(d[k]) for d in ids for k in ("dicom_id", "lateral_dicom_id"))
    assert ids == [study_ids(i, seed=11) for i in range(3000)]  # stable for a seed
    other = [study_ids(i, seed=12) for i in range(3000)]
    assert not {d["dicom_id"] for d in ids} & {d["dicom_id"] for d in other}
    assert not {d["dicom_id"] for d in ids} & {d["lateral_dicom_id"] for d in ids}
    splits = [study_split(i, seed=11) for i in range(3000)]
    share = {s: splits.count(s) / 3000 for s in ("train", "validate", "test")}
    assert 0.76 < share["train"] < 0.84 and 0.07 < share["validate"] < 0.13
    assert 0.07 < share["test"] < 0.13
    assert study_ids(5, seed=1) != study_ids(5, seed=2)


def test_layout_with_zip_reports_and_gzipped_csvs(tmp_path):
    done = []
    summary = write_mimic_layout(tmp_path, 5, seed=2, size=96, progress=done.append)
    assert done == [1, 2, 3, 4, 5]
    assert summary.studies == 5 and summary.images == 10
    assert summary.reports == tmp_path / "mimic-cxr-reports.zip"
    for name in ("IMAGE_FILENAMES", "LICENSE.txt", "README", "SHA256SUMS.txt"):
        assert (tmp_path / name).is_file()
    assert "synthetic" in (tmp_path / "LICENSE.txt").read_text().lower()

    meta = _csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert tuple(meta[0]) == METADATA_COLUMNS and len(meta) == 10
    assert {r["ViewPosition"] for r in meta} == {"PA", "LATERAL"}
    assert len({r["dicom_id"] for r in meta}) == 10
    assert {r["Rows"] for r in meta} == {"96"} and all(r["StudyDate"].startswith("21")
                                                      for r in meta)
    split = _csv(tmp_path / "mimic-cxr-2.0.0-split.csv.gz")
    assert {r["dicom_id"] for r in split} == {r["dicom_id"] for r in meta}
    assert {r["split"] for r in split} <= {"train", "validate", "test"}
    for stem in ("chexpert", "negbio"):
        labels = _csv(tmp_path / f"mimic-cxr-2.0.0-{stem}.csv.gz")
        assert tuple(labels[0]) == ("subject_id", "study_id", *CHEXPERT_COLUMNS)
        assert len(labels) == 5
        assert {v for r in labels for k, v in r.items() if k in CHEXPERT_COLUMNS} <= {
            "", "1.0", "0.0", "-1.0"}

    listed = (tmp_path / "IMAGE_FILENAMES").read_text().split()
    with zipfile.ZipFile(summary.reports) as z:
        members = set(z.namelist())
    for row in meta:
        s, st, d = row["subject_id"], row["study_id"], row["dicom_id"]
        rel = f"files/p{s[:2]}/p{s}/s{st}/{d}.jpg"
        assert (tmp_path / rel).is_file() and rel in listed
        assert Image.open(tmp_path / rel).size == (96, 96)
        assert f"files/p{s[:2]}/p{s}/s{st}.txt" in members
        scene_file = tmp_path / rel.replace(".jpg", ".json")
        assert scene_file.is_file() == (row["ViewPosition"] == "PA")

    pa = next(r for r in meta if r["ViewPosition"] == "PA")
    study = next(generate_study(i, seed=2, size=96) for i in range(5)
                 if generate_study(i, seed=2, size=96).dicom_id == pa["dicom_id"])
    record = json.loads((tmp_path / study.relative_dir / f"{study.dicom_id}.json").read_text())
    assert record == study.scene_record()
    assert Scene.from_dict(record) == study.scene
    with zipfile.ZipFile(summary.reports) as z:
        name = f"files/p{study.subject_id[:2]}/p{study.subject_id}/s{study.study_id}.txt"
        assert z.read(name).decode() == study.report.text


def test_layout_with_txt_reports_and_plain_csvs(tmp_path):
    summary = write_mimic_layout(tmp_path, 3, seed=5, size=64, reports="txt",
                                 compress_csv=False, lateral=False)
    assert summary.images == 3 and summary.reports == tmp_path / "files"
    assert not (tmp_path / "mimic-cxr-reports.zip").exists()
    for stem in ("metadata", "chexpert", "negbio", "split"):
        assert (tmp_path / f"mimic-cxr-2.0.0-{stem}.csv").is_file()
        assert not (tmp_path / f"mimic-cxr-2.0.0-{stem}.csv.gz").exists()
    meta = _csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv")
    assert {r["ViewPosition"] for r in meta} == {"PA"}
    reports = sorted(summary.reports.rglob("s*.txt"))
    assert len(reports) == 3
    assert all("FINDINGS:" in p.read_text() for p in reports)
    assert all(p.parent.name.startswith("p") and p.parent.parent.parent.name == "files"
               for p in reports)


def test_layout_reads_through_the_mimic_ingest(tmp_path):
    from advbench.sources.mimic_cxr_jpg import MimicCxrJpg, MimicCxrJpgConfig

    write_mimic_layout(tmp_path, 4, seed=9, size=64)
    source = MimicCxrJpg(MimicCxrJpgConfig(root=tmp_path), index=0, base_dir=tmp_path, seed=0)
    plan = source.plan()
    assert len(plan.refs) == 4
    assert {o.reason for o in plan.rejected} == {"view_not_selected"}
    study = source.load(plan.refs[0])
    assert "IMPRESSION:" in study.report and study.scene["report_concepts"]
    index = next(i for i in range(4) if study_ids(i, seed=9)["dicom_id"] == study.image_id)
    made = generate_study(index, seed=9, size=64)
    # the scene, anatomy seed included, survives the layout and the ingest unchanged
    assert Scene.from_dict(study.scene) == made.scene
    assert Scene.from_dict(study.scene).anatomy.seed == made.scene.anatomy.seed
