"""The ``clean`` config: source studies with image, report, concept states, labels, provenance.

Features are declared once here; the Parquet schema (with the Hugging Face feature metadata
that makes ``load_dataset`` return PIL images) and the card's ``dataset_info`` come from them.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from advbench.concepts.vocabulary import CLASSES, CONCEPTS
from advbench.records import Study
from advbench.sources.base import CHEXPERT_COLUMNS

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

    from advbench.concepts.extract import ConceptResult

CONFIG_NAME = "clean"


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
            "image": Image(),
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


def arrow_schema() -> pa.Schema:
    """The Parquet schema, carrying the features in its ``huggingface`` metadata."""
    return features().arrow_schema


def row(study: Study, result: ConceptResult) -> dict[str, Any]:
    """One release row from a loaded study and its extracted concepts."""
    suffix = PurePosixPath(study.image_path).suffix or ".jpg"
    return {
        "id": study.id,
        "source": study.source,
        "subject_id": study.subject_id,
        "study_id": study.study_id,
        "image_id": study.image_id,
        "view_position": study.view_position,
        "image": {"bytes": study.image_bytes, "path": f"{study.image_id}{suffix}"},
        "width": study.width,
        "height": study.height,
        "report": study.report,
        **{f"concept_{c}": result.concepts[c] for c in CONCEPTS},
        **{f"label_{c}": result.labels[c] for c in CLASSES},
        "positive_classes": [c for c in CLASSES if result.labels[c] == "positive"],
        "mentions": [
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


def table(rows: list[dict[str, Any]]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=arrow_schema())
