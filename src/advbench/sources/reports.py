"""MIMIC-CXR free-text reports, kept either as a folder or as ``mimic-cxr-reports.zip``.

Both hold ``files/pNN/p<subject_id>/s<study_id>.txt`` (the zip may add a top folder);
a study is looked up by its study id, so either form reads the same.

A build looks each planned study's report up once, while planning, and carries the answer in
the plan as a small ``ReportLocation``. A shard then reads its reports with ``read_report``
straight from the recorded byte offset: the real zip holds 227,835 reports, and parsing its
central directory again in every shard would cost seconds per shard for nothing.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from advbench.records import InputRejected

_STUDY_FILE = re.compile(r"(?:^|/)p(\d+)/s(\d+)\.txt$")

# The fixed part of a zip local file header (APPNOTE 4.3.7), as zipfile reads it.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_FLAG_ENCRYPTED = 0x1


class ReportStoreError(Exception):
    """A report folder or zip that cannot be used at all."""


def decode_report(data: bytes) -> str:
    """Reports are UTF-8; a stray byte in old text must not lose the whole report."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@dataclass(frozen=True)
class ReportLocation:
    """Where one study's report is, resolved at plan time; small and picklable.

    ``store`` is the reports folder or zip; ``name`` the file below the folder or the zip
    member. For a zip member the rest comes from its central-directory entry, so that the
    member can be read later without parsing the zip's directory again.
    """

    store: str
    name: str
    in_zip: bool = False
    header_offset: int = 0
    compress_type: int = 0
    compress_size: int = 0
    file_size: int = 0
    crc: int = 0

    def where(self, *, relative: bool = False) -> str:
        """``reports.zip!files/...`` or ``folder/files/...``; ``relative`` keeps only the
        store's own name, for provenance kept in a release."""
        base = Path(self.store).name if relative else self.store
        return f"{base}!{self.name}" if self.in_zip else f"{base}/{self.name}"

    @classmethod
    def of_member(cls, zip_path: Path | str, info: zipfile.ZipInfo) -> ReportLocation:
        return cls(store=str(zip_path), name=info.filename, in_zip=True,
                   header_offset=info.header_offset, compress_type=info.compress_type,
                   compress_size=info.compress_size, file_size=info.file_size, crc=info.CRC)


def read_report(location: ReportLocation) -> str:
    """The text of a located report; ``InputRejected("unreadable_report")`` when it cannot be
    read as planned (file gone, zip changed or truncated, CRC mismatch)."""
    if not location.in_zip:
        path = Path(location.store) / location.name
        try:
            return decode_report(path.read_bytes())
        except OSError as exc:
            raise InputRejected("unreadable_report", f"cannot read report {path}: {exc}") from None
    return decode_report(_read_member(location))


def _read_member(loc: ReportLocation) -> bytes:
    def reject(problem: str) -> InputRejected:
        return InputRejected("unreadable_report",
                             f"cannot read report {loc.name} in {loc.store}: {problem}")

    try:
        with open(loc.store, "rb") as f:
            f.seek(loc.header_offset)
            header = f.read(_LOCAL_HEADER.size)
            if len(header) < _LOCAL_HEADER.size:
                raise reject("zip is truncated (local header cut short)")
            (signature, _, _, flags, method, _, _, _, _, _, name_len,
             extra_len) = _LOCAL_HEADER.unpack(header)
            if signature != _LOCAL_SIGNATURE:
                raise reject(f"no local file header at offset {loc.header_offset} "
                             "(the zip changed since planning?)")
            if f.read(name_len) not in _encodings(loc.name):
                raise reject("member name in the local header differs "
                             "(the zip changed since planning?)")
            if flags & _FLAG_ENCRYPTED:
                raise reject("member is encrypted")
            if method != loc.compress_type:
                raise reject("compression method differs from the planned one")
            f.seek(extra_len, 1)
            compressed = f.read(loc.compress_size)
    except OSError as exc:
        raise reject(str(exc)) from None
    if len(compressed) < loc.compress_size:
        raise reject(f"zip is truncated ({len(compressed)} of {loc.compress_size} bytes)")

    if method == zipfile.ZIP_STORED:
        data = compressed
    elif method == zipfile.ZIP_DEFLATED:
        try:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(compressed, loc.file_size + 1)  # bounded: no bombs
            if not inflater.unconsumed_tail:
                data += inflater.flush()
        except zlib.error as exc:
            raise reject(f"corrupt deflate data: {exc}") from None
        if len(data) <= loc.file_size and not inflater.eof:
            raise reject("deflate data ends early")
    else:  # bzip2, lzma: rare enough to let zipfile (and its directory parse) handle them
        try:
            with zipfile.ZipFile(loc.store) as z:
                return z.read(loc.name)
        except (zipfile.BadZipFile, KeyError, OSError, RuntimeError, NotImplementedError,
                EOFError, ValueError) as exc:
            raise reject(str(exc)) from None
    if len(data) != loc.file_size:
        raise reject(f"size {len(data)} differs from the recorded {loc.file_size}")
    if zlib.crc32(data) != loc.crc:
        raise reject("CRC-32 mismatch")
    return data


