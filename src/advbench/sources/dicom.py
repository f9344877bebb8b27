"""A folder of DICOM files (searched recursively), read with pydicom, stored as 8-bit PNG.

Every file under the root is an input, except hidden files, DICOMDIR, the metadata file, the
masks it names and files matching ``exclude``: a file that is not DICOM is turned away
(``not_dicom``), not skipped silently. Planning reads headers only; loading decodes one frame:

- grayscale: RescaleSlope/Intercept first (top level or the enhanced multi-frame functional
  groups), then a linear window (DICOM's formula): the config's ``window`` (a preset name from
  ``imaging.yaml`` or a centre and width) wins, else the file's WindowCenter/WindowWidth (first
  value if several), else the frame's full range. MONOCHROME1 is inverted after windowing.
- RGB / YBR: kept as 8-bit colour; PALETTE COLOR: its lookup table applied.
- multi-frame: the ``frame`` chosen (default the middle one).

The image is written losslessly as PNG, then the ``image`` option applies. Modality comes from
(0008,0060) as a short code (CR and DX become XR) and the body part from BodyPartExamined,
lower-cased; a metadata row's ``modality`` / ``body_part`` win, the config's are the fallback.

Findings come from a metadata sidecar (CSV or JSONL) whose rows name a file by ``path``
(relative to the root) or ``sop_instance_uid``, with ``findings`` and optional ``split`` and
``mask``. Without findings an input is rejected (``no_findings``) unless ``require_findings`` is
false. Ids are the SOPInstanceUID, else a hash of the relative path.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from advbench.images import encode_png
from advbench.records import InputRejected, Outcome, Study, StudyRef
from advbench.sources.base import PHANTOM_MARKER, SOURCES, SourceError, SourcePlan
from advbench.sources.metadata import (
    Candidate,
    FolderSource,
    LabelledSourceConfig,
    findings_text,
    imaging_data,
    mask_png,
    modality_code,
    path_id,
    read_metadata,
    read_optional,
    select,
)

_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"}
# Where enhanced multi-frame files keep what older files keep at the top level.
_GROUPS = {"RescaleSlope": "PixelValueTransformationSequence",
           "RescaleIntercept": "PixelValueTransformationSequence",
           "WindowCenter": "FrameVOILUTSequence", "WindowWidth": "FrameVOILUTSequence"}


class Window(BaseModel):
    """A linear window in the data's units after rescale (Hounsfield units for CT)."""

    model_config = ConfigDict(extra="forbid")
    center: float
    width: float = Field(gt=0)


class DicomConfig(LabelledSourceConfig):
    kind: Literal["dicom"] = "dicom"
    root: Path = Field(description="Folder searched recursively for DICOM files.")
    metadata: Path | None = Field(
        default=None,
        description="Sidecar CSV or JSONL (relative to the config's folder like root): path "
                    "(relative to root) or sop_instance_uid -> findings, split, mask (and "
                    "modality, body_part); default: metadata.csv / .jsonl in root if any.",
    )
    window: str | Window | None = Field(
        default=None,
        description="Window preset (lung, mediastinum, soft_tissue, abdomen, liver, bone, "
                    "brain, subdural, stroke) or {center, width}; default: the file's tags.",
    )
    frame: int | None = Field(default=None, ge=0,
                              description="Frame of multi-frame files; default: the middle one.")
    exclude: list[str] = Field(
        default_factory=list,
        description="fnmatch patterns of paths (relative to root; '*' crosses folders) to skip.",
    )

    @field_validator("window")
    @classmethod
    def _known_preset(cls, value: str | Window | None) -> str | Window | None:
        presets = imaging_data()["window_presets"]
        if isinstance(value, str) and value not in presets:
            raise ValueError(f"unknown window preset {value!r}; known: {', '.join(presets)}")
        return value

    def fixed_window(self) -> tuple[float, float] | None:
        """The configured (centre, width), if any."""
        if self.window is None:
            return None
        if isinstance(self.window, str):
            preset = imaging_data()["window_presets"][self.window]
            return float(preset["center"]), float(preset["width"])
        return self.window.center, self.window.width


