"""The dicom source on small DICOM files written by the tests with pydicom."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from advbench.config import ConfigError
from advbench.sources.base import SourceError
from advbench.sources.dicom import apply_window
from tests.conftest import load_all, make_test_source


def write_dicom(path: Path, pixels: np.ndarray, *, uid: str | None = "auto", dtype=np.int16,
                **tags) -> str:
    """A little-endian DICOM file of signed 16-bit pixels (H x W, or frames x H x W)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    uid = generate_uid() if uid == "auto" else uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid or generate_uid()
    ds.SOPClassUID = CTImageStorage
    if uid:
        ds.SOPInstanceUID = uid
    ds.Modality = "CT"
    ds.PatientID = "P1"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.Rows, ds.Columns = pixels.shape[-2:] if dtype == np.int16 else pixels.shape[:2]
    if pixels.ndim == 3 and dtype == np.int16:
        ds.NumberOfFrames = pixels.shape[0]
    for key, value in tags.items():
        setattr(ds, key, value)
    if pixels.size:
        ds.PixelData = pixels.astype(dtype).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return uid or ""


def _source(root: Path, **extra):
    return make_test_source({"kind": "dicom", "root": str(root), **extra})


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        return np.asarray(img)


def _metadata(root: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (root / "metadata.csv").open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


# Stored values 864..2264 with intercept -1024: -160, 40, 240, -1000 and 1000 HU.
RAMP = np.array([[864, 1064, 1264, 24, 2024]], dtype=np.int16)
CT_TAGS = {"RescaleSlope": 1, "RescaleIntercept": -1024}


def test_window_from_file_tags_applies_rescale_first_and_first_value(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP, WindowCenter=[40, -600], WindowWidth=[400, 1500],
                **CT_TAGS)
    _, loaded, _ = load_all(_source(tmp_path, require_findings=False))
    (study,) = loaded.values()
    assert _pixels(study.image_bytes).tolist() == [[0, 128, 255, 0, 255]]
    assert study.extra["window_from"] == "tags" and study.extra["window"] == [40.0, 400.0]
    assert (study.width, study.height, study.modality) == (5, 1, "CT")


def test_config_window_wins_over_file_tags_and_presets_match_explicit_values(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP, WindowCenter=40, WindowWidth=400, **CT_TAGS)
    explicit = load_all(_source(tmp_path, require_findings=False,
                                window={"center": -600, "width": 1500}))[1]
    preset = load_all(_source(tmp_path, require_findings=False, window="lung"))[1]
    (a,), (b,) = explicit.values(), preset.values()
    expected = apply_window(RAMP.astype(float) - 1024, -600, 1500)
    assert _pixels(a.image_bytes).tolist() == expected.tolist()
    assert a.image_bytes == b.image_bytes and a.extra["window_from"] == "config"
    assert _pixels(a.image_bytes).tolist() != [[0, 128, 255, 0, 255]]


def test_unknown_window_preset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown window preset 'lungs'"):
        _source(tmp_path, window="lungs")


def test_without_window_tags_the_full_range_is_used(tmp_path):
    write_dicom(tmp_path / "a.dcm", RAMP, **CT_TAGS)
    (study,) = load_all(_source(tmp_path, require_findings=False))[1].values()
    out = _pixels(study.image_bytes)
    assert out.min() == 0 and out.max() == 255 and study.extra["window_from"] == "range"
    assert out[0, 3] == 0 and out[0, 4] == 255


def test_monochrome1_is_inverted(tmp_path):
    write_dicom(tmp_path / "m2.dcm", RAMP, uid="1.2.3.2", WindowCenter=40, WindowWidth=400,
                **CT_TAGS)
    write_dicom(tmp_path / "m1.dcm", RAMP, uid="1.2.3.1", WindowCenter=40, WindowWidth=400,
                PhotometricInterpretation="MONOCHROME1", **CT_TAGS)
    loaded = load_all(_source(tmp_path, require_findings=False))[1]
    m1, m2 = _pixels(loaded["1.2.3.1"].image_bytes), _pixels(loaded["1.2.3.2"].image_bytes)
    assert m1.tolist() == (255 - m2).tolist() and m2.tolist() == [[0, 128, 255, 0, 255]]


def test_multiframe_uses_the_middle_frame_or_the_one_chosen(tmp_path):
    frames = np.stack([np.full((3, 4), 100 * k) for k in range(5)])  # frame k: 100 k
    write_dicom(tmp_path / "mf.dcm", frames)
    window = {"center": 200, "width": 401}  # 0 -> 0, 200 -> 128, 400 -> 255

    def value(**extra) -> int:
        (study,) = load_all(_source(tmp_path, require_findings=False, window=window,
                                    **extra))[1].values()
        assert (study.width, study.height, study.extra["frames"]) == (4, 3, 5)
        return int(np.unique(_pixels(study.image_bytes))[0])

    assert value() == 128  # frame 2 of 5
    assert value(frame=4) == 255 and value(frame=0) == 0
    _, _, rejected = load_all(_source(tmp_path, require_findings=False, frame=9))
    (exc,) = rejected.values()
    assert exc.reason == "frame_out_of_range" and "mf.dcm" in exc.message


def test_enhanced_multiframe_reads_rescale_and_window_from_functional_groups(tmp_path):
    def item(**tags) -> Dataset:
        ds = Dataset()
        for key, value in tags.items():
            setattr(ds, key, value)
        return ds

    frames = np.stack([RAMP, RAMP, RAMP])
    shared = item(PixelValueTransformationSequence=[item(RescaleSlope=1,
                                                         RescaleIntercept=-1024)])
    per_frame = [item(FrameVOILUTSequence=[item(WindowCenter=c, WindowWidth=w)])
                 for c, w in ((-600, 1500), (40, 400), (400, 1800))]
    write_dicom(tmp_path / "enhanced.dcm", frames, SharedFunctionalGroupsSequence=[shared],
                PerFrameFunctionalGroupsSequence=per_frame)
    (study,) = load_all(_source(tmp_path, require_findings=False))[1].values()
    assert study.extra["frame"] == 1 and study.extra["window"] == [40.0, 400.0]
    assert _pixels(study.image_bytes).tolist() == [[0, 128, 255, 0, 255]]


def test_rgb_dicom_stays_colour(tmp_path):
    rgb = np.dstack([np.full((3, 4), 200), np.full((3, 4), 100), np.arange(12).reshape(3, 4)])
    write_dicom(tmp_path / "rgb.dcm", rgb, dtype=np.uint8, SamplesPerPixel=3,
                PhotometricInterpretation="RGB", PlanarConfiguration=0, BitsAllocated=8,
                BitsStored=8, HighBit=7, PixelRepresentation=0)
    (study,) = load_all(_source(tmp_path, require_findings=False))[1].values()
    assert _pixels(study.image_bytes).tolist() == rgb.tolist()


def test_non_dicom_truncated_and_pixel_less_files_are_rejected_naming_the_file(tmp_path):
    write_dicom(tmp_path / "good.dcm", RAMP, uid="1.2.3.1")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "fake.dcm").write_bytes(b"\x00" * 300)
    write_dicom(tmp_path / "cut.dcm", np.zeros((64, 64)), uid="1.2.3.2")
    data = (tmp_path / "cut.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 4000])
    write_dicom(tmp_path / "empty.dcm", np.zeros((4, 4))[:0], uid="1.2.3.3", Rows=4, Columns=4)

    plan, loaded, rejected = load_all(_source(tmp_path, require_findings=False))
    assert [o.reason for o in plan.rejected] == ["not_dicom", "not_dicom"]
    assert str(tmp_path / "notes.txt") in plan.rejected[0].message
    assert str(tmp_path / "sub" / "fake.dcm") in plan.rejected[1].message
    assert list(loaded) == ["1.2.3.1"]
    assert rejected["1.2.3.2"].reason == "unreadable_image"
    assert "cut.dcm" in rejected["1.2.3.2"].message
    assert rejected["1.2.3.3"].reason == "no_pixel_data"
    assert "empty.dcm" in rejected["1.2.3.3"].message


def test_findings_and_splits_come_from_metadata_by_path_or_uid(tmp_path):
    write_dicom(tmp_path / "a" / "one.dcm", RAMP, uid="1.2.3.1")
    write_dicom(tmp_path / "two.dcm", RAMP, uid="1.2.3.2")
    write_dicom(tmp_path / "three.dcm", RAMP, uid="1.2.3.3")
    _metadata(tmp_path, [
        {"path": "a/one.dcm", "findings": "A 2 cm nodule.", "split": "train"},
        {"sop_instance_uid": "1.2.3.2", "findings": "No nodule.", "split": "validate"},
    ])
    plan, loaded, rejected = load_all(_source(tmp_path))
    assert {r.id: r.split for r in plan.refs} == {"1.2.3.1": "train", "1.2.3.2": "validation",
                                                  "1.2.3.3": "test"}
    assert not plan.rejected  # metadata.csv is not an input
    assert loaded["1.2.3.1"].report == "A 2 cm nodule."
    assert loaded["1.2.3.2"].report == "No nodule."
    assert loaded["1.2.3.1"].report_path == "metadata.csv#row=1"
    assert rejected["1.2.3.3"].reason == "no_findings" and "three.dcm" in rejected[
        "1.2.3.3"].message
    kept = load_all(_source(tmp_path, require_findings=False))[1]
    assert kept["1.2.3.3"].report == ""
    only_train = _source(tmp_path, splits=["train"]).plan()
    assert [r.id for r in only_train.refs] == ["1.2.3.1"]
    assert {o.reason for o in only_train.rejected} == {"split_not_selected"}


def test_seeded_split_follows_the_fractions_and_is_stable(tmp_path):
    for k in range(40):
        write_dicom(tmp_path / f"f{k:02d}.dcm", RAMP, uid=f"1.2.9.{k}")
    fractions = {"train": 0.5, "test": 0.5}
    first = {r.id: r.split for r in _source(tmp_path, split_fractions=fractions).plan().refs}
    again = {r.id: r.split for r in _source(tmp_path, split_fractions=fractions).plan().refs}
    assert first == again and set(first.values()) == {"train", "test"}
    assert 10 <= list(first.values()).count("train") <= 30
    with pytest.raises(ConfigError, match="add up to 0.9"):
        _source(tmp_path, split_fractions={"train": 0.4, "test": 0.5})


def test_ids_are_the_sop_instance_uid_else_a_stable_path_hash(tmp_path):
    write_dicom(tmp_path / "uid.dcm", RAMP, uid="1.2.3.4")
    write_dicom(tmp_path / "nouid.dcm", RAMP, uid=None)
    ids = sorted(r.id for r in _source(tmp_path).plan().refs)
    assert ids[0] == "1.2.3.4" and ids[1].startswith("dcm-") and len(ids[1]) == 20
    assert ids == sorted(r.id for r in _source(tmp_path).plan().refs)


def test_modality_code_and_body_part_from_tags_metadata_or_config(tmp_path):
    write_dicom(tmp_path / "dx.dcm", RAMP, uid="1.1", Modality="DX", BodyPartExamined="CHEST")
    write_dicom(tmp_path / "mr.dcm", RAMP, uid="1.2", Modality="MR")
    write_dicom(tmp_path / "us.dcm", RAMP, uid="1.3", Modality="US", BodyPartExamined="LIVER")
    _metadata(tmp_path, [{"path": "us.dcm", "findings": "x", "body_part": "Kidney"}])
    loaded = load_all(_source(tmp_path, require_findings=False, body_part="abdomen"))[1]
    assert (loaded["1.1"].modality, loaded["1.1"].body_part) == ("XR", "chest")
    assert (loaded["1.2"].modality, loaded["1.2"].body_part) == ("MR", "abdomen")
    assert (loaded["1.3"].modality, loaded["1.3"].body_part) == ("US", "kidney")
    assert loaded["1.1"].extra["dicom_modality"] == "DX"


def _png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array.astype(np.uint8)).save(path)


