"""Phantom scenes: sampling, validation and the JSON round trip that image edits rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advbench.phantoms import (
    FINDING_KINDS,
    Anatomy,
    Finding,
    Scene,
    sample_finding,
    sample_scene,
)


def test_scene_json_round_trip_keeps_everything():
    rng = np.random.default_rng(0)
    for _ in range(30):
        scene = sample_scene(rng)
        text = json.dumps(scene.to_dict())
        back = Scene.from_dict(json.loads(text))
        assert back == scene
        assert Scene.from_json(scene.to_json()) == scene


def test_from_dict_ignores_the_report_concepts_kept_beside_the_scene():
    scene = sample_scene(np.random.default_rng(1), findings=["nodule"])
    data = scene.to_dict() | {"report_concepts": {"nodule": "positive"}}
    assert Scene.from_dict(data) == scene


def test_from_dict_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="format"):
        Scene.from_dict({"format": "something-else/9", "anatomy": {}, "findings": []})


def test_sample_scene_is_about_a_third_normal_with_one_to_three_findings():
    rng = np.random.default_rng(7)
    scenes = [sample_scene(rng) for _ in range(600)]
    normal = sum(s.is_normal for s in scenes) / len(scenes)
    assert 0.27 <= normal <= 0.39
    counts = {len(s.findings) for s in scenes if not s.is_normal}
    assert counts <= {1, 2, 3} and {1, 2} <= counts
    kinds = {k for s in scenes for k in s.kinds}
    assert kinds == set(FINDING_KINDS)
    for s in scenes:  # no kind twice in one scene
        assert len(set(s.kinds)) == len(s.kinds)


def test_forced_findings_and_forced_normal():
    rng = np.random.default_rng(3)
    scene = sample_scene(rng, findings=["pneumothorax", "mass"], co_occurrence=False)
    assert scene.kinds == ("pneumothorax", "mass")
    assert sample_scene(rng, normal=True).is_normal
    with pytest.raises(ValueError):
        sample_scene(rng, normal=True, findings=["mass"])


def test_sampled_findings_have_kind_specific_parameters():
    rng = np.random.default_rng(5)
    nodule = sample_finding("nodule", rng)
    assert 1 <= nodule.params["count"] <= 3 and 5 <= nodule.params["diameter_mm"] <= 28
    mass = sample_finding("mass", rng)
    assert 3.0 <= mass.params["diameter_cm"] <= 8.0
    mets = sample_finding("metastases", rng)
    assert mets.side == "bilateral" and mets.params["count"] >= 12


def test_finding_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="kind"):
        Finding("fracture")
    with pytest.raises(ValueError, match="side"):
        Finding("mass", side="middle")
    with pytest.raises(ValueError, match="size"):
        Finding("mass", size="huge")


def test_edit_helpers_keep_the_anatomy():
    scene = Scene(Anatomy(seed=4))
    edited = scene.add(Finding("pleural_effusion", side="left", size="small"))
    assert edited.anatomy == scene.anatomy and edited.kinds == ("pleural_effusion",)
    assert edited.without("pleural_effusion") == scene
