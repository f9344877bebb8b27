"""Shared fixtures: a Prefect test harness and a tiny folder in the real MIMIC-CXR-JPG layout."""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from advbench.phantoms.layout import METADATA_COLUMNS
from advbench.sources.base import CHEXPERT_COLUMNS

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# advbench's cache (compiled lexicon regexes, Prefect home) goes to a folder of this session
os.environ.setdefault("ADVBENCH_CACHE", tempfile.mkdtemp(prefix="advbench-test-cache-"))


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the whole session (starting one is slow): advbench's
    own, which dies with the test run even if it is killed (Prefect's harness server does not).
    """
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from advbench.prefect_server import temporary_server

    with temporary_server(home, timeout=180):
        yield


REPORTS = {
    # study id: report text (None = no report file at all)
    "50000001": """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough, eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is a focal consolidation in the right lower lobe.  No pleural effusion or
 pneumothorax.  Heart size is normal.

 IMPRESSION:

 Right lower lobe pneumonia.
""",
    "50000002": """ FINDINGS:  Lungs are clear.  No pleural effusion or pneumothorax.
 IMPRESSION:  No acute cardiopulmonary process.
""",
    "50000003": """ IMPRESSION:  Moderate cardiomegaly.  Small left pleural effusion.""",
    "50000004": None,  # report missing
    "50000005": "   \n  ",  # empty report
    "50000006": """ FINDINGS: A 2 cm nodule in the left upper lobe, concerning for malignancy.""",
    "50000007": """ FINDINGS: Large right pneumothorax.""",
    "50000008": """ FINDINGS: No acute process.""",
}

# (dicom_id, subject, study, view, split, kind) — kind: ok | corrupt | missing
IMAGES = [
    ("d0001-pa", "10000001", "50000001", "PA", "train", "ok"),
    ("d0001-lat", "10000001", "50000001", "LATERAL", "train", "ok"),
    ("d0002-pa", "10000002", "50000002", "PA", "train", "ok"),
    ("d0002-pb", "10000002", "50000002", "PA", "train", "ok"),  # second PA of the study
    ("d0003-pa", "10000003", "50000003", "PA", "test", "ok"),
    ("d0004-pa", "10000004", "50000004", "PA", "test", "ok"),  # report missing
    ("d0005-pa", "10000005", "50000005", "PA", "validate", "ok"),  # report empty
    ("d0006-pa", "10000006", "50000006", "PA", "test", "corrupt"),
    ("d0007-ap", "10000007", "50000007", "AP", "train", "ok"),  # AP: not a selected view
    ("d0007-pa", "10000007", "50000007", "PA", "train", "missing"),  # file absent
    ("d0008-pa", "10000008", "50000008", "PA", "validate", "ok"),
]
META_COLUMNS = list(METADATA_COLUMNS)
CHEXPERT = list(CHEXPERT_COLUMNS)


def _jpeg(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8), mode="L")
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def make_mimic_root(root: Path, *, reports_as: str = "zip") -> Path:
    """Write the layout: gzipped CSVs, images under files/, reports zip or folder."""
    root.mkdir(parents=True, exist_ok=True)
    meta, split = [], []
    for i, (dicom, subject, study, view, sp, kind) in enumerate(IMAGES):
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        data = _jpeg(i)
        if kind == "ok":
            (folder / f"{dicom}.jpg").write_bytes(data)
        elif kind == "corrupt":
            (folder / f"{dicom}.jpg").write_bytes(data[: len(data) // 3])
        meta.append([dicom, subject, study, "CHEST (PA AND LAT)", view, "64", "64", "21800506",
                     "213014.531", "Chest 2 Views", "postero-anterior", "Erect"])
        split.append([dicom, study, subject, sp])
    _write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", META_COLUMNS, meta)
    _write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz",
                  ["dicom_id", "study_id", "subject_id", "split"], split)
    studies = sorted({(s, st) for _, s, st, *_ in IMAGES})
    labels = [[s, st] + ["1.0" if st == "50000001" and c == "Pneumonia" else "" for c in CHEXPERT]
              for s, st in studies]
    _write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", ["subject_id", "study_id", *CHEXPERT],
                  labels)
    subject_of = {st: s for s, st in studies}
    members = {
        f"files/p{subject_of[st][:2]}/p{subject_of[st]}/s{st}.txt": text
        for st, text in REPORTS.items()
        if text is not None
    }
    if reports_as == "zip":
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as z:
            for name, text in members.items():
                z.writestr(f"mimic-cxr-reports/{name}", text)
    else:
        for name, text in members.items():
            path = root / "mimic-cxr-reports" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return root


@pytest.fixture
def mimic_root(tmp_path) -> Path:
    return make_mimic_root(tmp_path / "mimic")


def write_config(path: Path, root: Path, output: Path, *, top: dict | None = None,
                 **extra) -> Path:
    """A build config over a MIMIC-layout folder; ``extra`` goes into the source block,
    ``top`` into the top level (``attacks``, ``workers``, ``runner``...)."""
    import yaml

    data = {"name": "test-release", "version": "1.0.0", "seed": 0, "output": str(output),
            "shard_size": 2, "sources": [{"kind": "mimic-cxr-jpg", "root": str(root), **extra}],
            **(top or {})}
    path.write_text(yaml.safe_dump(data))
    return path