def test_masks_good_missing_and_wrong_size(tmp_path):
    for k in range(3):
        write_dicom(tmp_path / f"s{k}.dcm", np.zeros((6, 8)), uid=f"1.{k}")
    good = np.zeros((6, 8), np.uint8)
    good[2:4, 3:6] = 1  # a 0/1 mask
    (tmp_path / "masks").mkdir()
    _png(good, tmp_path / "masks" / "s0.png")
    _png(np.full((8, 6), 255), tmp_path / "masks" / "s2.png")
    _metadata(tmp_path, [
        {"path": "s0.dcm", "findings": "f", "mask": "masks/s0.png"},
        {"path": "s1.dcm", "findings": "f", "mask": "masks/absent.png"},
        {"path": "s2.dcm", "findings": "f", "mask": "masks/s2.png"},
    ])
    plan, loaded, rejected = load_all(_source(tmp_path))
    assert not plan.rejected  # mask files are not inputs
    mask = _pixels(loaded["1.0"].mask_bytes)
    assert mask.shape == (6, 8) and mask.dtype == np.uint8
    assert mask.tolist() == (good * 255).tolist()
    assert rejected["1.1"].reason == "missing_mask" and "absent.png" in rejected["1.1"].message
    assert rejected["1.2"].reason == "mask_size_mismatch"
    assert "6x8" in rejected["1.2"].message and "8x6" in rejected["1.2"].message


