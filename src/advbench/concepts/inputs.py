"""Reports to extract concepts from, read from whatever form a user has them in.

``advbench concepts`` takes a JSONL file of ``{"id", "text"}`` objects, one ``.txt`` report, a
MIMIC-CXR reports folder or ``mimic-cxr-reports.zip``; all yield ``(id, text)`` pairs, so the
extractor does not care which. Folders and zips are read through
``advbench.sources.reports.ReportStore`` (one definition of the MIMIC layout).

Text is read as reports are read everywhere (``decode_report``): UTF-8, and a line or file that
is not valid UTF-8 is read as Latin-1 (old exports carry stray bytes; losing the report would
be worse). Anything that cannot be read at all stops with the file (and line) named.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

from advbench.sources.reports import ReportStore, ReportStoreError, decode_report


class ReportInputError(Exception):
    """An input that cannot be read as reports; the message names the input."""


def iter_report_inputs(path: Path) -> Iterator[tuple[str, str]]:
    """``(id, text)`` for every report of a JSONL file, ``.txt`` file, folder or zip.

    A JSONL line must be an object with string ``id`` and ``text``; a ``.txt`` report's id is
    its file stem; a MIMIC report's id is its study (``s5...``), from
    ``files/pNN/p<subject>/s<study>.txt`` anywhere below the folder or inside the zip.
    """
    path = Path(path)
    if not path.exists():
        raise ReportInputError(f"reports input not found: {path}")
    if path.is_dir():
        yield from _store(path, "folder")
    elif path.suffix.lower() in (".jsonl", ".ndjson") or path.name.endswith(".jsonl.txt"):
        yield from _jsonl(path)
    elif path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        yield from _store(path, "zip")
    elif path.suffix.lower() == ".txt":
        yield path.stem, decode_report(_read(path))
    else:
        raise ReportInputError(
            f"unsupported reports input {path}: expected a .jsonl file, a .txt report, "
            "a MIMIC-CXR reports folder or mimic-cxr-reports.zip"
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReportInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _jsonl(path: Path) -> Iterator[tuple[str, str]]:
    try:
        f = open(path, "rb")  # bytes: each line is decoded on its own (see decode_report)
    except OSError as exc:
        raise ReportInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for n, raw in enumerate(f, start=1):
            line = decode_report(raw)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ReportInputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ReportInputError(f"{path}:{n}: expected a JSON object with id and text")
            missing = [k for k in ("id", "text") if k not in obj]
            if missing:
                raise ReportInputError(f"{path}:{n}: missing key(s) {', '.join(missing)}")
            if not isinstance(obj["text"], str):
                raise ReportInputError(f"{path}:{n}: 'text' must be a string")
            yield str(obj["id"]), obj["text"]


def _store(path: Path, kind: str) -> Iterator[tuple[str, str]]:
    try:
        store = ReportStore(path)
    except (ReportStoreError, zipfile.BadZipFile, OSError) as exc:
        raise ReportInputError(f"cannot read reports {kind} {path}: {exc}") from None
    with store:
        if len(store) == 0:
            raise ReportInputError(
                f"reports {kind} {path} has no reports: expected files/pNN/p<subject>/s<study>.txt"
            )
        try:
            yield from store.iter_reports()
        except ReportStoreError as exc:
            raise ReportInputError(str(exc)) from None
