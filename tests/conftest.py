"""Shared fixtures: a Prefect test harness, a tiny folder in the real MIMIC-CXR-JPG layout,
sources built from one config entry, a loopback HTTP server and tiny random open_clip models."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from advbench.phantoms.layout import METADATA_COLUMNS
from advbench.records import InputRejected, Study
from advbench.sources.base import CHEXPERT_COLUMNS, Source, SourcePlan

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


# -- sources -------------------------------------------------------------------------------

def make_test_source(block: dict[str, Any]) -> Source:
    """The source of a minimal build config whose only ``sources`` entry is ``block``."""
    from advbench.config import parse_config
    from advbench.pipeline import make_source

    cfg = parse_config({"name": "t", "version": "1.0.0", "output": "out", "sources": [block]})
    return make_source(cfg, 0)


def load_all(source: Source) -> tuple[SourcePlan, dict[str, Study], dict[str, InputRejected]]:
    """Plan, then load every planned ref: (plan, studies by id, rejections by id)."""
    plan = source.plan()
    loaded, rejected = {}, {}
    for ref in plan.refs:
        try:
            loaded[ref.id] = source.load(ref)
        except InputRejected as exc:
            rejected[ref.id] = exc
    return plan, loaded, rejected


# -- a loopback HTTP server ----------------------------------------------------------------

class LoopbackServer:
    """An HTTP server on a free loopback port, serving in a daemon thread.

    Each POST's JSON body is recorded in ``requests`` (as ``{"path", "headers", "body"}``) and
    answered with what ``respond`` returns: (status, body), the body sent as JSON (bytes as they
    are). Subclasses override ``respond``; by default it replies with the next of the scripted
    ``steps``. ``url`` is the server's ``/v1`` base URL.
    """

    def __init__(self) -> None:
        self.steps: list[tuple] = []
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                request = {"path": self.path, "headers": dict(self.headers),
                           "body": json.loads(raw)}
                with server.lock:
                    server.requests.append(request)
                status, body = server.respond(request)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._closed = False
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()

    def respond(self, request: dict) -> tuple[int, Any]:
        """The reply to one request (already recorded): the next scripted step."""
        return self.next_step()

    def next_step(self, default: tuple | None = None) -> tuple:
        """The next of ``steps`` (taken off the list), or ``default`` when none is left."""
        with self.lock:
            if self.steps:
                return self.steps.pop(0)
        if default is None:
            raise AssertionError("the test scripted too few steps")
        return default

    def close(self) -> None:
        """Stop serving and free the port (again: nothing)."""
        if not self._closed:
            self._closed = True
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def loopback() -> Iterator[Callable[..., Any]]:
    """Starts a ``LoopbackServer``, or the subclass given (``loopback(FakeServer)``), and
    closes it after the test."""
    servers: list[LoopbackServer] = []

    def start(cls: type[LoopbackServer] = LoopbackServer) -> Any:
        servers.append(cls())
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# -- tiny random open_clip models ----------------------------------------------------------

TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                          "layers": 2}}
# surrogate-like: ViT and ModifiedResNet towers with 32-wide heads, a one-layer text tower
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_VIT = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64,
                                            "patch_size": 8, "head_width": 32},
            "text_cfg": _TINY_TEXT}
TINY_RN = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1],
                                           "width": 8, "head_width": 32},
           "text_cfg": _TINY_TEXT}


def write_tiny_open_clip(folder: Path, name: str, config: dict | None = None, *,
                         seed: int = 0) -> tuple[Path, Path]:
    """A random open_clip model of architecture ``config`` (default ``TINY_CLIP``) written to
    ``folder``: its config JSON ``<name>.json`` (registered with open_clip as model ``name``)
    and its weights ``<name>-<seed>.bin``, initialised from ``seed``. Returns (config, weights).
    """
    import open_clip
    import torch

    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CLIP if config is None else config))
    open_clip.add_model_config(path)
    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    weights = folder / f"{name}-{seed}.bin"
    torch.save(model.state_dict(), weights)
    return path, weights


def write_open_clip_local_dir(folder: Path, config: Path, weights: Path) -> str:
    """The model of ``write_tiny_open_clip`` as a ``local-dir:`` bundle in ``folder`` (created):
    ``open_clip_config.json`` and ``open_clip_pytorch_model.bin``; returns ``local-dir:folder``.
    """
    folder.mkdir(parents=True)
    model_cfg = json.loads(config.read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg}))
    (folder / "open_clip_pytorch_model.bin").write_bytes(weights.read_bytes())
    return f"local-dir:{folder}"


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """One torch thread for a test module: tiny models gain nothing from threads, and on a
    shared 2-core machine OpenMP threads contending with other processes make each op tens of
    times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
