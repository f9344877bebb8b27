"""Synthetic chest radiograph phantoms: scenes, rendering, reports and the MIMIC layout.

A phantom study is a pure function of (index, seed): a scene (anatomy + findings) is drawn,
rendered as a PA (and lateral) radiograph and described by a MIMIC-style report whose concept
states are known exactly. Editing a scene's findings and re-rendering keeps the anatomy.
"""

from advbench.phantoms.geometry import Geometry, geometry
from advbench.phantoms.layout import LayoutSummary, write_mimic_layout
from advbench.phantoms.rendering import density, render, render_lateral
from advbench.phantoms.report import PhantomReport, chexpert_labels, phrases, write_report
from advbench.phantoms.scene import (
    FINDING_KINDS,
    SIDES,
    SIZES,
    ZONES,
    Anatomy,
    Finding,
    Scene,
    sample_anatomy,
    sample_finding,
    sample_scene,
)
from advbench.phantoms.study import (
    PhantomStudy,
    encode_jpeg,
    generate_study,
    study_ids,
    study_split,
)

__all__ = [
    "FINDING_KINDS",
    "SIDES",
    "SIZES",
    "ZONES",
    "Anatomy",
    "Finding",
    "Geometry",
    "LayoutSummary",
    "PhantomReport",
    "PhantomStudy",
    "Scene",
    "chexpert_labels",
    "density",
    "encode_jpeg",
    "generate_study",
    "geometry",
    "phrases",
    "render",
    "render_lateral",
    "sample_anatomy",
    "sample_finding",
    "sample_scene",
    "study_ids",
    "study_split",
    "write_mimic_layout",
    "write_report",
]
