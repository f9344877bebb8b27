"""MIMIC-CXR free-text reports, kept either as a folder or as ``mimic-cxr-reports.zip``.

Both hold ``files/pNN/p<subject_id>/s<study_id>.txt`` (the zip may add a top folder);
a study is looked up by its study id, so either form reads the same.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

_STUDY_FILE = re.compile(r"(?:^|/)p(\d+)/s(\d+)\.txt$")


class ReportStoreError(Exception):
    """A report folder or zip that cannot be used at all."""


def decode_report(data: bytes) -> str:
    """Reports are UTF-8; a stray byte in old text must not lose the whole report."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class ReportStore:
    """Read-only access to the reports of a folder or zip, keyed by study id (``s5...``)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._index: dict[str, str] = {}  # study id -> member name or file path
        self._subjects: dict[str, str] = {}  # study id -> subject id
        if not self.path.exists():
            raise ReportStoreError(f"reports not found: {self.path}")
        if self.path.is_dir():
            names = (str(p.relative_to(self.path)) for p in self.path.rglob("s*.txt"))
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            names = (n for n in self._zip.namelist() if n.endswith(".txt"))
        else:
            raise ReportStoreError(f"reports must be a folder or a zip file: {self.path}")
        for name in names:
            m = _STUDY_FILE.search(name.replace("\\", "/"))
            if m:
                study = f"s{m.group(2)}"
                self._index[study] = name
                self._subjects[study] = f"p{m.group(1)}"
        if not self._index:
            raise ReportStoreError(
                f"no reports (files/pNN/p<subject>/s<study>.txt) found in {self.path}"
            )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, study_id: object) -> bool:
        return _norm_study(study_id) in self._index

    def location(self, study_id: str | int, *, relative: bool = False) -> str:
        """Where a study's report lives: ``reports.zip!files/...`` or ``folder/files/...``.

        ``relative`` drops the folders above the store, for provenance kept in a release.
        """
        name = self._index[_norm_study(study_id)]
        base = self.path.name if relative else str(self.path)
        return f"{base}!{name}" if self._zip else f"{base}/{name}"

    def read(self, study_id: str | int) -> str:
        """The text of one study's report; ``KeyError`` when the study has none."""
        name = self._index[_norm_study(study_id)]
        if self._zip is not None:
            return decode_report(self._zip.read(name))
        return decode_report((self.path / name).read_bytes())

    def study_ids(self) -> list[str]:
        return sorted(self._index)

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


def _norm_study(study_id: object) -> str:
    s = str(study_id).strip()
    return s if s.startswith("s") else f"s{s}"
