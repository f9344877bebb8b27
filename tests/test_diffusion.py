"""The ``diffusers`` generator with tiny randomly initialised Stable Diffusion pipelines
(inpainting and image-to-image) saved to a folder and loaded from there: K candidates per
perturbation in one call, the original kept exactly outside the edit mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advbench.attacks.corpa.diffusion import DiffusersConfig, DiffusersGenerator
from advbench.attacks.corpa.planner import Planner
from advbench.concepts.extract import extract
from advbench.phantoms.study import generate_study
from advbench.records import Study

VOCAB = ["l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo", "l</w>", "w</w>", "r</w>",
         "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider", "<unk>",
         "<|startoftext|>", "<|endoftext|>"]


def _tiny_pipeline(folder, inpaint: bool):
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionImg2ImgPipeline,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
        in_channels=9 if inpaint else 4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=5,
                                        vocab_size=1000))
    (folder / "tok").mkdir(parents=True, exist_ok=True)
    (folder / "tok" / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (folder / "tok" / "merges.txt").write_text("#version: 0.2\nl o\nlo w</w>\ne r</w>\n")
    tokenizer = CLIPTokenizer(str(folder / "tok" / "vocab.json"),
                              str(folder / "tok" / "merges.txt"), unk_token="<unk>",
                              model_max_length=77)
    cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionImg2ImgPipeline
    pipe = cls(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
               scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
               feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    out = folder / ("inpaint" if inpaint else "img2img")
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def study_and_plan():
    made = generate_study(3, seed=11, size=64)
    from advbench.phantoms.study import encode_jpeg

    study = Study(id="s1", source="phantom", split="test", subject_id="1", study_id="1",
                  image_id="1", view_position="PA", image_bytes=encode_jpeg(made.image),
                  image_path="x.jpg", width=64, height=64, report=made.report.text,
                  report_path="x.txt")
    planned, _ = Planner({"over_diagnosis": 1, "normal_to_disease": 1}, seed=0).plan(
        "s1", extract(study.report).concepts)
    return study, planned[0]


@pytest.mark.parametrize("inpaint", [True, False])
def test_candidates_from_a_local_tiny_pipeline_keep_the_original_outside_the_mask(
        tmp_path, study_and_plan, inpaint):
    from advbench.images import decode_pixels

    study, p = study_and_plan
    folder = _tiny_pipeline(tmp_path, inpaint)
    gen = DiffusersGenerator(DiffusersConfig(
        model=str(folder), mode="inpaint" if inpaint else "img2img", candidates=2, steps=2,
        resolution=32, device="cpu"))
    report = study.report + " There is a small left pleural effusion."
    got = list(gen.candidates(study, p, report, seed=5))
    assert len(got) == 2
    original = decode_pixels(study.image_bytes)
    for n, cand in enumerate(got):
        assert cand.pixels.shape == original.shape and cand.pixels.dtype == np.uint8
        outside = cand.mask == 0
        assert outside.any() and (~outside).any()
        np.testing.assert_array_equal(cand.pixels[outside], original[outside])
        assert cand.settings["variant"] == n and cand.settings["steps"] == 2
        assert cand.settings["seed"] == 5 + n
    assert not np.array_equal(got[0].pixels, got[1].pixels)  # two seeds, two candidates


def test_the_prompt_names_the_target_and_the_mask_the_changed_zone(tmp_path, study_and_plan):
    study, p = study_and_plan
    gen = DiffusersGenerator(DiffusersConfig(model=str(tmp_path / "none"), resolution=32))
    assert gen.prompt(p, "") .startswith("Chest X-ray showing")
    mask = gen.edit_mask(p, "There is a small left pleural effusion.", 100, 100)
    assert mask.any() and mask.dtype == np.uint8


def test_a_model_that_is_not_local_is_named(tmp_path, study_and_plan):
    study, p = study_and_plan
    gen = DiffusersGenerator(DiffusersConfig(model="someone/not-cached-model", resolution=32,
                                             device="cpu"))
    with pytest.raises(ValueError, match="not-cached-model"):
        list(gen.candidates(study, p, study.report, seed=0))


def test_a_build_with_the_diffusers_generator(tmp_path):
    import json as _json

    from datasets import load_dataset

    from advbench.config import load_config
    from advbench.demo import write_phantoms
    from advbench.pipeline import build_release
    from tests.conftest import write_config

    folder = _tiny_pipeline(tmp_path, inpaint=True)
    root = tmp_path / "phantoms"
    write_phantoms(root, 6, seed=2, size=64)
    top = {"workers": 1, "attacks": [{
        "kind": "corpa", "splits": ["train", "validate", "test"],
        "kinds": {"over_diagnosis": 1, "disease_to_normal": 1},
        "generator": {"kind": "diffusers", "model": str(folder), "candidates": 2, "steps": 2,
                      "resolution": 32, "device": "cpu"}}]}
    cfg = load_config(write_config(tmp_path / "b.yaml", root, tmp_path / "out", top=top,
                                   views=["PA"]))
    build_release(cfg)
    manifest = _json.loads((cfg.release_dir() / "manifest.json").read_text())
    assert manifest["configs"]["corpa"]["counts"]["failed"] == 0
    rows = [r for s in manifest["configs"]["corpa"]["splits"]
            for r in load_dataset(str(cfg.release_dir()), "corpa", split=s)]
    assert rows
    for row in rows:
        assert row["generator"] == "diffusers"
        settings = _json.loads(row["generator_settings"])
        assert settings["mode"] == "inpaint" and settings["steps"] == 2
        outside = np.asarray(row["edit_mask"]) == 0
        np.testing.assert_array_equal(np.asarray(row["image"])[outside],
                                      np.asarray(row["original_image"])[outside])
        assert extract(row["report"]).concepts == row["target_concepts"]
