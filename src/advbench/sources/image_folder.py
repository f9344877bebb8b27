"""A folder of images (PNG, JPEG, TIFF, BMP) described by a metadata CSV or JSONL file.

The metadata file lists the inputs, one row each: ``path`` (relative to the root) and
``findings`` (the report text), and optionally ``modality``, ``body_part``, ``mask`` (a
diagnostic-region mask, relative to the root), ``split``, ``id``, ``subject_id``, ``study_id``
and ``view_position``; other columns are kept in ``Study.extra["metadata"]``. Images on disk that
the metadata does not list are ignored: the metadata, not the folder, is the list of inputs.
Colour images stay colour (the file's bytes are kept, unless the ``image`` option re-encodes).

What this source shares with the dicom and hf-dataset sources (config fields, the metadata
reader, the seeded split, the selection, the mask check) is in ``advbench.sources.metadata``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from advbench.records import InputRejected, Outcome, Study, StudyRef
from advbench.sources.base import SOURCES, SourceError, SourcePlan
from advbench.sources.metadata import (
    Candidate,
    FolderSource,
    LabelledSourceConfig,
    findings_text,
    image_size,
    mask_png,
    modality_code,
    path_id,
    read_metadata,
    read_optional,
    select,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

KNOWN_COLUMNS = ("path", "findings", "modality", "body_part", "mask", "split", "id",
                 "subject_id", "study_id", "view_position")


class ImageFolderConfig(LabelledSourceConfig):
    kind: Literal["image-folder"] = "image-folder"
    root: Path = Field(description="Folder of images; metadata paths are relative to it.")
    metadata: Path | None = Field(
        default=None,
        description="Metadata CSV or JSONL (path, findings, modality, body_part, mask, split, "
                    "id), relative to the config's folder like root; default: metadata.csv or "
                    "metadata.jsonl in root. Image and mask paths in it are relative to root.",
    )


@SOURCES.register("image-folder")
class ImageFolder(FolderSource):
    kind = "image-folder"
    Config = ImageFolderConfig
    config: ImageFolderConfig

    def metadata_path(self) -> Path:
        """As for every folder source, but required: the metadata lists the inputs."""
        found = super().metadata_path()
        if found is None:
            raise SourceError(f"no metadata.csv or metadata.jsonl in {self.root}; set "
                              "`metadata:`")
        return found

    def plan(self) -> SourcePlan:
        root = self.root
        if not root.is_dir():
            raise SourceError(f"image folder root is not a folder: {root}")
        meta = self.metadata_path()
        rows = read_metadata(meta, required=("path", "findings"))
        plan = SourcePlan()
        candidates = []
        for number, row in enumerate(rows, 1):
            rel = row["path"].replace("\\", "/")
            where = f"{meta.name} row {number} ({rel or 'no path'})"
            study_id = row.get("id") or path_id(rel, "img")
            if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
                plan.rejected.append(Outcome(
                    study_id, "rejected", "select", "unsupported_format",
                    f"not a PNG, JPEG, TIFF or BMP file name: {where}", self.index))
                continue
            candidates.append(Candidate(study_id, row.get("split", ""),
                                        {"row": row, "row_number": number}, where))
        return select(candidates, self.config, index=self.index, seed=self.seed, plan=plan)

    def load(self, ref: StudyRef) -> Study:
        row: dict[str, str] = ref.fields["row"]
        rel = row["path"].replace("\\", "/")
        path = self.root / rel
        data = read_optional(path)
        if data is None:
            raise InputRejected("missing_image", f"image file not found: {path}")
        findings = findings_text(row.get("findings"), self.config.require_findings, str(path))
        image = self.prepare_image(data, str(path))
        mask = None
        if row.get("mask"):
            mask_rel = row["mask"].replace("\\", "/")
            mask = mask_png(read_optional(self.root / mask_rel), str(self.root / mask_rel),
                            image_size(data), (image.width, image.height), str(path))
        meta = self.metadata_path()
        extra_columns = {k: v for k, v in row.items() if k not in KNOWN_COLUMNS}
        return Study(
            id=ref.id,
            source=self.kind,
            split=ref.split,
            subject_id=row.get("subject_id") or ref.id,
            study_id=row.get("study_id") or ref.id,
            image_id=ref.id,
            view_position=row.get("view_position", ""),
            image_bytes=image.data,
            image_path=rel,
            width=image.width,
            height=image.height,
            report=findings,
            report_path=f"{meta.name}#row={ref.fields['row_number']}",
            extra={"image_format": image.format, "mask_path": row.get("mask") or None,
                   "metadata": extra_columns},
            modality=modality_code(row.get("modality"), self.config.modality),
            body_part=(row.get("body_part") or self.config.body_part).strip().lower(),
            mask_bytes=mask,
        )
