"""MedFocusLeak VLM victims with tiny local models and a loopback endpoint: open_clip zero-shot,
a random tiny LLaVA through transformers, an OpenAI-compatible server, retrieval."""

from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image
from pydantic import TypeAdapter

from advbench.models.endpoint import EndpointConfig
from advbench.models.retrieval import (
    OpenClipEncoderSpec,
    OpenClipVlmConfig,
    RetrievalConfig,
    build_gallery,
)
from advbench.models.vlm import (
    VLM_VICTIMS,
    EndpointVlmConfig,
    TransformersVlmConfig,
    load_vlm,
    shared_vlm,
)
from tests.conftest import LoopbackServer, write_tiny_open_clip


def pattern(kind: str, size: int = 48, seed: int = 0) -> np.ndarray:
    """Gray test images that differ a lot from each other."""
    y, x = np.mgrid[:size, :size]
    if kind == "dark":
        img = np.full((size, size), 20.0)
    elif kind == "stripes":
        img = np.where((x // 6) % 2 == 0, 235.0, 30.0)
    elif kind == "checker":
        img = np.where(((x // 8) + (y // 8)) % 2 == 0, 250.0, 0.0)
    else:
        img = np.random.default_rng(seed).integers(0, 256, (size, size)).astype(float)
    return img.astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A config file and two weight files (seeds 0 and 1) of a tiny random open_clip model."""
    folder = tmp_path_factory.mktemp("vlm-clip")
    cfg, first = write_tiny_open_clip(folder, "tiny-vlm-clip", seed=0)
    _, second = write_tiny_open_clip(folder, "tiny-vlm-clip", seed=1)
    return cfg, [first, second]


def clip_fields(tiny_clip, seed: int = 0) -> dict:
    cfg, files = tiny_clip
    return {"model": "tiny-vlm-clip", "pretrained": str(files[seed]),
            "model_config_file": cfg, "device": "cpu"}


# -- registry / configs -------------------------------------------------------------------

def test_registry_lists_the_four_kinds_and_configs_dispatch_on_kind(tmp_path):
    assert VLM_VICTIMS.names() == ["endpoint", "open-clip", "retrieval", "transformers"]
    adapter = TypeAdapter(VLM_VICTIMS.config_spec())
    spec = adapter.validate_python({"kind": "endpoint", "endpoint": {"url": "http://x/v1",
                                                                     "model": "m"}})
    assert isinstance(spec, EndpointVlmConfig) and spec.concurrency == 4
    spec = adapter.validate_python({"kind": "transformers", "model": str(tmp_path)})
    assert isinstance(spec, TransformersVlmConfig)
    assert spec.prompt_template == "Describe the findings in this {modality} image."
    with pytest.raises(ValueError):
        adapter.validate_python({"kind": "open-clip", "model": "m", "pretrained": "p",
                                 "api_key": "no"})


# -- open-clip -----------------------------------------------------------------------------

def test_open_clip_answers_with_the_candidate_closest_to_the_image(tiny_clip):
    import torch

    victim = load_vlm(OpenClipVlmConfig(**clip_fields(tiny_clip)))
    images = [pattern("stripes"), np.stack([pattern("checker")] * 3, axis=2)]
    candidates = [["small left pleural effusion", "small right pleural effusion", "no effusion"],
                  ["melanoma on the back", "nevus on the back"]]
    answers = victim.answer(images, ["ignored", "ignored"], candidates=candidates)
    assert victim.last_errors == [None, None]
    # recompute the choice directly with the model
    enc = victim.encoder
    for img, cands, got in zip(images, candidates, answers, strict=True):
        with torch.no_grad():
            x = enc.preprocess(Image.fromarray(img).convert("RGB")).unsqueeze(0)
            i = enc.model.encode_image(x)
            t = enc.model.encode_text(enc.tokenizer(cands))
        sims = torch.nn.functional.cosine_similarity(i, t)
        assert got == cands[int(sims.argmax())]
    # the choice is by content, not position
    flipped = victim.answer(images, ["", ""], candidates=[c[::-1] for c in candidates])
    assert flipped == answers


def test_open_clip_without_candidates_is_a_clear_value_error(tiny_clip):
    victim = shared_vlm(OpenClipVlmConfig(**clip_fields(tiny_clip)))
    assert shared_vlm(OpenClipVlmConfig(**clip_fields(tiny_clip))) is victim  # loaded once
    with pytest.raises(ValueError, match="candidates"):
        victim.answer([pattern("dark")], ["Describe the findings."])
    with pytest.raises(ValueError, match="one prompt per image"):
        victim.answer([pattern("dark")], [], candidates=[["a"]])


# -- transformers: a tiny random LLaVA -----------------------------------------------------

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}"
                 "{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")
WORDS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "user:", "assistant:", "system:",
         "describe", "the", "findings", "in", "this", "x-ray", "image.", "left", "right",
         "pleural", "effusion", "no", "small", "lung", "heart", "normal", "."]


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A 2-layer LLaVA (llama text + CLIP vision, hidden 32) with a word-level tokenizer, all
    built offline and saved like a hub checkpoint. Special tokens are suppressed in its
    generation config so that its random weights produce words instead of stopping at once."""
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {w: i for i, w in enumerate(WORDS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
        eos_token="</s>", extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 8},
                                           crop_size={"height": 8, "width": 8}),
        tokenizer=tokenizer, patch_size=2, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    config = LlavaConfig(
        text_config={"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 4,
                     "intermediate_size": 37, "vocab_size": len(vocab),
                     "initializer_range": 0.5, "pad_token_id": 0, "bos_token_id": 2,
                     "eos_token_id": 3},
        vision_config={"model_type": "clip_vision_model", "image_size": 8, "patch_size": 2,
                       "hidden_size": 32, "projection_dim": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 37,
                       "initializer_range": 0.5, "initializer_factor": 5.0},
        image_token_index=vocab["<image>"], image_seq_length=16,
        vision_feature_select_strategy="default", pad_token_id=0)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.suppress_tokens = [vocab[w] for w in WORDS[:8]]
    folder = tmp_path_factory.mktemp("tiny-llava")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def llava(folder, **overrides):
    return load_vlm(TransformersVlmConfig(**{"model": str(folder), "device": "cpu",
                                             "dtype": "auto", "max_new_tokens": 6,
                                             **overrides}))


def test_transformers_tiny_llava_answers_greedily_and_batches_like_single_images(tiny_llava):
    victim = llava(tiny_llava, batch_size=3)
    assert str(victim.model.dtype) == "torch.float32"  # auto on the CPU
    images = [pattern("stripes"), pattern("noise", size=30), np.stack([pattern("checker")] * 3,
                                                                       axis=2)]
    prompts = ["describe the findings in this x-ray image.", "describe this image.",
               "describe the findings in the left lung in this x-ray image."]
    first = victim.answer(images, prompts)
    assert len(first) == 3 and all(isinstance(a, str) and a for a in first)
    assert victim.last_errors == [None, None, None]
    assert victim.answer(images, prompts) == first  # greedy: the same answer every time
    singles = [victim.answer([im], [p])[0] for im, p in zip(images, prompts, strict=True)]
    assert singles == first  # left padding: batching does not change a row's answer
    assert len(set(first)) > 1  # the answers depend on the input (not a constant)


def test_transformers_uses_the_chat_template_with_system_prompt_or_the_image_token(tiny_llava):
    victim = llava(tiny_llava, system_prompt="describe")
    (text,) = victim.texts(["describe the findings"])
    assert text == "system: describe user: <image> describe the findings assistant:"
    plain = llava(tiny_llava, use_chat_template=False)
    assert plain.texts(["describe the findings"]) == ["<image>\ndescribe the findings"]
    (answer,) = plain.answer([pattern("dark")], ["describe the findings"])
    assert isinstance(answer, str)


def test_transformers_missing_model_names_the_offline_rule(tmp_path):
    with pytest.raises(FileNotFoundError, match="offline.*local folder"):
        llava(tmp_path / "no-such-model")


# -- endpoint: a loopback OpenAI-compatible server -----------------------------------------

def reply(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


class ImageServer(LoopbackServer):
    """Replies to each request by the image it carries: pixel value v answers "pixel v";
    v = 99 always fails with 500; v = 77 sleeps past the client timeout on its first attempt.
    Each recorded request also gets the image's data ``url`` and decoded ``pixels``."""

    def __init__(self) -> None:
        self.attempts: dict[int, int] = {}
        super().__init__()

    def respond(self, request: dict) -> tuple[int, dict]:
        user = request["body"]["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in user if p["type"] == "image_url")
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        value = int(pixels.flat[0])
        with self.lock:
            request.update(url=url, pixels=pixels)
            self.attempts[value] = self.attempts.get(value, 0) + 1
            attempt = self.attempts[value]
        if value == 77 and attempt == 1:
            time.sleep(0.8)
        return (500, {"error": "boom"}) if value == 99 else (200, reply(f"pixel {value}"))


@pytest.fixture
def image_server(loopback) -> ImageServer:
    return loopback(ImageServer)


def endpoint_victim(server: ImageServer, **overrides):
    endpoint = EndpointConfig(url=server.url, model="vlm", timeout_s=0.3, retries=1,
                              backoff_s=0.001)
    return load_vlm(EndpointVlmConfig(endpoint=endpoint, **overrides))


def test_endpoint_sends_each_image_as_a_png_data_url_with_the_prompt(image_server):
    victim = endpoint_victim(image_server, system_prompt="You are a radiologist.")
    gray = np.full((12, 10), 10, np.uint8)
    gray[3, 4] = 200
    rgb = np.full((8, 9, 3), 20, np.uint8)
    answers = victim.answer([gray, rgb], ["Describe the findings in this X-ray image.",
                                          "Describe this dermoscopy image."])
    assert answers == ["pixel 10", "pixel 20"]
    by_value = {int(r["pixels"].flat[0]): r for r in image_server.requests}
    assert by_value[10]["url"].startswith("data:image/png;base64,")
    assert np.array_equal(by_value[10]["pixels"], gray)  # lossless
    assert np.array_equal(by_value[20]["pixels"], rgb)
    messages = by_value[10]["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are a radiologist."}
    assert messages[1]["content"][0] == {"type": "text",
                                         "text": "Describe the findings in this X-ray image."}
    assert by_value[10]["body"]["model"] == "vlm"
    victim.close()


def test_endpoint_failing_image_answers_none_with_error_and_keeps_the_others(image_server):
    victim = endpoint_victim(image_server, concurrency=3)
    values = [10, 99, 77, 30]
    images = [np.full((8, 8), v, np.uint8) for v in values]
    answers = victim.answer(images, ["describe"] * 4)
    assert answers == ["pixel 10", None, "pixel 77", "pixel 30"]  # in input order
    errors = victim.last_errors
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert "HTTP 500" in errors[1] and "2 attempts" in errors[1]
    assert image_server.attempts[99] == 2  # retried once, then given up
    assert image_server.attempts[77] == 2  # timed out once, answered on the retry
    # respond() gives the same as (text, error) pairs, without touching last_errors
    again = victim.respond(images[:2], ["describe"] * 2)
    assert again[0].text == "pixel 10" and again[0].error is None
    assert again[1].text is None and "HTTP 500" in again[1].error


# -- retrieval ----------------------------------------------------------------------------

GALLERY = [("dark", "No acute cardiopulmonary process."),
           ("stripes", "Small left pleural effusion."),
           ("checker", "Right lower lobe consolidation.")]


def test_retrieval_answers_with_the_findings_of_the_nearest_gallery_image(tiny_clip, tmp_path):
    spec = OpenClipEncoderSpec(**clip_fields(tiny_clip))
    folder = build_gallery(spec, [(pattern(k), text) for k, text in GALLERY], tmp_path / "gal")
    meta = json.loads((folder / "gallery.json").read_text())
    assert meta["count"] == 3 and meta["dim"] == 32 and meta["encoder"]["model"] == "tiny-vlm-clip"
    victim = load_vlm(RetrievalConfig(**clip_fields(tiny_clip), gallery=folder))
    own = victim.answer([pattern(k) for k, _ in GALLERY], ["describe"] * 3)
    assert own == [text for _, text in GALLERY]  # a gallery image retrieves its own findings
    noisy = pattern("checker").astype(int) + np.random.default_rng(1).integers(-10, 11, (48, 48))
    (near,) = victim.answer([np.clip(noisy, 0, 255).astype(np.uint8)], ["describe"])
    assert near == "Right lower lobe consolidation."
    assert near != victim.answer([pattern("dark")], ["describe"])[0]  # different image, other


def test_retrieval_from_a_jsonl_gallery_embeds_the_images_it_names(tiny_clip, tmp_path):
    lines = []
    for kind, text in GALLERY:
        Image.fromarray(pattern(kind)).save(tmp_path / f"{kind}.png")
        lines.append(json.dumps({"image": f"{kind}.png", "findings": text}))
    (tmp_path / "gallery.jsonl").write_text("\n".join(lines) + "\n")
    victim = load_vlm(RetrievalConfig(**clip_fields(tiny_clip), gallery=tmp_path / "gallery.jsonl"))
    assert victim.answer([pattern("stripes")], ["x"]) == ["Small left pleural effusion."]
    again = load_vlm(RetrievalConfig(**clip_fields(tiny_clip), gallery=tmp_path / "gallery.jsonl"))
    assert again.gallery.findings == victim.gallery.findings  # from the cache


def test_retrieval_refuses_a_gallery_embedded_by_another_encoder(tiny_clip, tmp_path):
    other = OpenClipEncoderSpec(**clip_fields(tiny_clip, seed=1))
    folder = build_gallery(other, [(pattern("dark"), "normal")], tmp_path / "gal")
    with pytest.raises(ValueError, match="rebuild it"):
        load_vlm(RetrievalConfig(**clip_fields(tiny_clip, seed=0), gallery=folder))
