"""Synthetic chest radiograph phantoms: scenes, rendering, reports and the MIMIC layout."""

from advbench.phantoms.rendering import density, render
from advbench.phantoms.scene import (
    FINDING_KINDS,
    Anatomy,
    Finding,
    Scene,
    sample_anatomy,
    sample_finding,
    sample_scene,
)

__all__ = [
    "FINDING_KINDS",
    "Anatomy",
    "Finding",
    "Scene",
    "density",
    "render",
    "sample_anatomy",
    "sample_finding",
    "sample_scene",
]
