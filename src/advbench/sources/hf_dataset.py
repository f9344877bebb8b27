"""A local Hugging Face dataset: a folder written by ``save_to_disk`` or a folder of Parquet.

``save_to_disk`` folders (a Dataset or a DatasetDict) are opened with ``datasets.load_from_disk``;
Parquet files with ``datasets.load_dataset("parquet", data_files=...)``, grouped into splits by
their names (``train-00000.parquet``, ``data/test.parquet``, ``validation/x.parquet``; other
files form one unsplit group). Nothing is fetched: both read local files only.

Columns are named in the config: the image (an ``Image`` feature, raw bytes or a file path),
the findings text, and optionally a mask, the modality, the body part, the split and the id.
Modality and body part may be constants instead. A row's split is its ``split_column`` value,
else its DatasetDict split or Parquet group, else (unsplit data) the seeded split. Ids are the
``id_column`` value, else ``<split group>-<row number>``. Images are kept as encoded bytes
(the ``Image`` feature is read without decoding), then the ``image`` option applies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from advbench.records import InputRejected, Study, StudyRef
from advbench.sources.base import (
    SOURCES,
    SPLIT_NAMES,
    Source,
    SourceError,
    SourceLicense,
    SourcePlan,
)
from advbench.sources.metadata import (
    Candidate,
    LabelledSourceConfig,
    findings_text,
    image_size,
    mask_png,
    modality_code,
    read_optional,
    select,
)

UNSPLIT = "unsplit"  # the group of rows whose data name no split


class HfDatasetConfig(LabelledSourceConfig):
    kind: Literal["hf-dataset"] = "hf-dataset"
    path: Path = Field(description="Folder written by save_to_disk, or holding Parquet files.")
    format: Literal["auto", "saved", "parquet"] = Field(
        default="auto", description="saved (save_to_disk), parquet, or auto: found out.")
    image_column: str = Field(default="image", description="Column of images.")
    text_column: str = Field(default="findings", description="Column of findings text.")
    mask_column: str | None = Field(default=None, description="Column of masks, if any.")
    modality_column: str | None = Field(default=None, description="Column of modality codes.")
    body_part_column: str | None = Field(default=None, description="Column of body parts.")
    split_column: str | None = Field(default=None, description="Column of split names.")
    id_column: str | None = Field(default=None, description="Column of ids.")
    cache_dir: Path | None = Field(
        default=None,
        description="Where datasets caches Parquet converted to Arrow; default: its own cache.")


def _split_of_file(path: Path, folder: Path) -> str:
    """The split a Parquet file's name or folder gives, in Hugging Face's names."""
    parts = [*path.relative_to(folder).parent.parts, re.split(r"[-_.]", path.name)[0]]
    for part in reversed(parts):
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return UNSPLIT


def open_datasets(path: Path, fmt: str, cache_dir: Path | None) -> dict[str, Any]:
    """The dataset's row groups by split key (a DatasetDict's keys, or the Parquet groups)."""
    import datasets

    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    if fmt == "saved" or (fmt == "auto" and saved):
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:  # datasets raises many kinds for a bad folder
            raise SourceError(f"cannot load dataset saved in {path}: {exc}") from None
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {UNSPLIT: loaded}
    files = sorted(path.rglob("*.parquet"))
    if not files:
        raise SourceError(f"no save_to_disk dataset and no Parquet files in {path}")
    groups: dict[str, list[str]] = {}
    for file in files:
        groups.setdefault(_split_of_file(file, path), []).append(str(file))
    try:
        loaded = datasets.load_dataset("parquet", data_files=groups,
                                       cache_dir=None if cache_dir is None else str(cache_dir))
    except Exception as exc:
        raise SourceError(f"cannot read the Parquet files in {path}: {exc}") from None
    return dict(loaded)


def _undecoded(dataset: Any, columns: list[str]) -> Any:
    """The dataset with its image columns read as {bytes, path}, not decoded to PIL."""
    from datasets import Image

    for column in columns:
        if isinstance(dataset.features.get(column), Image):
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset


@SOURCES.register("hf-dataset")
class HfDataset(Source):
    kind = "hf-dataset"
    Config = HfDatasetConfig
    config: HfDatasetConfig
    _groups: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.resolve(self.config.path)

    def license_info(self) -> SourceLicense:
        return self.config.license_of(self.path)

    def groups(self) -> dict[str, Any]:
        """The opened dataset, once per process (Arrow files are memory-mapped)."""
        if self._groups is None:
            if not self.path.is_dir():
                raise SourceError(f"dataset folder is not a folder: {self.path}")
            cache = self.config.cache_dir and self.resolve(self.config.cache_dir)
            opened = open_datasets(self.path, self.config.format, cache)
            image_columns = [c for c in (self.config.image_column, self.config.mask_column) if c]
            self._groups = {k: _undecoded(v, image_columns) for k, v in opened.items()}
        return self._groups

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_groups": None}  # each process opens its own

    def plan(self) -> SourcePlan:
        cfg = self.config
        wanted = [cfg.image_column, cfg.text_column, cfg.mask_column, cfg.modality_column,
                  cfg.body_part_column, cfg.split_column, cfg.id_column]
        candidates = []
        for key, dataset in self.groups().items():
            missing = [c for c in wanted if c and c not in dataset.column_names]
            if missing:
                raise SourceError(f"dataset {self.path} ({key}) lacks columns: "
                                  f"{', '.join(missing)}; it has {', '.join(dataset.column_names)}")
            ids = list(dataset[cfg.id_column]) if cfg.id_column else None
            splits = list(dataset[cfg.split_column]) if cfg.split_column else None
            group_split = "" if key == UNSPLIT else key
            for row in range(len(dataset)):
                study_id = str(ids[row]) if ids is not None else f"{key}-{row:06d}"
                split = str(splits[row] or "") if splits is not None else group_split
                candidates.append(Candidate(study_id, split, {"group": key, "row": row},
                                            f"{self.path} [{key}] row {row}"))
        return select(candidates, cfg, index=self.index, seed=self.seed)

    def load(self, ref: StudyRef) -> Study:
        cfg = self.config
        key, number = ref.fields["group"], ref.fields["row"]
        where = f"{self.path} [{key}] row {number}"
        try:
            row = self.groups()[key][number]
        except (KeyError, IndexError):
            raise InputRejected("missing_image", f"no such row (changed since planning?): "
                                                 f"{where}") from None
        data, image_where = self._bytes(row[cfg.image_column], where)
        if data is None:
            raise InputRejected("missing_image", f"image not found: {image_where}")
        findings = findings_text(row[cfg.text_column], cfg.require_findings, where)
        image = self.prepare_image(data, image_where)
        mask = None
        if cfg.mask_column and row[cfg.mask_column] is not None:
            mask_data, mask_where = self._bytes(row[cfg.mask_column], f"{where} mask")
            mask = mask_png(mask_data, mask_where, image_size(data),
                            (image.width, image.height), where)
        modality = row[cfg.modality_column] if cfg.modality_column else None
        body = (row[cfg.body_part_column] if cfg.body_part_column else None) or cfg.body_part
        return Study(
            id=ref.id,
            source=self.kind,
            split=ref.split,
            subject_id=ref.id,
            study_id=ref.id,
            image_id=ref.id,
            view_position="",
            image_bytes=image.data,
            image_path=image_where,
            width=image.width,
            height=image.height,
            report=findings,
            report_path=f"{key}[{number}].{cfg.text_column}",
            extra={"image_format": image.format},
            modality=modality_code(modality, cfg.modality),
            body_part=str(body).strip().lower(),
            mask_bytes=mask,
        )

    def _bytes(self, value: Any, where: str) -> tuple[bytes | None, str]:
        """Encoded bytes of an image cell (Image feature, bytes or a path) and where it is."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return bytes(value["bytes"]), f"{where} ({value.get('path') or 'embedded'})"
            value = value.get("path")
        if isinstance(value, bytes | bytearray):
            return bytes(value), where
        if isinstance(value, str) and value:
            path = Path(value) if Path(value).is_absolute() else self.path / value
            return read_optional(path), str(path)
        if value is None:
            return None, where
        raise InputRejected("unsupported_image",
                            f"image cell of type {type(value).__name__} is not bytes, a path or "
                            f"an Image: {where}")
