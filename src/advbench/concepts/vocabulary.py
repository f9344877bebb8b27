"""The concept and class vocabulary shared by extraction, phantoms, attacks and releases.

Read once from ``vocabulary.yaml`` so that the ids live in one data file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml


@cache
def _vocabulary() -> dict:
    text = resources.files("advbench.concepts").joinpath("vocabulary.yaml").read_text("utf-8")
    return yaml.safe_load(text)


STATES: tuple[str, ...] = tuple(_vocabulary()["states"])
"""Concept states, strongest first is not implied: see ``STATE_PRIORITY``."""

CLASSES: tuple[str, ...] = tuple(_vocabulary()["classes"])
CONCEPTS: tuple[str, ...] = tuple(c["id"] for c in _vocabulary()["concepts"])
CONCEPT_CLASS: dict[str, str] = {c["id"]: c["class"] for c in _vocabulary()["concepts"]}

# Report-level aggregation of several mentions: positive > uncertain > negative > absent.
STATE_PRIORITY: dict[str, int] = {"positive": 3, "uncertain": 2, "negative": 1, "absent": 0}

DISEASE_CONCEPTS: tuple[str, ...] = tuple(c for c in CONCEPTS if CONCEPT_CLASS[c] != "healthy")


def concepts_of_class(name: str) -> tuple[str, ...]:
    """The concept ids of one class, in vector order."""
    if name not in CLASSES:
        raise KeyError(f"unknown class {name!r}; known: {', '.join(CLASSES)}")
    return tuple(c for c in CONCEPTS if CONCEPT_CLASS[c] == name)
