"""The plain records that flow between stages: planned inputs, loaded studies, derived
samples, outcomes.

Every input a source sees ends as exactly one ``Outcome`` (accepted, rejected with a reason,
or failed with an error), and so does every case a derived config plans, so that each config's
counts always add up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

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
    # What was imaged: a DICOM-style modality code (chest radiographs, CR or DX, are "XR")
    # and the body part, so attack families and readers can select by modality.
    modality: str = "XR"
    body_part: str = "chest"
    # The diagnostic region, if the source gives one: 8-bit PNG bytes of the image's size,
    # 255 in the region and 0 in the background.
    mask_bytes: bytes | None = None

    @property
    def is_chest_radiograph(self) -> bool:
        """The 17 concepts and six classes describe chest radiograph reports; other studies'
        text (a "mass" in a breast ultrasound) must not be read as one."""
        return self.modality.upper() == "XR" and self.body_part.lower() == "chest"


@dataclass
class Sample:
    """One row of a derived config: a case made from an accepted study (one study → N samples).

    Pixels are held losslessly, as an array (uint8 or uint16, H×W or H×W×C) or as PNG bytes,
    and are written as PNG: JPEG would destroy an ε = 4/255 perturbation.
    """

    id: str
    parent_id: str  # the ``clean`` row (study image) it was made from
    config: str
    kind: str  # variant / perturbation kind, e.g. ``identity``, ``over_diagnosis``
    split: str
    modality: str
    body_part: str
    image: np.ndarray | bytes
    mask: np.ndarray | bytes | None = None  # what the case changed or protected, if anything
    text: dict[str, str | None] = field(default_factory=dict)  # reports, findings, prompts
    fields: dict[str, Any] = field(default_factory=dict)  # the config's own columns


@dataclass(frozen=True)
class Outcome:
    """What happened to one input or planned case. ``reason`` is a short code; ``message``
    names the input. ``config`` is the release config the outcome counts for."""

    id: str
    status: Status
    stage: str
    reason: str | None = None
    message: str | None = None
    source_index: int = 0
    config: str = "clean"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InputRejected(Exception):
    """A bad input (missing file, corrupt image, empty report): recorded, the build goes on."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message
