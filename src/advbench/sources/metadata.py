"""What the dicom, image-folder and hf-dataset sources share: reading a metadata table and
choosing the inputs.

The config fields for findings, modality, body part, splits, limit and license
(``LabelledSourceConfig``); the root folder, license and metadata file of the sources over a
folder (``FolderSource``); the metadata reader (CSV with a header row, or JSONL); modality codes
from ``imaging.yaml``; stable ids from paths; the seeded split; the selection of planned inputs
(``select``); the findings check; and the diagnostic-region mask check (``mask_png``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from advbench.images import encode_png
from advbench.records import InputRejected, Outcome, StudyRef
from advbench.sources.base import (
    PHANTOM_MARKER,
    SPLIT_NAMES,
    SYNTHETIC_LICENSE,
    Source,
    SourceError,
    SourceLicense,
    SourcePlan,
    SplitSelection,
)

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")
_HF_SPLIT_ORDER = ("train", "validation", "test")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@lru_cache(maxsize=1)
def imaging_data() -> dict[str, Any]:
    """``imaging.yaml``: modality codes and CT window presets, read once."""
    text = resources.files("advbench.sources").joinpath("imaging.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def modality_code(raw: str | None, default: str) -> str:
    """The short modality code for text as found (``DX`` -> ``XR``, ``fundus`` -> ``OP``);
    ``default`` when the data say nothing."""
    text = (raw or "").strip().upper()
    if not text:
        return default
    return imaging_data()["modality_codes"].get(text, text)


def path_id(relative: str, prefix: str) -> str:
    """A stable id from a path relative to the root (the same on every machine)."""
    return f"{prefix}-{hashlib.sha256(relative.encode()).hexdigest()[:16]}"


def seeded_split(study_id: str, seed: int, fractions: dict[str, float]) -> str:
    """A split drawn from ``fractions`` by hashing (seed, id): the same in every process and run,
    and a study keeps its split when others are added or removed."""
    digest = hashlib.sha256(f"{seed}\0{study_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    total = 0.0
    for name in _HF_SPLIT_ORDER:
        total += fractions.get(name, 0.0)
        if u < total:
            return name
    return max(fractions, key=fractions.__getitem__)  # rounding at the top end


class LicenseOptions(BaseModel):
    """The license of a source's data: say it, as advbench cannot know it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="unspecified (set the source's `license:`)",
                      description="License name, e.g. CC-BY-4.0.")
    credentialed: bool = Field(
        default=True,
        description="Whether the data need credentialed access (then the release must not be "
                    "published openly). Default true, the safe choice for data of unknown terms.",
    )
    url: str | None = Field(default=None, description="Where the license is written.")


class LabelledSourceConfig(SplitSelection):
    """Config fields shared by the dicom, image-folder and hf-dataset sources."""

    split_fractions: dict[str, float] = Field(
        default_factory=lambda: {"test": 1.0},
        description="Split shares for inputs whose data give no split (train, validation, "
                    "test), drawn by hashing the seed and the id; default: all test.",
    )
    require_findings: bool = Field(
        default=True,
        description="Reject inputs without findings text (no_findings); false keeps them with "
                    "an empty report.",
    )
    modality: str = Field(default="OT", description="Modality code when the data give none.")
    body_part: str = Field(default="unknown", description="Body part when the data give none.")
    limit: int | None = Field(default=None, gt=0, description="Keep at most this many inputs.")
    license: LicenseOptions = Field(default_factory=LicenseOptions,
                                    description="The data's license (default: unspecified, "
                                                "treated as credentialed).")

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, share in value.items():
            if name not in SPLIT_NAMES:
                raise ValueError(f"unknown split {name!r}; use train, validation or test")
            if share < 0:
                raise ValueError(f"split share of {name!r} is negative")
            out[SPLIT_NAMES[name]] = out.get(SPLIT_NAMES[name], 0.0) + share
        if abs(sum(out.values()) - 1.0) > 1e-6:
            raise ValueError(f"split shares add up to {sum(out.values())}, not 1")
        return out

    def license_of(self, root: Path) -> SourceLicense:
        """The configured license; a folder written by ``advbench phantoms`` is synthetic."""
        if (root / PHANTOM_MARKER).is_file():
            return SYNTHETIC_LICENSE
        lic = self.license
        return SourceLicense(name=lic.name, credentialed=lic.credentialed, url=lic.url)


def find_metadata(root: Path, configured: Path | None) -> Path | None:
    """The configured metadata file, else ``metadata.csv`` / ``metadata.jsonl`` in the root."""
    if configured is not None:
        return configured
    return next((root / n for n in METADATA_NAMES if (root / n).is_file()), None)


class FolderSource(Source):
    """A source over a ``root`` folder with an optional ``metadata`` file (dicom, image-folder):
    its config is a ``LabelledSourceConfig`` with those two fields."""

    @property
    def root(self) -> Path:
        return self.resolve(self.config.root)

    def license_info(self) -> SourceLicense:
        return self.config.license_of(self.root)

    def metadata_path(self) -> Path | None:
        """The configured metadata file, else ``metadata.csv`` / ``.jsonl`` in the root."""
        configured = self.config.metadata and self.resolve(self.config.metadata)
        return find_metadata(self.root, configured)


