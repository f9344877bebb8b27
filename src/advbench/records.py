"""The plain records that flow between stages: planned inputs, loaded studies, outcomes.

Every input a source sees ends as exactly one ``Outcome`` (accepted, rejected with a reason,
or failed with an error), so that a build's counts always add up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["accepted", "rejected", "failed"]

# Hugging Face split names; MIMIC's "validate" becomes "validation".
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class StudyRef:
    """A planned input: enough to load one study later, in any process (no pixels yet)."""

    id: str
    split: str
    source_index: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    """One loaded study: an image (encoded bytes as found), its report and its provenance."""

    id: str
    source: str
    split: str
    subject_id: str
    study_id: str
    image_id: str
    view_position: str
    image_bytes: bytes
    image_path: str
    width: int
    height: int
    report: str
    report_path: str
    chexpert: dict[str, float | None] = field(default_factory=dict)
    scene: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What happened to one input. ``reason`` is a short code; ``message`` names the input."""

    id: str
    status: Status
    stage: str
    reason: str | None = None
    message: str | None = None
    source_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InputRejected(Exception):
    """A bad input (missing file, corrupt image, empty report): recorded, the build goes on."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
