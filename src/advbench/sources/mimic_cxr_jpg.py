"""MIMIC-CXR-JPG with its reports, read from the layout PhysioNet distributes.

Inputs are the rows of the metadata CSV (one per image). Selection (views, splits, one image
per study, limit) turns some away with a reason; loading turns away missing or corrupt images
and missing, empty or unreadable reports. Nothing is dropped silently.

Each planned study's report is looked up while planning and carried in the plan
(``StudyRef.fields["report"]``, a ``ReportLocation`` or ``None``), so loading a shard reads
only its own reports and never indexes the reports zip or folder again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, field_validator

from advbench.records import InputRejected, Outcome, Study, StudyRef
from advbench.sources.base import (
    CHEXPERT_COLUMNS,
    PHANTOM_MARKER,
    SOURCES,
    SPLIT_NAMES,
    SYNTHETIC_LICENSE,
    Source,
    SourceError,
    SourceLicense,
    SourcePlan,
    SplitSelection,
)
from advbench.sources.reports import ReportLocation, ReportStore, ReportStoreError, read_report

MIMIC_LICENSE = SourceLicense(
    name="PhysioNet Credentialed Health Data License 1.5.0",
    credentialed=True,
    url="https://physionet.org/content/mimic-cxr-jpg/",
)
_REPORT_LOCATIONS = ("mimic-cxr-reports.zip", "mimic-cxr-reports", "reports", "files")


class MimicCxrJpgConfig(SplitSelection):
    kind: Literal["mimic-cxr-jpg"] = "mimic-cxr-jpg"
    root: Path = Field(description="MIMIC-CXR-JPG root: holds files/ and the CSV files.")
    reports: Path | None = Field(
        default=None,
        description="Reports folder or mimic-cxr-reports.zip; default: looked for in root.",
    )
    views: list[str] = Field(default=["PA"], description="ViewPosition values to keep.")
    one_image_per_study: bool = Field(default=True, description="Keep one image per study.")
    limit: int | None = Field(default=None, gt=0, description="Keep at most this many images.")

    @field_validator("views")
    @classmethod
    def _upper_views(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one view is needed, e.g. [PA]")
        return [v.strip().upper() for v in value]


def read_csv(root: Path, stem: str) -> pd.DataFrame:
    """Read ``<stem>.csv.gz`` or ``<stem>.csv``; ids stay strings, as written."""
    for name in (f"{stem}.csv.gz", f"{stem}.csv"):
        path = root / name
        if path.exists():
            try:
                return pd.read_csv(path, dtype=str, keep_default_na=False)
            except Exception as exc:  # pandas raises many kinds for a bad file
                raise SourceError(f"cannot read {path}: {exc}") from exc
    raise SourceError(f"missing {stem}.csv.gz (or .csv) in {root}")


def _chexpert_value(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value in (1.0, 0.0, -1.0) else None


def _labels(chexpert: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """study id → CheXpert label per column (1, 0, -1 or None)."""
    columns = [c for c in CHEXPERT_COLUMNS if c in chexpert.columns]
    out = {}
    for row in zip(chexpert["study_id"], *(chexpert[c] for c in columns), strict=True):
        values = dict(zip(columns, map(_chexpert_value, row[1:]), strict=True))
        out[row[0]] = {c: values.get(c) for c in CHEXPERT_COLUMNS}
    return out


@SOURCES.register("mimic-cxr-jpg")
class MimicCxrJpg(Source):
    kind = "mimic-cxr-jpg"
    Config = MimicCxrJpgConfig
    config: MimicCxrJpgConfig

    def license_info(self) -> SourceLicense:
        if (self.root / PHANTOM_MARKER).is_file():
            return SYNTHETIC_LICENSE
        return MIMIC_LICENSE

    @property
    def root(self) -> Path:
        return self.resolve(self.config.root)

    def reports_path(self) -> Path:
        if self.config.reports is not None:
            return self.resolve(self.config.reports)
        for name in _REPORT_LOCATIONS:
            if (self.root / name).exists():
                return self.root / name
        raise SourceError(f"no reports found in {self.root}; set `reports:` to a folder or zip")

    def plan(self) -> SourcePlan:
        root = self.root
        if not root.is_dir():
            raise SourceError(f"MIMIC-CXR-JPG root is not a folder: {root}")
        meta = read_csv(root, "mimic-cxr-2.0.0-metadata")
        split = read_csv(root, "mimic-cxr-2.0.0-split")
        chexpert = read_csv(root, "mimic-cxr-2.0.0-chexpert")
        for frame, name, cols in (
            (meta, "metadata", ("dicom_id", "subject_id", "study_id", "ViewPosition")),
            (split, "split", ("dicom_id", "split")),
            (chexpert, "chexpert", ("subject_id", "study_id")),
        ):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise SourceError(f"{name} CSV in {root} lacks columns: {', '.join(missing)}")

        # an unusable reports folder or zip stops the build here, not per study
        with self._open_reports() as reports:
            return self._select(meta, split, chexpert, reports)

    def _select(self, meta: pd.DataFrame, split: pd.DataFrame, chexpert: pd.DataFrame,
                reports: ReportStore) -> SourcePlan:
        """Choose the images to load. Columns are read as plain lists (the real metadata CSV
        has 377k rows; per-row dicts cost seconds), and CheXpert labels are parsed for the
        chosen studies only."""
        split_of = dict(zip(split["dicom_id"], split["split"], strict=True))
        views = self.config.views
        wanted_splits = self.config.wanted_splits()
        view_rank = {v: i for i, v in enumerate(views)}

        plan = SourcePlan()
        chosen_study: set[str] = set()
        chosen: list[tuple[str, str, str, str, str]] = []
        rows = sorted(
            zip(meta["subject_id"], meta["study_id"],
                (v.strip().upper() for v in meta["ViewPosition"]), meta["dicom_id"],
                strict=True),
            key=lambda r: (r[0], r[1], view_rank.get(r[2], len(views)), r[3]),
        )

        def turn_away(dicom: str, reason: str, message: str) -> None:
            plan.rejected.append(Outcome(dicom, "rejected", "select", reason, message,
                                         self.index))

        for subject, study, view, dicom in rows:
            raw_split = split_of.get(dicom)
            if view not in view_rank:
                turn_away(dicom, "view_not_selected", f"view {view or '(empty)'!r} not in {views}")
            elif raw_split is None or raw_split not in SPLIT_NAMES:
                turn_away(dicom, "no_split", f"image {dicom} has no split in the split CSV")
            elif SPLIT_NAMES[raw_split] not in wanted_splits:
                turn_away(dicom, "split_not_selected", f"split {raw_split!r} not selected")
            elif self.config.one_image_per_study and study in chosen_study:
                turn_away(dicom, "extra_image_of_study", f"study s{study} already has an image")
            elif self.config.limit is not None and len(chosen) >= self.config.limit:
                turn_away(dicom, "beyond_limit", f"limit of {self.config.limit} images reached")
            else:
                chosen_study.add(study)
                chosen.append((subject, study, view, dicom, SPLIT_NAMES[raw_split]))

        labels_of = _labels(chexpert[chexpert["study_id"].isin(chosen_study)])
        for subject, study, view, dicom, hf_split in chosen:
            plan.refs.append(StudyRef(
                id=dicom,
                split=hf_split,
                source_index=self.index,
                fields={
                    "subject_id": subject,
                    "study_id": study,
                    "view_position": view,
                    "chexpert": labels_of.get(study, {}),
                    "report": reports.locate(study, subject),
                },
            ))
        return plan

    def image_path(self, ref: StudyRef) -> Path:
        subject = ref.fields["subject_id"]
        return (self.root / "files" / f"p{subject[:2]}" / f"p{subject}"
                / f"s{ref.fields['study_id']}" / f"{ref.id}.jpg")

    def _open_reports(self) -> ReportStore:
        try:
            return ReportStore(self.reports_path())
        except ReportStoreError as exc:
            raise SourceError(str(exc)) from exc

    def load(self, ref: StudyRef) -> Study:
        path = self.image_path(ref)
        if not path.is_file():
            raise InputRejected("missing_image", f"image file not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputRejected("unreadable_image", f"cannot read {path}: {exc}") from None
        image = self.prepare_image(data, str(path))

        study = ref.fields["study_id"]
        location: ReportLocation | None = ref.fields["report"]
        if location is None:
            raise InputRejected("missing_report",
                                f"no report for study s{study} in {self._reports_where()}")
        report = read_report(location)
        if not report.strip():
            raise InputRejected("empty_report", f"report is empty: {location.where()}")

        scene_file = path.with_suffix(".json")  # phantom layouts keep the scene beside the image
        scene = None
        if scene_file.is_file():
            scene = json.loads(scene_file.read_text("utf-8"))
        return Study(
            id=ref.id,
            source=self.kind,
            split=ref.split,
            subject_id=ref.fields["subject_id"],
            study_id=study,
            image_id=ref.id,
            view_position=ref.fields["view_position"],
            image_bytes=image.data,
            image_path=str(path.relative_to(self.root)),
            width=image.width,
            height=image.height,
            report=report,
            report_path=location.where(relative=True),
            chexpert=ref.fields["chexpert"],
            scene=scene,
            extra={"image_format": image.format},
            modality="XR",
            body_part="chest",
        )

    def _reports_where(self) -> str:
        try:
            return str(self.reports_path())
        except SourceError:  # the reports went away after planning
            return str(self.root)
