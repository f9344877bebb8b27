"""Reports are located once while planning and read by offset while loading (sources/reports.py).

A shard's cost must not depend on how many reports the zip holds, so loading must never parse
the zip's central directory; and a report that changed or broke since planning is rejected as
``unreadable_report``, naming the zip and member.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from advbench.config import parse_config
from advbench.pipeline import make_source
from advbench.records import InputRejected
from advbench.sources.reports import ReportLocation, ReportStore, read_report
from tests.conftest import make_mimic_root

REPORT = " FINDINGS: Small left pleural effusion.\n IMPRESSION: Effusion.\n"
NAME = "mimic-cxr-reports/files/p10/p10000001/s50000001.txt"


def _source(root: Path, **extra):
    cfg = parse_config({"name": "t", "version": "1.0.0", "output": "out",
                        "sources": [{"kind": "mimic-cxr-jpg", "root": str(root), **extra}]})
    return make_source(cfg, 0)


def _zip(path: Path, members: dict[str, bytes | str], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _locate(path: Path, study: str = "50000001") -> ReportLocation:
    with ReportStore(path) as store:
        location = store.locate(study)
    assert location is not None
    return location


def _forbid_zipfile(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("zipfile.ZipFile used while loading: the directory was parsed")

    monkeypatch.setattr(zipfile, "ZipFile", refuse)


def _with_other_members(root: Path, count: int) -> None:
    """Add ``count`` reports of other studies to the fixture's zip (as in the real one)."""
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "a", zipfile.ZIP_DEFLATED) as z:
        for i in range(count):
            z.writestr(f"mimic-cxr-reports/files/p19/p{19000000 + i}/s{59000000 + i}.txt",
                       f" FINDINGS: Other study {i}.\n")


def test_loading_a_shard_never_parses_the_zip_directory(tmp_path, monkeypatch):
    root = make_mimic_root(tmp_path / "m")
    _with_other_members(root, 3000)
    plan = _source(root).plan()
    shard = pickle.loads(pickle.dumps(plan.refs))  # as a shard task in another process gets it
    _forbid_zipfile(monkeypatch)

    source = _source(root)  # a fresh source, as every shard task makes its own
    loaded, rejected = {}, {}
    for ref in shard:
        try:
            loaded[ref.id] = source.load(ref)
        except InputRejected as exc:
            rejected[ref.id] = exc.reason
    assert sorted(loaded) == ["d0001-pa", "d0002-pa", "d0003-pa", "d0008-pa"]
    assert rejected == {"d0004-pa": "missing_report", "d0005-pa": "empty_report",
                        "d0006-pa": "unreadable_image", "d0007-pa": "missing_image"}
    assert "Right lower lobe pneumonia" in loaded["d0001-pa"].report
    assert loaded["d0001-pa"].report_path == (
        "mimic-cxr-reports.zip!mimic-cxr-reports/files/p10/p10000001/s50000001.txt")


def test_plan_carries_a_small_picklable_location_per_study(mimic_root):
    refs = {r.id: r for r in _source(mimic_root).plan().refs}
    location = refs["d0001-pa"].fields["report"]
    assert isinstance(location, ReportLocation) and location.in_zip
    assert location.name == NAME and location.store.endswith("mimic-cxr-reports.zip")
    info = zipfile.ZipFile(mimic_root / "mimic-cxr-reports.zip").getinfo(NAME)
    assert (location.header_offset, location.compress_type, location.compress_size,
            location.file_size, location.crc) == (info.header_offset, info.compress_type,
                                                  info.compress_size, info.file_size, info.CRC)
    assert refs["d0004-pa"].fields["report"] is None  # no report: rejected when loaded
    assert pickle.loads(pickle.dumps(refs["d0001-pa"])) == refs["d0001-pa"]
    assert len(pickle.dumps(location)) < 400


def test_planning_closes_the_reports_zip(mimic_root, monkeypatch):
    opened: list[zipfile.ZipFile] = []
    real = zipfile.ZipFile

    class Recording(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(zipfile, "ZipFile", Recording)
    _source(mimic_root).plan()
    assert opened and all(z.fp is None for z in opened)


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_stored_and_deflated_members_read_by_offset(tmp_path, monkeypatch, method):
    members = {f"files/p10/p1000000{i}/s5000000{i}.txt": f"{REPORT} #{i}" for i in range(1, 6)}
    path = _zip(tmp_path / "r.zip", members, method)
    locations = [_locate(path, f"5000000{i}") for i in range(1, 6)]
    assert {loc.compress_type for loc in locations} == {method}
    _forbid_zipfile(monkeypatch)
    assert [read_report(loc) for loc in locations] == list(members.values())


def test_member_with_a_data_descriptor_reads_by_offset(tmp_path, monkeypatch):
    """Zips streamed to a pipe put sizes and CRC after the data; the plan has them anyway."""

    class Unseekable(io.RawIOBase):
        def __init__(self, f):
            self.f = f

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            return self.f.write(b)

    path = tmp_path / "streamed.zip"
    with open(path, "wb") as f, zipfile.ZipFile(Unseekable(f), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(NAME, REPORT)
        z.writestr("mimic-cxr-reports/files/p10/p10000002/s50000002.txt", "second")
    location = _locate(path)
    _forbid_zipfile(monkeypatch)
    assert read_report(location) == REPORT


def test_other_compression_falls_back_to_zipfile(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: REPORT}, zipfile.ZIP_BZIP2)
    assert read_report(_locate(path)) == REPORT


def test_non_utf8_report_decodes_as_before(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: b"Small effusion \xe9.\n"})
    assert read_report(_locate(path)) == "Small effusion \xe9.\n"


