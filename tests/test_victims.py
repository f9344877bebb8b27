"""Victim classifiers: each kind loads a real model from a local file (tiny, randomly
initialised, saved in the test), answers in the six classes, and serves the query loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advbench.concepts.vocabulary import CLASSES
from advbench.models.demo import auroc_of, build_model, evaluate, scene_labels
from advbench.models.victims import (
    DISEASES,
    STANDARD_LABEL_MAP,
    VICTIMS,
    labels_from_scores,
    load_victim,
    to_batch,
)

LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Mass", "Pneumothorax", "Pneumonia"]


def _images(n=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(n)]


def _config(kind, **kw):
    return VICTIMS.get(kind).Config(kind=kind, **kw)


def test_timm_victim_loads_a_local_checkpoint_and_answers_in_classes(tmp_path):
    import timm

    model = timm.create_model("resnet10t", pretrained=False, num_classes=len(LABELS), in_chans=1)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    v = load_victim(_config("timm", architecture="resnet10t", checkpoint=tmp_path / "w.pt",
                            labels=LABELS, input_size=64, in_chans=1, mean=[0.5], std=[0.25],
                            device="cpu"))
    scores = v.scores(_images())
    assert scores.shape == (3, len(CLASSES))
    assert np.all((scores >= 0) & (scores <= 1))
    # Atelectasis maps onto no class; the others do
    assert v._columns["cardiomegaly"] == [1] and v._columns["cancer"] == [3]
    answers = v.predict(_images())
    assert all(set(a) <= set(CLASSES) and a for a in answers)


def test_torchscript_victim_and_its_preprocessing_inside(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2))
    torch.jit.save(torch.jit.script(net), tmp_path / "m.ts")
    v = load_victim(_config("torchscript", file=tmp_path / "m.ts",
                            labels=["Pneumothorax", "Effusion"], input_size=32))
    x = to_batch(_images(2, size=80))
    assert v.preprocess(x).shape == (2, 1, 32, 32)  # any stored size is resized inside
    assert v.scores(_images(2, size=80)).shape == (2, 6)


def test_torchxrayvision_victims_load_a_local_state_dict_without_download(tmp_path):
    import torchxrayvision as xrv

    labels = xrv.models.model_urls["densenet121-res224-all"]["labels"]
    net = xrv.models.DenseNet(weights=None, num_classes=len(labels))
    torch.save(net.state_dict(), tmp_path / "xrv.pt")
    v = load_victim(_config("torchxrayvision", weights="densenet121-res224-all",
                            weights_file=tmp_path / "xrv.pt", input_size=64))
    assert v.scores(_images(2)).shape == (2, 6)
    assert v._columns["cardiomegaly"] and v._columns["pneumothorax"]
    r = load_victim(_config("torchxrayvision", architecture="resnet50", input_size=64))
    assert r.scores(_images(1)).shape == (1, 6)
    with pytest.raises(ValueError, match="unknown torchxrayvision weights"):
        load_victim(_config("torchxrayvision", weights="densenet-nope"))


def test_missing_files_and_unmapped_labels_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_victim(_config("timm", architecture="resnet10t", checkpoint=tmp_path / "nowhere.pt",
                            labels=LABELS))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1))
    net(torch.zeros(1, 1, 8, 8))
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), tmp_path / "m.ts")
    with pytest.raises(ValueError, match="maps onto a class"):
        load_victim(_config("torchscript", file=tmp_path / "m.ts", labels=["Fracture"],
                            input_size=8))


def test_labels_from_scores_is_healthy_when_no_disease_passes():
    scores = np.array([[0.9, 0.1, 0.2, 0.1, 0.3, 0.0], [0.2, 0.8, 0.1, 0.7, 0.1, 0.1]])
    assert labels_from_scores(scores, 0.5) == [["healthy"], ["cancer", "pleural_effusion"]]
    assert set(STANDARD_LABEL_MAP.values()) == set(DISEASES)


def test_auroc_matches_the_pairwise_definition():
    y = np.array([1, 0, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.1, 0.4, 0.4, 0.8, 0.3, 0.95])
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auroc_of(y, s) == pytest.approx(want)
    assert auroc_of(np.ones(3), s[:3]) is None


def test_demo_architectures_and_scene_labels_fit_the_classes():
    from advbench.phantoms.scene import Finding, Scene, sample_anatomy

    for arch in ("cnn", "timm:resnet10t"):
        out = build_model(arch)(torch.zeros(2, 1, 64, 64))
        assert out.shape == (2, len(DISEASES))
    scene = Scene(sample_anatomy(np.random.default_rng(0)),
                  (Finding("pleural_effusion"), Finding("nodule"), Finding("patchy_opacity")))
    y = scene_labels(scene)
    assert {DISEASES[i] for i in np.flatnonzero(y)} == {"pleural_effusion", "cancer",
                                                        "pneumonia"}
    perfect = evaluate(lambda x: torch.tensor(np.repeat(y[None], len(x), 0)),
                       np.zeros((4, 8, 8), np.uint8), np.repeat(y[None], 4, 0))
    assert perfect["label_accuracy"] == 1.0 and perfect["exact_match"] == 1.0


def test_youden_thresholds_separate_scores_that_0_5_would_not():
    """A model whose positives score 0.3 and negatives 0.1: at 0.5 it finds nothing; the
    threshold chosen on held-out images finds every positive."""
    from advbench.models.demo import youden_thresholds

    labels = np.zeros((40, len(DISEASES)), np.float32)
    labels[:20, 2] = 1.0  # pleural_effusion in half of them
    images = (labels[:, 2] * 10).astype(np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)

    def predict(x):
        mean = x.mean(dim=(1, 2, 3))
        return (0.1 + 5 * mean)[:, None].repeat(1, len(DISEASES))

    th = youden_thresholds(predict, images, labels)
    assert 0.1 < th["pleural_effusion"] <= 0.3
    scores = predict(torch.from_numpy(images).float().div(255)[:, None]).numpy()
    six = np.concatenate([1 - scores.max(axis=1, keepdims=True), scores], axis=1)
    found = labels_from_scores(six, th)
    assert all("pleural_effusion" in f for f in found[:20])
    assert labels_from_scores(six, 0.5)[0] == ["healthy"]
