"""What every source provides: a config model, a plan of inputs, and a loader for one input.

A source plans cheaply (ids and file locations, no pixels) so the build can cut the plan into
shards; each shard task then loads its studies, possibly in another process or machine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from advbench.records import Outcome, Study, StudyRef
from advbench.registry import Registry
from advbench.sources.image import ImageOptions, PreparedImage, prepare_image

CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)


class SourceConfig(BaseModel):
    """Base of every source's config block; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    image: ImageOptions = Field(
        default_factory=ImageOptions,
        description="How images are stored: kept as found (default), or resized/re-encoded.",
    )


# Split names as sources write them (MIMIC says "validate") -> Hugging Face split names.
SPLIT_NAMES: dict[str, str] = {"train": "train", "validate": "validation",
                               "validation": "validation", "test": "test"}


class SplitSelection(SourceConfig):
    """A source config with a ``splits`` choice (MIMIC's names or Hugging Face's)."""

    splits: list[str] | None = Field(
        default=None, description="Splits to keep (train, validate, test); default: all."
    )

    @field_validator("splits")
    @classmethod
    def _known_splits(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if name not in SPLIT_NAMES:
                raise ValueError(f"unknown split {name!r}; use train, validate or test")
        return value

    def wanted_splits(self) -> set[str]:
        """The Hugging Face split names selected."""
        return {SPLIT_NAMES[s] for s in self.splits or SPLIT_NAMES}


class SourceError(Exception):
    """A source that cannot be used at all (missing root, missing metadata file)."""


@dataclass
class SourcePlan:
    """The inputs a source will load, and those it turned away while selecting."""

    refs: list[StudyRef] = field(default_factory=list)
    rejected: list[Outcome] = field(default_factory=list)


@dataclass(frozen=True)
class SourceLicense:
    name: str
    credentialed: bool
    url: str | None = None


SYNTHETIC_LICENSE = SourceLicense(
    name="CC0-1.0 (synthetic phantoms made by advbench)", credentialed=False
)
# A folder written by ``advbench phantoms`` carries this file: its data are synthetic.
PHANTOM_MARKER = "ADVBENCH_PHANTOMS.json"


class Source(ABC):
    """A registered kind of input data. Subclasses set ``kind`` and ``Config``."""

    kind: ClassVar[str]
    Config: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig, *, index: int, base_dir: Path, seed: int):
        self.config = config
        self.index = index
        self.base_dir = base_dir
        self.seed = seed

    @abstractmethod
    def plan(self) -> SourcePlan:
        """List the inputs; may raise ``SourceError`` when the source is unusable."""

    @abstractmethod
    def load(self, ref: StudyRef) -> Study:
        """Load one input; raise ``InputRejected`` for bad data, naming the file."""

    @abstractmethod
    def license_info(self) -> SourceLicense:
        """The license of the data read; a credentialed one must never be published openly."""

    def prepare_image(self, data: bytes, where: str) -> PreparedImage:
        """Decode an input's image (to the end of its data) and apply this source's ``image``
        option."""
        return prepare_image(data, self.config.image, where)

    def resolve(self, path: Path) -> Path:
        """Config paths are relative to the config file's folder."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)


SOURCES: Registry[type[Source]] = Registry("source kind")