def _reject(location: ReportLocation) -> InputRejected:
    with pytest.raises(InputRejected) as err:
        read_report(location)
    assert err.value.reason == "unreadable_report"
    assert str(location.store) in err.value.message and location.name in err.value.message
    return err.value


def test_crc_mismatch_is_unreadable_report(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: REPORT}, zipfile.ZIP_STORED)
    location = _locate(path)
    data = bytearray(path.read_bytes())
    start = data.index(REPORT.encode())
    data[start + 12] ^= 0x20  # one flipped bit in the stored text
    path.write_bytes(bytes(data))
    assert "CRC-32 mismatch" in _reject(location).message


def test_corrupt_deflate_data_is_unreadable_report(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: REPORT * 20})
    location = _locate(path)
    data = bytearray(path.read_bytes())
    body = location.header_offset + 30 + len(NAME)
    for i in range(body, body + location.compress_size):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))
    _reject(location)


def test_truncated_zip_is_unreadable_report(tmp_path):
    members = {NAME: REPORT * 50, "files/p10/p10000002/s50000002.txt": REPORT * 50}
    path = _zip(tmp_path / "r.zip", members)
    first, second = _locate(path), _locate(path, "50000002")
    whole = path.read_bytes()
    path.write_bytes(whole[: second.header_offset + 40])  # cut inside the second member
    assert read_report(first) == REPORT * 50  # what is still whole still reads
    assert "truncated" in _reject(second).message
    path.write_bytes(whole[: second.header_offset + 10])  # cut inside its local header
    assert "truncated" in _reject(second).message


def test_changed_zip_is_unreadable_report(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: REPORT})
    location = _locate(path)
    assert "no local file header" in _reject(
        dataclasses.replace(location, header_offset=location.header_offset + 1)).message
    _zip(path, {"files/p10/p10000009/s50000009.txt": REPORT})  # same offset, other member
    assert "name" in _reject(location).message


def test_missing_zip_is_unreadable_report(tmp_path):
    path = _zip(tmp_path / "r.zip", {NAME: REPORT})
    location = _locate(path)
    path.unlink()
    _reject(location)


def test_unreadable_report_is_an_outcome_of_the_build_not_a_failure(tmp_path):
    root = make_mimic_root(tmp_path / "m")
    source = _source(root)
    plan = source.plan()
    zip_path = root / "mimic-cxr-reports.zip"
    zip_path.write_bytes(zip_path.read_bytes()[:40])  # damaged after planning
    reasons = Counter()
    for ref in plan.refs:
        try:
            source.load(ref)
        except InputRejected as exc:
            reasons[exc.reason] += 1
            if exc.reason == "unreadable_report":
                assert "mimic-cxr-reports.zip" in exc.message and ".txt" in exc.message
    # the four good studies and the one with an empty report can no longer be read
    assert reasons == {"unreadable_report": 5, "missing_report": 1, "unreadable_image": 1,
                       "missing_image": 1}


def _folder(root: Path, layout: str, studies: dict[str, str]) -> Path:
    for study, subject in studies.items():
        name = layout.format(group=subject[:2], subject=subject, study=study)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"Report of s{study}.\n")
    return root


def test_folder_reports_are_found_at_the_standard_path_without_a_walk(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "reports", "files/p{group}/p{subject}/s{study}.txt",
                     {f"{50000000 + i}": f"{10000000 + i}" for i in range(300)})
    walked = Counter()
    real_rglob = Path.rglob

    def counting_rglob(self, pattern):
        for path in real_rglob(self, pattern):
            walked["files"] += 1
            yield path

    monkeypatch.setattr(Path, "rglob", counting_rglob)
    with ReportStore(folder) as store:
        locations = [store.locate(f"{50000000 + i}", f"{10000000 + i}") for i in range(300)]
    assert walked["files"] <= 1  # only the check that the folder holds a report at all
    assert locations[7] == ReportLocation(str(folder), "files/p10/p10000007/s50000007.txt")
    assert read_report(locations[7]) == "Report of s50000007.\n"
    assert locations[7].where(relative=True) == "reports/files/p10/p10000007/s50000007.txt"


@pytest.mark.parametrize("layout", [
    "p{group}/p{subject}/s{study}.txt",  # the store is the files/ folder itself
    "mimic-cxr-reports/files/p{group}/p{subject}/s{study}.txt",  # the folder above
    "p{subject}/s{study}.txt",  # no group folder: found by walking
])
def test_folder_layouts_that_worked_before_still_work(tmp_path, layout):
    folder = _folder(tmp_path / "reports", layout, {"50000001": "10000001"})
    with ReportStore(folder) as store:
        location = store.locate("50000001", "10000001")
        assert location is not None and read_report(location) == "Report of s50000001.\n"
        assert store.locate("s59999999", "19999999") is None
        assert store.read("s50000001") == "Report of s50000001.\n" and len(store) == 1


def test_folder_report_gone_after_planning_is_unreadable_report(tmp_path):
    folder = _folder(tmp_path / "reports", "files/p{group}/p{subject}/s{study}.txt",
                     {"50000001": "10000001"})
    with ReportStore(folder) as store:
        location = store.locate("50000001", "10000001")
    (folder / location.name).unlink()
    with pytest.raises(InputRejected, match=r"s50000001\.txt") as err:
        read_report(location)
    assert err.value.reason == "unreadable_report"


def test_non_ascii_member_name_reads_by_offset(tmp_path, monkeypatch):
    name = "rapports-été/files/p10/p10000001/s50000001.txt"
    location = _locate(_zip(tmp_path / "r.zip", {name: REPORT}))
    assert location.name == name
    _forbid_zipfile(monkeypatch)
    assert read_report(location) == REPORT