def _encodings(name: str) -> set[bytes]:
    """The bytes a member name may have in a local header (UTF-8, or zip's old cp437)."""
    out = {name.encode("utf-8")}
    try:
        out.add(name.encode("cp437"))
    except UnicodeEncodeError:
        pass
    return out


class ReportStore:
    """Read-only access to the reports of a folder or zip, keyed by study id (``s5...``).

    A zip is indexed when opened (one pass over its directory). A folder is indexed lazily:
    ``locate`` tries the standard ``files/pNN/p<subject>/s<study>.txt`` path first and walks
    the folder (once) only for studies not found there, since walking 227k files is slow.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._where = str(self.path)  # one string shared by every location (pickled once)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}  # zip: study id -> member
        self._index: dict[str, str] | None = None  # study id -> member name or file path
        if not self.path.exists():
            raise ReportStoreError(f"reports not found: {self.path}")
        if self.path.is_dir():
            if _first_report(self.path) is None:
                raise ReportStoreError(
                    f"no reports (files/pNN/p<subject>/s<study>.txt) found in {self.path}"
                )
            return
        if not zipfile.is_zipfile(self.path):
            raise ReportStoreError(f"reports must be a folder or a zip file: {self.path}")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise ReportStoreError(f"cannot open reports zip {self.path}: {exc}") from None
        for info in self._zip.infolist():
            m = _STUDY_FILE.search(info.filename.replace("\\", "/"))
            if m:
                self._members[f"s{m.group(2)}"] = info
        self._index = {study: info.filename for study, info in self._members.items()}
        if not self._index:
            self.close()
            raise ReportStoreError(
                f"no reports (files/pNN/p<subject>/s<study>.txt) found in {self.path}"
            )

    @property
    def index(self) -> dict[str, str]:
        if self._index is None:
            self._index = {}
            for file in self.path.rglob("s*.txt"):
                name = file.relative_to(self.path).as_posix()
                m = _STUDY_FILE.search(name)
                if m:
                    self._index[f"s{m.group(2)}"] = name
        return self._index

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, study_id: object) -> bool:
        return _norm_study(study_id) in self.index

    def locate(self, study_id: str | int, subject_id: str | None = None) -> ReportLocation | None:
        """Where a study's report is, for ``read_report``; ``None`` when it has none.

        ``subject_id`` lets a folder be looked up at the standard path without a walk.
        """
        study = _norm_study(study_id)
        if self._zip is not None:
            info = self._members.get(study)
            return None if info is None else ReportLocation.of_member(self._where, info)
        if subject_id and self._index is None:
            subject = str(subject_id).strip().removeprefix("p")
            for prefix in ("files/", ""):
                name = f"{prefix}p{subject[:2]}/p{subject}/{study}.txt"
                if (self.path / name).is_file():
                    return ReportLocation(store=self._where, name=name)
        name = self.index.get(study)
        return None if name is None else ReportLocation(store=self._where, name=name)

    def location(self, study_id: str | int, *, relative: bool = False) -> str:
        """Where a study's report lives: ``reports.zip!files/...`` or ``folder/files/...``.

        ``relative`` drops the folders above the store, for provenance kept in a release.
        """
        name = self.index[_norm_study(study_id)]
        return ReportLocation(self._where, name, self._zip is not None).where(
            relative=relative)

    def read(self, study_id: str | int) -> str:
        """The text of one study's report; ``KeyError`` when the study has none,
        ``ReportStoreError`` naming the report when it cannot be read."""
        name = self.index[_norm_study(study_id)]
        try:
            if self._zip is not None:
                return decode_report(self._zip.read(name))
            return decode_report((self.path / name).read_bytes())
        except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ReportStoreError(
                f"cannot read report {self.location(study_id)}: {exc}") from None

    def study_ids(self) -> list[str]:
        return sorted(self.index)

    def iter_reports(self) -> Iterator[tuple[str, str]]:
        """``(study id, text)`` for every report, in study-id order."""
        for study in self.study_ids():
            yield study, self.read(study)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> ReportStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_report(folder: Path) -> Path | None:
    """Any one report below ``folder`` (the walk stops at the first)."""
    for file in folder.rglob("s*.txt"):
        if _STUDY_FILE.search(file.relative_to(folder).as_posix()):
            return file
    return None


def _norm_study(study_id: object) -> str:
    s = str(study_id).strip()
    return s if s.startswith("s") else f"s{s}"
