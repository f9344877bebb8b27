"""Demo CLIP surrogates: texts, training pairs, and a TINY recipe trained through ``ensure_clip``
(never the demo's own recipes here), written, loaded back through open_clip, cached, retrained
when its recipe changes."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from advbench.models import demo_clip

TINY = {
    "config": {"embed_dim": 32,
               "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                              "head_width": 16},
               "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                            "layers": 1}},
    "epochs": 1, "lr": 0.001, "batch_size": 16, "weight_decay": 0.1, "prompt_rate": 0.1,
    "seed": 0,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for this module's trainings: the concept extractor that the held-out edit
    check runs (through the target rules) compiles its regexes into it once."""
    return tmp_path_factory.mktemp("clip-cache")


@pytest.fixture
def tiny_book(monkeypatch, cache):
    """The real prompts, a few dozen pairs at 32 px, and one tiny model."""
    book = copy.deepcopy(demo_clip.recipes())
    book["data"].update(per_modality=4, heldout=2, size=32, render_size=48)
    book["models"] = {"tiny-clip": copy.deepcopy(TINY)}
    monkeypatch.setattr(demo_clip, "recipes", lambda: book)
    monkeypatch.setenv("ADVBENCH_CACHE", str(cache))
    return book


def test_captions_are_the_findings_and_prompts_name_the_modality(monkeypatch):
    assert demo_clip.clip_text("CT", "A 12 mm\n  cyst. ") == "A 12 mm cyst."
    book = copy.deepcopy(demo_clip.recipes())
    book["prompts"]["text"] = "{modality}: {findings}"
    monkeypatch.setattr(demo_clip, "recipes", lambda: book)
    assert demo_clip.clip_text("op", "Normal.") == "fundus photograph: Normal."
    assert demo_clip.clip_text("PET", "Normal.") == "PET: Normal."  # unknown code: as given
    monkeypatch.undo()
    assert demo_clip.modality_prompt("XR") == "a chest X-ray image"
    names = demo_clip.recipes()["prompts"]["names"]
    assert set(names) == set(demo_clip.MODALITIES)
    assert len({demo_clip.modality_prompt(m) for m in demo_clip.MODALITIES}) == 8


def test_the_tokenizer_of_a_registered_tiny_config_works_offline(tmp_path):
    import open_clip

    path = tmp_path / "tok-test-clip.json"
    path.write_text(json.dumps(TINY["config"]))
    open_clip.add_model_config(path)
    tokens = open_clip.get_tokenizer("tok-test-clip")(
        [demo_clip.clip_text("US", "No focal liver lesion."), "a CT image"])
    assert tuple(tokens.shape) == (2, 77) and int(tokens[0, 0]) == 49406  # start of text


@pytest.mark.parametrize("modality", demo_clip.MODALITIES)
def test_every_modality_renders_seeded_pairs_at_the_model_size(modality):
    a = demo_clip.render_cases(modality, 7, 0, 3, 32, 48, pairs=True)
    b = demo_clip.render_cases(modality, 7, 0, 3, 32, 48, pairs=True)
    assert a["images"].shape == (3, 32, 32, 3) and a["images"].dtype == np.uint8
    assert np.array_equal(a["images"], b["images"]) and a["findings"] == b["findings"]
    assert all(len(f) > 20 for f in a["findings"])
    grey = np.ptp(a["images"].astype(int), axis=-1).max() == 0
    assert grey == (modality not in ("DMS", "OP", "SM"))
    # with/without-finding pairs where the generator can make them (same case, no finding)
    assert len(a["pair_of"]) == len(a["pair_images"]) == len(a["pair_findings"])
    for j, findings in zip(a["pair_of"], a["pair_findings"], strict=True):
        assert findings != a["findings"][j]


def test_fit_image_crops_the_centre_of_a_non_square_image():
    image = np.zeros((60, 40), np.uint8)
    image[:, 20:] = 255
    out = demo_clip.fit_image(image, 20)
    assert out.shape == (20, 20, 3)
    assert out[:, :8].max() < 40 and out[:, 12:].min() > 215


