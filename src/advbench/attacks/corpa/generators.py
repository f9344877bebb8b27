"""Image generators of the CoRPA family: a registry, like the attacks.

A generator turns a study and one planned perturbation into candidate images, each with the
mask of what it edited and the settings that made it. The attack keeps the first candidate
that passes (the image check, when one is configured).

- ``phantom``: re-renders the study's phantom scene with the target's findings: anatomy and
  noise are the study's own, so the candidate differs from the original only where a finding
  was added or removed; candidates vary the added findings' side, zone and size. The edited
  scene is the exact ground truth of the image.
- ``none``: reports only; the image is the study's own, unchanged.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field

from advbench.attacks.corpa.planner import PRESENT, Perturbation
from advbench.concepts.vocabulary import CONCEPTS
from advbench.images import decode_pixels
from advbench.records import Study
from advbench.registry import Registry


class GeneratorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str
    candidates: int = Field(default=3, ge=1, le=16,
                            description="Candidate images per perturbation.")


@dataclass
class Candidate:
    """One candidate image of a perturbation."""

    pixels: np.ndarray
    mask: np.ndarray | None  # 255 where the image was edited; None when nothing was
    settings: dict[str, Any] = field(default_factory=dict)
    scene: dict[str, Any] | None = None


class Generator(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[GeneratorConfig]]

    def __init__(self, config: GeneratorConfig):
        self.config = config

    @abstractmethod
    def candidates(self, study: Study, perturbation: Perturbation, report: str,
                   seed: int) -> Iterator[Candidate]:
        """Candidate images, best guess first; an unusable study raises ``ValueError``."""


GENERATORS: Registry[type[Generator]] = Registry("generator")


class NoneConfig(GeneratorConfig):
    kind: Literal["none"] = "none"
    candidates: int = Field(default=1, ge=1, le=1)


@GENERATORS.register("none")
class NoImageEdit(Generator):
    kind = "none"
    Config = NoneConfig

    def candidates(self, study: Study, perturbation: Perturbation, report: str,
                   seed: int) -> Iterator[Candidate]:
        yield Candidate(decode_pixels(study.image_bytes), None)


class PhantomConfig(GeneratorConfig):
    kind: Literal["phantom"] = "phantom"


_SIDE = re.compile(r"\b(right|left|bilateral|both)\b", re.IGNORECASE)
_SIZE = re.compile(r"\b(small|moderate|large|tiny|trace|massive|mild|severe)\b", re.IGNORECASE)
_OWN_SIDE = {"cardiomegaly", "metastases"}  # midline / both lungs whatever is asked
_SIZE_OF = {"tiny": "small", "trace": "small", "mild": "small", "massive": "large",
            "severe": "large"}


@cache
def finding_of() -> dict[str, str]:
    """Concept → the phantom finding kind that shows it (``phantom_findings.yaml``)."""
    text = resources.files("advbench.attacks.corpa").joinpath(
        "phantom_findings.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def wanted_findings(concepts: dict[str, str]) -> set[str]:
    """The finding kinds a scene must hold to show these concept states."""
    kinds = finding_of()
    return {kinds[c] for c in CONCEPTS if c in kinds and concepts.get(c) in PRESENT}


@GENERATORS.register("phantom")
class PhantomGenerator(Generator):
    kind = "phantom"
    Config = PhantomConfig

    def candidates(self, study: Study, perturbation: Perturbation, report: str,
                   seed: int) -> Iterator[Candidate]:
        from advbench.phantoms.rendering import render
        from advbench.phantoms.scene import SIDES, SIZES, Scene, sample_finding

        if not study.scene:
            raise ValueError(f"{study.id} has no phantom scene (the phantom generator needs a "
                             "phantom source)")
        scene = Scene.from_dict(study.scene)
        size = study.width if study.width == study.height else max(study.width, study.height)
        original = decode_pixels(study.image_bytes)
        if original.shape[:2] != (size, size):
            raise ValueError(f"{study.id}: image {original.shape[1]}x{original.shape[0]} is "
                             f"not the phantom's {size}x{size} render")
        base = render(scene, size)  # the study's scene as rendered: the edit is the difference
        want = wanted_findings(perturbation.target_concepts)
        kept = [f for f in scene.findings if f.kind in want]
        adding = sorted(want - {f.kind for f in kept})
        hints = _hints(report, perturbation)
        for n in range(self.config.candidates):
            rng = np.random.default_rng([seed, n])
            added = []
            for kind in adding:
                side, sz = hints.get(kind, (None, None))
                if kind in _OWN_SIDE:
                    side = None
                elif n and not side:  # later candidates vary what the report leaves open
                    side = str(rng.choice(SIDES[:2]))
                if n and not sz:
                    sz = str(rng.choice(SIZES))
                added.append(sample_finding(kind, rng, side=side, size=sz))
            edited = scene.with_findings([*kept, *added])
            rendered = render(edited, size)
            changed = rendered != base
            # outside the edit the pixels are the original's, exactly (its JPEG included)
            pixels = np.where(changed, rendered, original) if original.ndim == 2 else rendered
            mask = (changed * 255).astype(np.uint8) if changed.any() else None
            record = edited.to_dict()
            yield Candidate(pixels, mask, {"variant": n, "added": [f.to_dict() for f in added],
                                           "removed": sorted({f.kind for f in scene.findings}
                                                             - want)}, record)
            if not adding:  # nothing varies between candidates: one is all there is
                return


def _hints(report: str, perturbation: Perturbation) -> dict[str, tuple[str | None, str | None]]:
    """Side and size of each added finding, as the adversarial report words it (so the image
    and the report agree): the first sentence of the report naming an added concept."""
    from advbench.concepts.extract import extract

    kinds = finding_of()
    out: dict[str, tuple[str | None, str | None]] = {}
    added = set(perturbation.added)
    for m in extract(report).mentions:
        if m.concept not in added or m.state != "positive":
            continue
        kind = kinds[m.concept]
        if kind in out:
            continue
        side = _SIDE.search(m.sentence)
        sz = _SIZE.search(m.sentence)
        s = side.group(1).lower() if side else None
        out[kind] = ("bilateral" if s == "both" else s,
                     _SIZE_OF.get(sz.group(1).lower(), sz.group(1).lower()) if sz else None)
    return out
