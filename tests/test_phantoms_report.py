"""Phantom reports: MIMIC-like text whose concept states match the scene and the guide."""

from __future__ import annotations

import numpy as np
import pytest

from advbench.concepts.vocabulary import CONCEPTS, STATES
from advbench.phantoms import (
    FINDING_KINDS,
    Finding,
    Scene,
    chexpert_labels,
    phrases,
    sample_anatomy,
    sample_scene,
    write_report,
)
from advbench.sources.base import CHEXPERT_COLUMNS

# The concepts that must be positive or uncertain when the scene has a finding of the kind.
EXPECTED = {
    "pleural_effusion": ("effusion",),
    "consolidation": ("consolidation", "pneumonitis"),
    "patchy_opacity": ("opacity",),
    "nodule": ("nodule",),
    "mass": ("mass",),
    "hilar_enlargement": ("irregular_hilum",),
    "adenopathy": ("adenopathy",),
    "metastases": ("irregular_parenchyma", "nodule"),
    "cardiomegaly": ("enlarged_heart",),
    "pneumothorax": ("absent_lung_markings",),
    "diaphragm_flattening": ("irregular_diaphragm",),
}
SEEN = ("positive", "uncertain")


def _reports(n: int, seed: int = 0):
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, i]))
        yield scene, write_report(scene, np.random.default_rng([seed, i, 1]))


def test_report_has_mimic_sections_and_wrapping():
    for _, report in _reports(40):
        text = report.text
        assert text.startswith("                                 FINAL REPORT\n")
        for header in (" EXAMINATION:  CHEST (PA AND LAT)", " INDICATION:", " TECHNIQUE:",
                       " COMPARISON:", " FINDINGS:", " IMPRESSION:"):
            assert header in text
        assert text.index(" FINDINGS:") < text.index(" IMPRESSION:")
        assert all(len(line) <= 79 for line in text.splitlines())
        assert "___" in text  # de-identification placeholders as in MIMIC
        assert report.findings.strip() and report.impression.strip()


def test_concepts_agree_with_the_scene():
    for scene, report in _reports(400, seed=1):
        c = report.concepts
        assert list(c) == list(CONCEPTS) and set(c.values()) <= set(STATES)
        if scene.is_normal:
            assert c["unremarkable"] == "positive"
            assert all(c[k] in ("negative", "absent") for k in CONCEPTS if k != "unremarkable")
            continue
        assert c["unremarkable"] in ("negative", "absent")
        for f in scene.findings:
            assert any(c[k] in SEEN for k in EXPECTED[f.kind]), (f.kind, report.text)
        # Nothing is stated present that the scene does not show.
        shown = {k for f in scene.findings for k in phrases()["touches"][f.kind]}
        for k in CONCEPTS:
            if k != "unremarkable" and c[k] in SEEN:
                assert k in shown, (k, report.text)


def test_every_kind_and_its_hedges_can_be_written():
    anatomy = sample_anatomy(np.random.default_rng(0))
    states: dict[str, set[str]] = {}
    for kind in FINDING_KINDS:
        for side in ("right", "left", "bilateral"):
            for size in ("small", "moderate", "large"):
                scene = Scene(anatomy, (Finding(kind, side=side, size=size,
                                                params={"count": 2}),))
                for i in range(40):
                    report = write_report(scene, np.random.default_rng(i))
                    for k in EXPECTED[kind]:
                        states.setdefault(k, set()).add(report.concepts[k])
    assert states["effusion"] >= {"positive", "uncertain"}
    assert states["absent_lung_markings"] >= {"positive", "uncertain"}
    assert states["enlarged_heart"] >= {"positive", "uncertain"}


def test_negations_and_normal_statements_appear():
    normal = [r for s, r in _reports(200, seed=2) if s.is_normal]
    assert normal
    assert any("No acute cardiopulmonary process." in r.text for r in normal) or any(
        "lungs are clear" in r.text.lower() for r in normal)
    negative = [r for _, r in _reports(200, seed=2)
                if "negative" in (r.concepts["effusion"], r.concepts["absent_lung_markings"])]
    assert len(negative) > 50


def test_reports_vary():
    texts = {r.findings for _, r in _reports(100, seed=3)}
    assert len(texts) > 80


def test_chexpert_labels_follow_the_report():
    effusion = Scene(sample_anatomy(np.random.default_rng(1)),
                     (Finding("pleural_effusion", side="left", size="large"),))
    report = write_report(effusion, np.random.default_rng(0))
    labels = chexpert_labels(effusion, report.concepts, report.labels)
    assert list(labels) == list(CHEXPERT_COLUMNS)
    assert labels["Pleural Effusion"] == 1.0 and labels["No Finding"] is None
    assert set(labels.values()) <= {1.0, 0.0, -1.0, None}

    normal = Scene(effusion.anatomy)
    report = write_report(normal, np.random.default_rng(0))
    labels = chexpert_labels(normal, report.concepts, report.labels)
    assert labels["No Finding"] == 1.0
    assert labels["Cardiomegaly"] == 0.0  # every normal report states the heart size

    hedged = {c: "absent" for c in CONCEPTS} | {"absent_lung_markings": "uncertain",
                                                "pneumonitis": "negative", "infection": "positive"}
    labels = chexpert_labels(effusion, hedged, {"Edema": 0.0})
    assert labels["Pneumothorax"] == -1.0 and labels["Pneumonia"] == 1.0
    assert labels["Edema"] == 0.0 and labels["Support Devices"] is None
    with pytest.raises(KeyError):
        chexpert_labels(effusion, hedged, {"Not A Column": 1.0})


def test_the_concept_extractor_reads_back_what_the_report_says():
    """The reports are the extractor's ground truth; they must use phrases it maps exactly."""
    extract = pytest.importorskip("advbench.concepts.extract").extract
    for _, report in _reports(300, seed=4):
        assert extract(report.text).concepts == report.concepts, report.text