def read_metadata(path: Path, required: Iterable[str] = ()) -> list[dict[str, str]]:
    """Rows of a metadata CSV (header row) or JSONL file (one object a line), as text.

    Raises ``SourceError`` naming the file when it is missing, unreadable or lacks a column.
    """
    if not path.is_file():
        raise SourceError(f"metadata file not found: {path}")
    try:
        text = path.read_text("utf-8-sig")
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            rows = [_json_row(line, n) for n, line in enumerate(text.splitlines(), 1)
                    if line.strip()]
        else:
            reader = csv.DictReader(io.StringIO(text))
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
                    for row in reader]
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise SourceError(f"cannot read metadata {path}: {exc}") from None
    columns = set().union(*(r.keys() for r in rows)) if rows else set()
    missing = [c for c in required if c not in columns]
    if missing:
        raise SourceError(f"metadata {path} lacks columns: {', '.join(missing)}")
    return rows


def _json_row(line: str, number: int) -> dict[str, str]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError(f"line {number} is not a JSON object")
    return {str(k).strip(): _text(v) for k, v in value.items()}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value).strip()


@dataclass
class Candidate:
    """An input found while planning, before the split and limit are applied."""

    id: str
    split: str  # the split as the data give it ("" when they give none)
    fields: dict[str, Any]
    where: str  # names the input in messages


def select(candidates: Iterable[Candidate], config: LabelledSourceConfig, *, index: int,
           seed: int, plan: SourcePlan | None = None) -> SourcePlan:
    """Turn candidates into planned refs: one per id, a known split, the splits and limit
    chosen; every other candidate becomes a rejection with its reason."""
    plan = plan or SourcePlan()
    wanted = config.wanted_splits()
    seen: set[str] = set()

    def turn_away(c: Candidate, reason: str, message: str) -> None:
        plan.rejected.append(Outcome(c.id, "rejected", "select", reason, message, index))

    for c in candidates:
        raw = c.split.strip().lower()
        if c.id in seen:
            turn_away(c, "duplicate_id", f"id {c.id!r} already taken: {c.where}")
            continue
        seen.add(c.id)
        if raw and raw not in SPLIT_NAMES:
            turn_away(c, "unknown_split", f"split {c.split!r} is not train, validation or "
                                          f"test: {c.where}")
            continue
        split = SPLIT_NAMES[raw] if raw else seeded_split(c.id, seed, config.split_fractions)
        if split not in wanted:
            turn_away(c, "split_not_selected", f"split {split!r} not selected: {c.where}")
        elif config.limit is not None and len(plan.refs) >= config.limit:
            turn_away(c, "beyond_limit", f"limit of {config.limit} inputs reached: {c.where}")
        else:
            plan.refs.append(StudyRef(id=c.id, split=split, source_index=index,
                                      fields=c.fields))
    return plan


def findings_text(text: str | None, require: bool, where: str) -> str:
    """The findings, or ``no_findings`` when they are required and empty."""
    text = (text or "").strip()
    if not text and require:
        raise InputRejected("no_findings", f"no findings text for {where}")
    return text


def mask_png(data: bytes | None, path: str, image_size: tuple[int, int],
             out_size: tuple[int, int], where: str) -> bytes:
    """A diagnostic-region mask as 8-bit PNG bytes (255 = region, 0 = background).

    ``data`` is the mask file's bytes (``None``: the file is missing). The mask is read as
    grayscale: 0/1 masks and 0/255 masks both work (otherwise values >= 128 are the region).
    It must be the size of the image as found (``image_size``, width x height); it is resized
    with nearest-neighbour to ``out_size`` when the ``image`` option resized the image.
    """
    if data is None:
        raise InputRejected("missing_mask", f"mask file not found: {path} (for {where})")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            size = img.size
            gray = np.asarray(img if img.mode == "L" else img.convert("L"))
    except _DECODE_ERRORS as exc:
        raise InputRejected("unreadable_mask", f"cannot decode mask {path}: {exc}") from None
    if size != image_size:
        raise InputRejected(
            "mask_size_mismatch",
            f"mask {path} is {size[0]}x{size[1]} but its image is "
            f"{image_size[0]}x{image_size[1]}: {where}")
    region = gray > 0 if gray.max(initial=0) <= 1 else gray >= 128
    if out_size != image_size:
        region = np.asarray(Image.fromarray(region).resize(out_size, Image.Resampling.NEAREST))
    return encode_png(region)


def read_optional(path: Path) -> bytes | None:
    """A file's bytes, or ``None`` when it is not there."""
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header (the pixels are decoded elsewhere)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except _DECODE_ERRORS:
        return (0, 0)  # prepare_image rejects the file with the decoder's reason