def test_mask_is_resized_with_the_image(tmp_path):
    write_dicom(tmp_path / "big.dcm", np.zeros((40, 80)), uid="1.9")
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :40] = 255
    _png(mask, tmp_path / "m.png")
    _metadata(tmp_path, [{"path": "big.dcm", "findings": "f", "mask": "m.png"}])
    (study,) = load_all(_source(tmp_path, image={"max_side": 20}))[1].values()
    small = _pixels(study.mask_bytes)
    assert (study.width, study.height) == (20, 10) and small.shape == (10, 20)
    assert small[:, :10].min() == 255 and small[:, 10:].max() == 0


def test_unusable_root_or_metadata_raises_source_error_with_the_path(tmp_path):
    with pytest.raises(SourceError, match="absent"):
        _source(tmp_path / "absent").plan()
    with pytest.raises(SourceError, match="nothing.csv"):
        _source(tmp_path, metadata="nothing.csv").plan()
    (tmp_path / "metadata.csv").write_text("file,findings\nx.dcm,f\n")
    with pytest.raises(SourceError, match="path or sop_instance_uid"):
        _source(tmp_path).plan()


def test_license_is_what_the_config_says_and_credentialed_by_default(tmp_path):
    assert _source(tmp_path).license_info().credentialed
    lic = _source(tmp_path, license={"name": "CC0-1.0", "credentialed": False}).license_info()
    assert (lic.name, lic.credentialed) == ("CC0-1.0", False)
