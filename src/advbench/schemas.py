"""JSON Schemas written to ``schemas/``: the build config and one line of concepts output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from advbench.concepts.vocabulary import CLASSES, CONCEPTS, STATES

State = Literal[tuple(STATES)]  # type: ignore[valid-type]


class MentionModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concept: Literal[tuple(CONCEPTS)]  # type: ignore[valid-type]
    state: State
    section: str
    sentence: str
    start: int = Field(ge=0, description="Offset of the phrase in the original report text.")
    end: int = Field(ge=0)
    text: str
    trigger: str | None = Field(description="The trigger phrase that decided the state.")


ConceptStates = create_model(
    "ConceptStates", __config__=ConfigDict(extra="forbid"), **{c: (State, ...) for c in CONCEPTS}
)
ClassStates = create_model(
    "ClassStates", __config__=ConfigDict(extra="forbid"), **{c: (State, ...) for c in CLASSES}
)


class ConceptsLine(BaseModel):
    """One line of ``advbench concepts`` output."""

    model_config = ConfigDict(extra="forbid")
    id: str
    concepts: ConceptStates  # type: ignore[valid-type]
    labels: ClassStates  # type: ignore[valid-type]
    mentions: list[MentionModel]


def all_schemas() -> dict[str, dict[str, Any]]:
    from advbench.config import config_json_schema

    concepts = ConceptsLine.model_json_schema()
    concepts["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return {
        "build-config.schema.json": config_json_schema(),
        "concepts-output.schema.json": concepts,
    }


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = out / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", "utf-8")
        written.append(path)
    return written