def test_ensure_clip_trains_writes_and_loads_through_open_clip(tiny_book, monkeypatch):
    import open_clip
    import torch

    tiny_book["models"]["tiny-clip"]["seed"] = 11  # a recipe no other test trains
    log: list[str] = []
    trained = demo_clip.ensure_clip("tiny-clip", log=log.append)
    assert len(log) == 1 and "training demo CLIP tiny-clip" in log[0]
    assert trained.config_json.name == "tiny-clip.json" and trained.weights.is_file()
    assert json.loads(trained.config_json.read_text()) == TINY["config"]
    m = trained.metrics
    assert m["train_pairs"] == 8 * 4 and m["heldout_pairs"] == 8 * 2
    for key in ("top1", "top5"):
        assert 0 <= m["retrieval"][key] <= 1
    assert set(m["zero_shot_modality"]["per_modality"]) == set(demo_clip.MODALITIES)
    assert m["lesion_pairs"]["pairs"] > 0 and m["edit_check"]["edits"] > 0
    assert all((trained.folder / f).is_file() for f in ("metrics.json", "recipe.json"))

    # loaded as a real open_clip model is: config registered, weights file as `pretrained`
    open_clip.add_model_config(trained.config_json)
    model, _, preprocess = open_clip.create_model_and_transforms(
        "tiny-clip", pretrained=str(trained.weights))
    saved = torch.load(trained.weights, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    model, preprocess, tokenizer = trained.load()
    from PIL import Image

    x = preprocess(Image.fromarray(np.zeros((40, 40, 3), np.uint8)))[None]
    with torch.no_grad():
        img = model.encode_image(x, normalize=True)
        txt = model.encode_text(tokenizer([demo_clip.modality_prompt("CT")]), normalize=True)
    assert img.shape == txt.shape == (1, 32)

    # the second call reuses the cache: no data, no training
    def boom(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(demo_clip, "_train", boom)
    again = demo_clip.ensure_clip("tiny-clip", log=log.append)
    assert again.folder == trained.folder and again.metrics == trained.metrics
    assert len(log) == 1


def test_a_recipe_change_retrains_on_the_cached_data(tiny_book, monkeypatch):
    first = demo_clip.ensure_clip("tiny-clip")
    tiny_book["models"]["tiny-clip"]["lr"] = 0.002
    log: list[str] = []

    def no_render(*args, **kwargs):
        raise AssertionError("the pairs were rendered again")

    monkeypatch.setattr(demo_clip, "make_pairs", no_render)  # same data spec: cached pairs
    second = demo_clip.ensure_clip("tiny-clip", log=log.append)
    assert log and second.folder != first.folder and second.weights.is_file()
    assert first.folder.is_dir()  # the old model stays where it was
    with pytest.raises(KeyError, match="unknown demo CLIP"):
        demo_clip.ensure_clip("no-such-clip")


def test_hard_negatives_are_rule_edits_of_each_caption_padded_with_minus_one():
    pairs = demo_clip.PairSet(
        images=np.zeros((3, 4, 4, 3), np.uint8),
        findings=["A 12 mm hypoechoic lesion in the left lobe.", "Unremarkable.",
                  "A 12 mm hypoechoic lesion in the left lobe."],
        modalities=["US", "US", "US"])
    texts, table = demo_clip.hard_negatives(pairs, 2, seed=0)
    assert table.shape == (3, 2)
    assert (table[1] == -1).all()  # no rule applies to "Unremarkable."
    assert (table[0] >= 0).all() and (table[0] == table[2]).all()  # one caption, same edits
    for i in table[0]:
        assert texts[i] != pairs.findings[0] and len(texts[i].split()) == 9  # one edit each
    assert demo_clip.hard_negatives(pairs, 0, seed=0)[1].shape == (3, 0)
