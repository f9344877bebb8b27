"""The CoRPA image check with open_clip: a tiny randomly initialised CLIP, its config and
weights written to a folder, loaded back with nothing downloaded, judging target vs source."""

from __future__ import annotations

import numpy as np
import pytest

from advbench.attacks.corpa.image_check import ClipCheckConfig, make_checker
from tests.conftest import write_open_clip_local_dir, write_tiny_open_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("clip"), "tiny-clip")


def test_clip_check_loads_local_weights_and_scores_target_against_source(tiny_clip):
    cfg, weights = tiny_clip
    checker = make_checker(ClipCheckConfig(model="tiny-clip", pretrained=str(weights),
                                           model_config_file=cfg, device="cpu"))
    image = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    v = checker.verdict(image, ["pleural_effusion"], ["healthy"])
    assert v["model"] == "clip:tiny-clip"
    assert v["target_score"] + v["source_score"] == pytest.approx(1.0, abs=1e-5)
    assert v["passed"] == (v["target_score"] > v["source_score"])
    # swapping target and source swaps the scores: the prompts are what is compared
    w = checker.verdict(image, ["healthy"], ["pleural_effusion"])
    assert w["target_score"] == pytest.approx(v["source_score"], abs=1e-5)
    assert checker.prompt(["cardiomegaly", "pleural_effusion"]) == (
        "a chest radiograph showing a pleural effusion and an enlarged heart")


def test_clip_check_loads_a_local_dir_bundle_like_the_same_files(tiny_clip, tmp_path):
    cfg, weights = tiny_clip
    bundle = make_checker(ClipCheckConfig(
        model="tiny-clip", pretrained=write_open_clip_local_dir(tmp_path / "b", cfg, weights),
        device="cpu"))
    files = make_checker(ClipCheckConfig(model="tiny-clip", pretrained=str(weights),
                                         model_config_file=cfg, device="cpu"))
    image = np.random.default_rng(1).integers(0, 256, (64, 64), dtype=np.uint8)
    v, w = (c.verdict(image, ["cardiomegaly"], ["healthy"]) for c in (bundle, files))
    assert v["target_score"] == pytest.approx(w["target_score"], abs=1e-6)


def test_clip_check_names_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.bin"):
        make_checker(ClipCheckConfig(model="ViT-B-16", pretrained=str(tmp_path / "nowhere.bin")))


def test_a_build_keeps_only_rows_the_clip_check_passed(tiny_clip, tmp_path):
    import json as _json

    from advbench.config import load_config
    from advbench.demo import write_phantoms
    from advbench.pipeline import build_release
    from tests.conftest import write_config

    cfg_file, weights = tiny_clip
    root = tmp_path / "phantoms"
    write_phantoms(root, 8, seed=7, size=64)
    check = {"kind": "clip", "model": "tiny-clip", "pretrained": str(weights),
             "model_config_file": str(cfg_file), "device": "cpu"}
    top = {"workers": 1, "attacks": [{"kind": "corpa", "splits": ["train", "validate", "test"],
                                      "image_check": check,
                                      "generator": {"kind": "phantom", "candidates": 2}}]}
    cfg = load_config(write_config(tmp_path / "b.yaml", root, tmp_path / "out", top=top,
                                   views=["PA"]))
    build_release(cfg)
    manifest = _json.loads((cfg.release_dir() / "manifest.json").read_text())
    counts = manifest["configs"]["corpa"]["counts"]
    assert counts["planned"] == counts["accepted"] + counts["rejected"] + counts["failed"]
    assert counts["failed"] == 0
    from datasets import load_dataset

    for split in manifest["configs"]["corpa"]["splits"]:
        for row in load_dataset(str(cfg.release_dir()), "corpa", split=split):
            if row["edit_mask"] is None:  # nothing edited: nothing to check
                assert row["image_check"] is None
                continue
            assert row["image_check"]["model"] == "clip:tiny-clip"
            assert row["image_check"]["passed"] is True


@pytest.mark.parametrize(("answer", "target", "source", "passed"), [
    ({"cancer", "cardiomegaly"}, ["cancer", "pleural_effusion"], ["cancer"], False),  # missed
    ({"cancer", "pleural_effusion"}, ["cancer", "pleural_effusion"], ["cancer"], True),
    ({"pleural_effusion"}, ["cancer", "pleural_effusion"], ["cancer"], True),  # untouched class
    ({"pneumonia"}, ["pneumonia"], ["pneumonia"], True),  # inner class: the class is found
    ({"healthy"}, ["pneumonia"], ["pneumonia"], False),
    ({"cancer", "pleural_effusion", "cardiomegaly"}, ["cancer", "pleural_effusion"], ["cancer"],
     True),  # an unrelated false positive is the checker's error
    ({"pneumonia"}, ["pneumonia"], ["pneumonia", "cancer"], True),  # removal seen
    ({"pneumonia", "cancer"}, ["pneumonia"], ["pneumonia", "cancer"], False),  # still there
    ({"healthy"}, ["healthy"], ["cancer"], True),
    ({"pneumothorax"}, ["healthy"], ["cancer"], False),  # a normal target shows no disease
])
def test_classifier_check_asks_for_the_added_classes_and_no_removed_class(
        answer, target, source, passed):
    from advbench.attacks.corpa.image_check import sees_target

    assert sees_target(answer, target, source) is passed
