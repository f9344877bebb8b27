"""MedFocusLeak victims: models that look at an image and answer in text.

A victim takes images as they are stored (uint8 H×W gray or H×W×3 RGB) and one prompt per image,
already formatted by the caller from the config's ``prompt_template`` (the attack knows the
modality; the victim does not). Each kind hides its own preprocessing, so the attack and the
judge only ever see text. Kinds (a registry, as for the classifier victims):

- ``transformers``: a generative VLM (``AutoModelForImageTextToText``) from a local folder or
  the Hugging Face cache — Qwen2.5-VL, LLaVA, Gemma 3 / MedGemma, ... — decoding greedily so a
  run can be repeated.
- ``endpoint``: any OpenAI-compatible chat endpoint that takes images (vLLM, TGI, a hosted
  model): the black-box setting of the paper.
- ``open-clip`` and ``retrieval`` (in ``models.retrieval``, registered on import of this
  module): nearest-neighbour answerers on an open_clip encoder — the candidate findings text
  closest to the image (zero-shot), or the findings of the nearest gallery image (the demo's
  report generator).

Answers: ``respond`` returns one ``Answer(text, error)`` per image; ``answer`` returns the texts
(``None`` where an image got no answer) and keeps the errors in ``last_errors``. Local kinds
raise on failure (a broken model is a configuration error); only ``endpoint`` answers ``None``
for a single image whose requests failed, so one flaky request does not cost the whole batch.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from advbench.models.endpoint import ChatClient, EndpointConfig
from advbench.models.victims import pick_device
from advbench.registry import Registry

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_PROMPT", "VLM_VICTIMS", "Answer", "EndpointVlm", "EndpointVlmConfig",
           "TransformersVlm", "TransformersVlmConfig", "VlmConfig", "VlmVictim", "load_vlm",
           "shared_vlm", "to_pil"]

DEFAULT_PROMPT = "Describe the findings in this {modality} image."


@dataclass(frozen=True)
class Answer:
    """A victim's reply to one image: ``text``, or ``None`` with the ``error`` that prevented
    it (endpoint victims only)."""

    text: str | None
    error: str | None = None


class VlmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: str
    name: str | None = Field(default=None, description="Name in the release (default: kind).")
    prompt_template: str = Field(
        default=DEFAULT_PROMPT, description="The question asked per image; the attack fills in "
        "{modality}. Ignored by kinds that do not read prompts (open-clip, retrieval).")

    def display_name(self) -> str:
        return self.name or self.kind

    def identity(self) -> str:
        """What makes two loaded victims the same (the cache key of ``shared_vlm``)."""
        return self.model_dump_json()


class VlmVictim(ABC):
    """A loaded VLM victim. Subclasses set ``kind`` and ``Config``, load in ``__init__`` and
    implement ``respond``."""

    kind: ClassVar[str]
    Config: ClassVar[type[VlmConfig]]

    def __init__(self, config: VlmConfig):
        self.config = config
        self.name = config.display_name()
        self.last_errors: list[str | None] = []

    @abstractmethod
    def respond(self, images: Sequence[np.ndarray], prompts: Sequence[str], *,
                candidates: Sequence[Sequence[str]] | None = None) -> list[Answer]:
        """One ``Answer`` per image (thread-safe: keeps no state)."""

    def answer(self, images: Sequence[np.ndarray], prompts: Sequence[str], *,
               candidates: Sequence[Sequence[str]] | None = None) -> list[str | None]:
        """One answer text per image (``None`` where it failed; why is in ``last_errors``)."""
        answers = self.respond(images, prompts, candidates=candidates)
        self.last_errors = [a.error for a in answers]
        return [a.text for a in answers]

    def close(self) -> None:
        """Release connections (endpoint); a no-op for local models."""
        return None


def _check_lengths(images: Sequence[Any], prompts: Sequence[str],
                   candidates: Sequence[Sequence[str]] | None) -> None:
    if len(prompts) != len(images):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts: give one prompt "
                         "per image")
    if candidates is not None and len(candidates) != len(images):
        raise ValueError(f"{len(images)} images but {len(candidates)} candidate lists")


def to_pil(pixels: np.ndarray) -> Image.Image:
    """An RGB PIL image of a stored image (uint8 or uint16, gray, gray×1, RGB or RGBA)."""
    from PIL import Image

    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be uint8 H×W or H×W×3, not {a.dtype} {a.shape}")
    return Image.fromarray(np.ascontiguousarray(a)).convert("RGB")


VLM_VICTIMS: Registry[type[VlmVictim]] = Registry("VLM victim")


def load_vlm(spec: VlmConfig) -> VlmVictim:
    """A freshly loaded victim."""
    return VLM_VICTIMS.get(spec.kind)(spec)


_SHARED: dict[str, VlmVictim] = {}
_SHARED_LOCK = threading.Lock()


def shared_vlm(spec: VlmConfig) -> VlmVictim:
    """The victim of ``spec``, loaded once per process (a worker answers many batches with
    one model; loading a 7B VLM per batch would dominate the run)."""
    key = f"{spec.kind}:{spec.identity()}"
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = load_vlm(spec)
        return _SHARED[key]


# -- kinds --------------------------------------------------------------------------------

class TransformersVlmConfig(VlmConfig):
    kind: Literal["transformers"] = "transformers"
    model: str = Field(description="A local folder, or a hub id already in the Hugging Face "
                       "cache (nothing is downloaded).")
    processor: str | None = Field(default=None, description="Where the processor is "
                                  "(default: model).")
    system_prompt: str | None = None
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=4, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="auto: bfloat16 on CUDA (float16 where bfloat16 is not "
        "supported), float32 on the CPU.")
    use_chat_template: bool = Field(
        default=True, description="Format with the processor's chat template when it has one "
        "(else the image token, a newline and the prompt).")


def _torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        if device != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return getattr(torch, name)


@VLM_VICTIMS.register("transformers")
class TransformersVlm(VlmVictim):
    """A generative VLM via ``AutoModelForImageTextToText``; greedy decoding, batches
    left-padded so every row's answer starts right after its prompt."""

    kind = "transformers"
    Config = TransformersVlmConfig

    def __init__(self, config: TransformersVlmConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        super().__init__(config)
        self.device = pick_device(config.device)
        self.dtype = _torch_dtype(config.dtype, self.device)
        source = config.processor or config.model
        try:
            self.processor = AutoProcessor.from_pretrained(source, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(
                config.model, local_files_only=True, dtype=self.dtype)
        except OSError as exc:
            raise FileNotFoundError(
                f"victim {self.name!r}: cannot load {config.model!r} offline: it must be a "
                f"local folder or a hub id already in the Hugging Face cache ({exc})") from exc
        self.model = model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"victim {self.name!r}: the processor of {source!r} has no "
                             "tokenizer")
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer

    def texts(self, prompts: Sequence[str]) -> list[str]:
        """The model's input text for each prompt (chat template, or image token + prompt)."""
        template = getattr(self.processor, "chat_template", None)
        if self.config.use_chat_template and template:
            out = []
            for prompt in prompts:
                messages: list[dict[str, Any]] = []
                if self.config.system_prompt:
                    messages.append({"role": "system", "content": [
                        {"type": "text", "text": self.config.system_prompt}]})
                messages.append({"role": "user", "content": [
                    {"type": "image"}, {"type": "text", "text": prompt}]})
                out.append(self.processor.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=False))
            return out
        token = getattr(self.processor, "image_token", None) or "<image>"
        system = f"{self.config.system_prompt}\n" if self.config.system_prompt else ""
        return [p if token in p else f"{system}{token}\n{p}" for p in prompts]

    def respond(self, images, prompts, *, candidates=None):
        _check_lengths(images, prompts, candidates)
        out: list[Answer] = []
        step = self.config.batch_size
        for start in range(0, len(images), step):
            texts = self._generate(images[start:start + step], prompts[start:start + step])
            out.extend(Answer(t) for t in texts)
        return out

    def _generate(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> list[str]:
        import torch

        inputs = self.processor(images=[[to_pil(im)] for im in images],
                                text=self.texts(prompts), padding=True, return_tensors="pt")
        inputs = {k: (v.to(self.device, self.dtype) if torch.is_floating_point(v)
                      else v.to(self.device)) if isinstance(v, torch.Tensor) else v
                  for k, v in inputs.items()}
        with torch.no_grad():
            generated = self.model.generate(**inputs, do_sample=False, num_beams=1,
                                            max_new_tokens=self.config.max_new_tokens)
        new = generated[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


class EndpointVlmConfig(VlmConfig):
    kind: Literal["endpoint"] = "endpoint"
    endpoint: EndpointConfig
    system_prompt: str | None = None
    concurrency: int = Field(default=4, ge=1, description="Requests in flight at once.")


@VLM_VICTIMS.register("endpoint")
class EndpointVlm(VlmVictim):
    """A served VLM: one chat request per image (the image as a PNG data URL in the user
    message), sent ``concurrency`` at a time. Retries are the client's; an image whose
    requests all fail answers ``None`` with the error, the others are kept."""

    kind = "endpoint"
    Config = EndpointVlmConfig

    def __init__(self, config: EndpointVlmConfig):
        super().__init__(config)
        self.client = ChatClient(config.endpoint)

    def close(self) -> None:
        self.client.close()

    def messages(self, prompt: str) -> list[dict[str, Any]]:
        system = self.config.system_prompt
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]

    def _one(self, image: np.ndarray, prompt: str) -> Answer:
        from advbench.images import encode_png

        try:
            png = encode_png(np.asarray(image))
            return Answer(self.client.complete(self.messages(prompt), images=[png]))
        except Exception as exc:  # one image's failure must not cost the others
            return Answer(None, f"{type(exc).__name__}: {exc}")

    def respond(self, images, prompts, *, candidates=None):
        _check_lengths(images, prompts, candidates)
        if len(images) <= 1 or self.config.concurrency == 1:
            return [self._one(im, p) for im, p in zip(images, prompts, strict=True)]
        with ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(images))) as pool:
            return list(pool.map(self._one, images, prompts))


# the open_clip kinds (open-clip, retrieval) register themselves on import
from advbench.models import retrieval as _retrieval  # noqa: E402,F401