def apply_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI window (PS3.3 C.11.2.1.2.1) to 8 bits."""
    if width <= 1:
        return np.where(values > center - 0.5, 255, 0).astype(np.uint8)
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _first(value: Any) -> float | None:
    """A numeric tag value, the first if multi-valued; None when absent or empty."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def frame_value(ds: Any, keyword: str, frame: int) -> float | None:
    """A tag's value for one frame: top level, else per-frame, else shared functional group."""
    value = _first(ds.get(keyword))
    if value is not None or keyword not in _GROUPS:
        return value
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        for item in group.get(_GROUPS[keyword]) or []:
            value = _first(item.get(keyword))
            if value is not None:
                return value
    return None


def render_frame(ds: Any, pixels: np.ndarray, frame: int,
                 window: tuple[float, float] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """One decoded frame as 8-bit pixels (gray or RGB) and how it was made."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric in _COLOUR:
        return _to_8_bits(pixels, int(ds.get("BitsStored", 8))), {"photometric": photometric}
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(pixels, ds)
        bits = 16 if rgb.dtype.itemsize > 1 else 8
        return _to_8_bits(rgb, bits), {"photometric": photometric}
    slope = frame_value(ds, "RescaleSlope", frame)
    intercept = frame_value(ds, "RescaleIntercept", frame)
    values = pixels.astype(np.float64) * (1.0 if slope is None else slope) + (intercept or 0.0)
    how = "config"
    if window is None:
        center = frame_value(ds, "WindowCenter", frame)
        width = frame_value(ds, "WindowWidth", frame)
        if center is not None and width is not None and width > 0:
            window, how = (center, width), "tags"
        else:
            low, high = float(values.min()), float(values.max())
            window, how = ((low + high) / 2 + 0.5, max(high - low + 1, 1.0)), "range"
    out = apply_window(values, *window)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out, {"photometric": photometric, "window": list(window), "window_from": how}


def _to_8_bits(pixels: np.ndarray, bits: int) -> np.ndarray:
    if pixels.dtype == np.uint8 or bits <= 8:
        return pixels.astype(np.uint8)
    return (pixels.astype(np.uint32) >> (bits - 8)).clip(0, 255).astype(np.uint8)


@SOURCES.register("dicom")
class Dicom(FolderSource):
    kind = "dicom"
    Config = DicomConfig
    config: DicomConfig

    def _sidecar(self) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]], set[str]]:
        """Metadata rows by relative path and by SOPInstanceUID, and the mask paths named."""
        meta = self.metadata_path()
        if meta is None:
            return {}, {}, set()
        rows = read_metadata(meta)
        if rows and not ({"path", "sop_instance_uid"} & set(rows[0])):
            raise SourceError(f"metadata {meta} needs a path or sop_instance_uid column")
        by_path: dict[str, dict[str, str]] = {}
        by_uid: dict[str, dict[str, str]] = {}
        for number, row in enumerate(rows, 1):
            row = {**row, "row_number": str(number)}
            for key, index in (("path", by_path), ("sop_instance_uid", by_uid)):
                value = row.get(key, "").replace("\\", "/")
                if value and value in index:
                    raise SourceError(f"metadata {meta} names {key} {value!r} twice")
                if value:
                    index[value] = row
        masks = {r["mask"].replace("\\", "/") for r in rows if r.get("mask")}
        return by_path, by_uid, masks

    def _files(self, skip: set[str]) -> list[tuple[Path, str]]:
        root = self.root
        out = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if (not path.is_file() or any(p.startswith(".") for p in Path(rel).parts)
                    or path.name in ("DICOMDIR", PHANTOM_MARKER) or rel in skip
                    or any(fnmatch.fnmatch(rel, pat) for pat in self.config.exclude)):
                continue
            out.append((path, rel))
        return out

    def plan(self) -> SourcePlan:
        from pydicom import dcmread

        root = self.root
        if not root.is_dir():
            raise SourceError(f"DICOM root is not a folder: {root}")
        by_path, by_uid, masks = self._sidecar()
        meta = self.metadata_path()
        skip = set(masks)
        if meta is not None and meta.resolve().is_relative_to(root.resolve()):
            skip.add(meta.resolve().relative_to(root.resolve()).as_posix())
        plan = SourcePlan()
        candidates = []
        for path, rel in self._files(skip):
            try:
                ds = dcmread(path, stop_before_pixels=True)
            except Exception as exc:  # pydicom raises many kinds for a file that is not DICOM
                plan.rejected.append(Outcome(path_id(rel, "dcm"), "rejected", "select",
                                             "not_dicom", f"not a DICOM file: {path} ({exc})",
                                             self.index))
                continue
            uid = str(ds.get("SOPInstanceUID", "") or "").strip()
            row = by_path.get(rel) or by_uid.get(uid) or {}
            candidates.append(Candidate(
                uid or path_id(rel, "dcm"), row.get("split", ""),
                {"path": rel, "row": row,
                 "subject_id": str(ds.get("PatientID", "") or ""),
                 "study_id": str(ds.get("StudyInstanceUID", "") or ""),
                 "view_position": str(ds.get("ViewPosition", "") or "")}, str(path)))
        return select(candidates, self.config, index=self.index, seed=self.seed, plan=plan)

    def load(self, ref: StudyRef) -> Study:
        from pydicom import dcmread
        from pydicom.pixels import pixel_array

        rel: str = ref.fields["path"]
        row: dict[str, str] = ref.fields["row"]
        path = self.root / rel
        if not path.is_file():
            raise InputRejected("missing_image", f"DICOM file not found: {path}")
        findings = findings_text(row.get("findings"), self.config.require_findings,
                                 f"{path} (no metadata row with findings)")
        try:
            ds = dcmread(path)
        except Exception as exc:  # a file changed since planning, or truncated
            raise InputRejected("unreadable_image", f"cannot read DICOM {path}: {exc}") from None
        if "PixelData" not in ds:
            raise InputRejected("no_pixel_data", f"DICOM file has no pixel data: {path}")
        frames = int(_first(ds.get("NumberOfFrames")) or 1)
        frame = frames // 2 if self.config.frame is None else self.config.frame
        if frame >= frames:
            raise InputRejected("frame_out_of_range",
                                f"frame {frame} asked of a {frames}-frame file: {path}")
        try:
            pixels = pixel_array(ds, index=frame if frames > 1 else None)
            out, how = render_frame(ds, pixels, frame, self.config.fixed_window())
        except Exception as exc:  # decoders raise many kinds (missing plugin, bad data)
            raise InputRejected("unreadable_image",
                                f"cannot decode pixel data of {path}: {exc}") from None
        image = self.prepare_image(encode_png(out), str(path))
        mask = None
        if row.get("mask"):
            mask_path = self.root / row["mask"].replace("\\", "/")
            mask = mask_png(read_optional(mask_path), str(mask_path),
                            (out.shape[1], out.shape[0]), (image.width, image.height), str(path))
        meta = self.metadata_path()
        raw_modality = str(ds.get("Modality", "") or "")
        body = row.get("body_part") or str(ds.get("BodyPartExamined", "") or "")
        return Study(
            id=ref.id,
            source=self.kind,
            split=ref.split,
            subject_id=ref.fields["subject_id"],
            study_id=ref.fields["study_id"],
            image_id=ref.id,
            view_position=ref.fields["view_position"],
            image_bytes=image.data,
            image_path=rel,
            width=image.width,
            height=image.height,
            report=findings,
            report_path=f"{meta.name}#row={row['row_number']}" if row and meta else "",
            extra={"image_format": image.format, "frame": frame, "frames": frames,
                   "dicom_modality": raw_modality, "mask_path": row.get("mask") or None, **how},
            modality=modality_code(row.get("modality") or raw_modality, self.config.modality),
            body_part=(body.strip() or self.config.body_part).lower(),
            mask_bytes=mask,
        )
