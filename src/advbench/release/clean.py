"""The ``clean`` config: source studies with image, report, concept states, labels, provenance.

Features are declared once here; the Parquet schema (with the Hugging Face feature metadata
that makes ``load_dataset`` return PIL images) and the card's ``dataset_info`` come from them.
Source images keep their bytes exactly as the source gave them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from advbench.concepts.vocabulary import CLASSES, CONCEPTS
from advbench.images import image_suffix
from advbench.records import Study
from advbench.release.configs import RELEASE_CONFIGS, ReleaseConfig, SummaryTable
from advbench.sources.base import CHEXPERT_COLUMNS

if TYPE_CHECKING:
    import datasets
    import duckdb

    from advbench.concepts.extract import ConceptResult

CONFIG_NAME = "clean"


@dataclass
class AcceptedStudy:
    """A loaded study with its extracted concepts: a ``clean`` row, and the input of every
    derived config."""

    study: Study
    concepts: ConceptResult
    source_index: int = 0


def chexpert_key(column: str) -> str:
    """``"Enlarged Cardiomediastinum"`` → ``"enlarged_cardiomediastinum"`` (SQL-friendly)."""
    return re.sub(r"\W+", "_", column.strip().lower())


@cache
def features() -> datasets.Features:
    from datasets import Features, Image, List, Value

    text = Value("string")
    return Features(
        {
            "id": text,
            "source": text,
            "subject_id": text,
            "study_id": text,
            "image_id": text,
            "view_position": text,
            "modality": text,
            "body_part": text,
            "image": Image(),
            "mask": Image(),
            "width": Value("int32"),
            "height": Value("int32"),
            "report": text,
            **{f"concept_{c}": text for c in CONCEPTS},
            **{f"label_{c}": text for c in CLASSES},
            "positive_classes": List(text),
            "mentions": List(
                {
                    "concept": text,
                    "state": text,
                    "section": text,
                    "sentence": text,
                    "start": Value("int32"),
                    "end": Value("int32"),
                    "text": text,
                    "trigger": text,
                }
            ),
            "chexpert": {chexpert_key(c): Value("float64") for c in CHEXPERT_COLUMNS},
            "scene": text,
            "image_path": text,
            "report_path": text,
        }
    )


def row(study: Study, result: ConceptResult) -> dict[str, Any]:
    """One release row from a loaded study and its extracted concepts. Concepts, labels and
    mentions are null for a study that is not a chest radiograph: the vocabulary is a chest
    radiograph report's."""
    suffix = image_suffix(study.image_bytes) or ".jpg"
    chest = study.is_chest_radiograph
    return {
        "id": study.id,
        "source": study.source,
        "subject_id": study.subject_id,
        "study_id": study.study_id,
        "image_id": study.image_id,
        "view_position": study.view_position,
        "modality": study.modality,
        "body_part": study.body_part,
        "image": {"bytes": study.image_bytes, "path": f"{study.image_id}{suffix}"},
        "mask": None if study.mask_bytes is None else {
            "bytes": study.mask_bytes,
            "path": f"{study.image_id}-mask{image_suffix(study.mask_bytes) or '.png'}"},
        "width": study.width,
        "height": study.height,
        "report": study.report,
        **{f"concept_{c}": result.concepts[c] if chest else None for c in CONCEPTS},
        **{f"label_{c}": result.labels[c] if chest else None for c in CLASSES},
        "positive_classes": [c for c in CLASSES if chest and result.labels[c] == "positive"],
        "mentions": [] if not chest else [
            {
                "concept": m.concept,
                "state": m.state,
                "section": m.section,
                "sentence": m.sentence,
                "start": m.start,
                "end": m.end,
                "text": m.text,
                "trigger": m.trigger,
            }
            for m in result.mentions
        ],
        "chexpert": {chexpert_key(c): study.chexpert.get(c) for c in CHEXPERT_COLUMNS},
        "scene": json.dumps(study.scene, sort_keys=True) if study.scene is not None else None,
        "image_path": study.image_path,
        "report_path": study.report_path,
    }


@RELEASE_CONFIGS.register(CONFIG_NAME)
class CleanConfig(ReleaseConfig):
    default_name = CONFIG_NAME
    description = "the accepted source studies, with concept states and class labels"

    def features(self) -> datasets.Features:
        return features()

    def row(self, record: AcceptedStudy) -> dict[str, Any]:
        return row(record.study, record.concepts)

    def summary(self, con: duckdb.DuckDBPyConnection, rows: str) -> list[SummaryTable]:
        labels = ", ".join(f"count(*) FILTER (WHERE label_{c} = 'positive')" for c in CLASSES)
        (counts,) = con.sql(f"SELECT {labels} FROM {rows}").fetchall()
        classes = SummaryTable("studies per class", ["class", "studies (positive)"],
                               [[c, n] for c, n in zip(CLASSES, counts, strict=True)])
        order = ("positive", "uncertain", "negative", "absent")
        states = SummaryTable("concept states", ["concept", *order])
        for c in CONCEPTS:
            found = dict(con.sql(f"SELECT concept_{c}, count(*) FROM {rows} GROUP BY 1").fetchall())
            states.rows.append([c, *(found.get(s, 0) for s in order)])
        return [classes, states]
