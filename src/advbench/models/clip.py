"""open_clip surrogates for transfer attacks: one loaded CLIP model behind a small interface.

The attack feeds float images in [0, 1] already at the model's input size; normalisation,
grayscale-to-RGB and mixed precision live here, so the attack never needs a model's input
convention. Nothing is ever downloaded: weights come from a local file or ``local-dir:``, and
an ``hf-hub:`` model only from the local Hugging Face cache.

``Surrogate.attention`` gives the CLS→patch attention of a ViT tower (heads averaged, summed
over layers), recomputed by forward pre-hooks from each block's ``ln_1`` output and the block's
own ``in_proj`` weights: open_clip is not edited and its fast attention path keeps running.
Towers without that structure (ModifiedResNet, timm towers, open_clip's custom blocks) have
``has_attention = False`` and ``attention`` raises ``NotImplementedError``: a gradient saliency
would be a different signal under the same name, so the attack leaves those surrogates out of
the attention term instead.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from advbench.models.victims import pick_device

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "fp32", "fp16", "bf16"]


class ClipSpec(BaseModel):
    """Which open_clip model to load, from where, on which device and in which precision."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)
    model: str = Field(description="An open_clip model name (e.g. ViT-B-16), or hf-hub:org/repo "
                       "when that repository is already in the local Hugging Face cache.")
    pretrained: str | None = Field(
        default=None, description="A local weights file (.bin/.safetensors/.pt) or "
        "local-dir:/folder (open_clip_config.json + weights); required unless model is hf-hub:.")
    model_config_file: Path | None = Field(
        default=None, description="An open_clip model config (JSON) for an architecture "
        "open_clip does not ship; its file name (stem) is the model name.")
    input_size: int | None = Field(default=None, ge=8, description="Override of the image "
                                   "size (a ViT's position embeddings are resized on load).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Field(default="auto", description="auto: fp16 autocast on CUDA, "
                                 "fp32 on CPU. Weights stay fp32; autocast does the rest.")

    @model_validator(mode="after")
    def _check(self) -> ClipSpec:
        if self.pretrained is None and not self.model.startswith("hf-hub:"):
            raise ValueError("pretrained is required (a local weights file or local-dir:/folder) "
                             "unless model is hf-hub:org/repo")
        if self.model_config_file is not None and self.model_config_file.stem != self.model:
            raise ValueError(f"model_config_file {self.model_config_file.name} defines model "
                             f"{self.model_config_file.stem!r}, not {self.model!r}")
        return self


def _autocast_dtype(precision: Precision, device: str) -> torch.dtype | None:
    import torch

    kind = "cuda" if device.startswith("cuda") else "cpu"
    if precision == "auto":
        return torch.float16 if kind == "cuda" else None
    if precision == "fp32":
        return None
    if precision == "fp16" and kind == "cpu":
        raise ValueError("precision fp16 needs CUDA; use fp32 or bf16 on the CPU")
    return torch.float16 if precision == "fp16" else torch.bfloat16


def _as_pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int | float) else (int(v[0]), int(v[1]))


class Surrogate:
    """One open_clip model used as a white-box surrogate.

    ``encode_image`` is differentiable and normalises inside; ``encode_text`` runs without
    gradient. Both return L2-normalised float32 embeddings.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any = None, *, name: str = "clip",
                 device: str = "cpu", precision: Precision = "auto"):
        import open_clip
        import torch

        self.name = name
        self.device = device
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._amp = _autocast_dtype(precision, device)
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        visual = self.model.visual
        h, w = _as_pair(cfg.get("size") or visual.image_size)
        if h != w:
            raise ValueError(f"{name}: only square inputs are supported, got {h}×{w}")
        self.input_size = h
        self.mean = tuple(float(m) for m in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(s) for s in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self._mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
        self._local = threading.local()  # the hooks' capture list, per calling thread
        self._blocks = self._attention_blocks(visual)
        self.has_attention = self._blocks is not None
        self.grid_size: tuple[int, int] | None = (
            _as_pair(visual.grid_size) if self.has_attention else None)
        self._why_no_attention = (
            f"{name}: its {type(visual).__name__} tower has no CLS→patch attention that can be "
            "read (only open_clip VisionTransformer towers with standard residual attention "
            "blocks); the attack uses the attention term on ViT surrogates only")
        for block in self._blocks or []:
            block.attn.register_forward_pre_hook(self._capture_hook)

    @staticmethod
    def _attention_blocks(visual: Any) -> list[Any] | None:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            return None
        blocks = list(visual.transformer.resblocks)
        if not blocks or not all(
                type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv")
                and b.attn._qkv_same_embed_dim for b in blocks):
            return None
        return blocks

    def _capture_hook(self, module: Any, args: tuple[Any, ...]) -> None:
        captured = getattr(self._local, "captured", None)
        if captured is not None:
            q = args[0]
            captured.append(q if module.batch_first else q.transpose(0, 1))

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision as the spec says (a no-op in fp32)."""
        import torch

        if self._amp is None:
            yield
            return
        kind = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(kind, dtype=self._amp):
            yield

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: expected B×1×S×S or B×3×S×S, got {tuple(x.shape)}")
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"{self.name}: expected {self.input_size}×{self.input_size} inputs, "
                             f"got {x.shape[-2]}×{x.shape[-1]}; resize first")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self._mean) / self._std

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×S×S in [0, 1] (C = 1 or 3) → L2-normalised B×D float32; differentiable."""
        with self.autocast():
            z = self.model.encode_image(self._normalise(x))
        z = z.float()
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def encode_and_attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and CLS→patch attention (B×h×w) from ONE forward pass; differentiable.

        Why: the attack needs crop embeddings and full-image attention every step; stacking
        both into one batch halves the number of forward passes.
        """
        if not self.has_attention:
            raise NotImplementedError(self._why_no_attention)
        captured: list[torch.Tensor] = []
        self._local.captured = captured
        try:
            with self.autocast():
                z = self.model.encode_image(self._normalise(x))
                self._local.captured = None
                attn = sum(_cls_attention(b.attn, q) for b, q in zip(self._blocks, captured,
                                                                     strict=True))
        finally:
            self._local.captured = None
        z = z.float()
        gh, gw = self.grid_size
        return (z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12),
                attn.float().reshape(x.shape[0], gh, gw))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """CLS→patch attention, heads averaged, summed over layers: B×h×w; differentiable.

        The paper's attention-distraction signal. Raises NotImplementedError for towers
        without ViT blocks (``has_attention`` is False).
        """
        return self.encode_and_attend(x)[1]

    def reads_alike(self, a: str, b: str) -> bool:
        """Whether two texts tokenise the same (a difference past the context length is cut
        off: the model cannot see it)."""
        import torch

        if self.tokenizer is None:
            raise ValueError(f"{self.name}: no tokenizer; load it with load_surrogate or pass one")
        tokens = self.tokenizer([a, b])
        return bool(torch.equal(tokens[0], tokens[1]))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts → L2-normalised B×D float32, no gradient."""
        import torch

        if self.tokenizer is None:
            raise ValueError(f"{self.name}: no tokenizer; load it with load_surrogate or pass one")
        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.no_grad(), self.autocast():
            z = self.model.encode_text(tokens)
        z = z.float()
        return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _cls_attention(attn: Any, y: torch.Tensor) -> torch.Tensor:
    """Softmax(q_cls·kᵀ/√d) of one nn.MultiheadAttention, recomputed from its input y
    (B×N×D, the block's ln_1 output): B×(N-1) attention of the CLS token to each patch,
    averaged over heads. Only the CLS query row is computed (N times cheaper than the map)."""
    import torch.nn.functional as F

    b, n, d = y.shape
    h = attn.num_heads
    dh = d // h
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    q = F.linear(y[:, :1], w[:d], None if bias is None else bias[:d])
    k = F.linear(y, w[d:2 * d], None if bias is None else bias[d:2 * d])
    q = q.view(b, h, 1, dh)
    k = k.view(b, n, h, dh).transpose(1, 2)
    scores = (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(dh)  # B×h×N
    return scores.float().softmax(-1)[:, :, 1:].mean(1)


_CACHE: dict[str, Surrogate] = {}
_LOCK = threading.Lock()


def _hf_cache_dir(model: str) -> str:
    """hf-hub:org/repo → its snapshot folder in the local HF cache; never downloads."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo = model.removeprefix("hf-hub:")
    try:
        return snapshot_download(repo, local_files_only=True)
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(f"{model} is not in the local Hugging Face cache; nothing is "
                                "downloaded: copy it there or use a local weights file") from e


def load_surrogate(spec: ClipSpec) -> Surrogate:
    """Load (once per process: cached by the spec) an open_clip model from local files."""
    key = spec.model_dump_json()
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(spec)
        return _CACHE[key]


def _load(spec: ClipSpec) -> Surrogate:
    device = pick_device(spec.device)
    _autocast_dtype(spec.precision, device)  # fail early on fp16 without CUDA
    model, _, tokenizer = load_open_clip(spec.model, spec.pretrained, spec.model_config_file,
                                         device, input_size=spec.input_size)
    return Surrogate(model, tokenizer, name=spec.model, device=device, precision=spec.precision)


def load_open_clip(model: str, pretrained: str | None, model_config_file: Path | None = None,
                   device: str = "cpu", *, input_size: int | None = None
                   ) -> tuple[torch.nn.Module, Any, Any]:
    """An open_clip model (in eval mode), its inference preprocessing and its tokenizer, from
    local files only: ``pretrained`` a weights file or ``local-dir:/folder``, or ``model``
    ``hf-hub:org/repo`` from the local Hugging Face cache. ``model_config_file`` registers an
    architecture open_clip does not ship; ``input_size`` overrides the image size."""
    import open_clip

    if model_config_file is not None:
        if not model_config_file.is_file():
            raise FileNotFoundError(f"open_clip model config not found: {model_config_file}")
        open_clip.add_model_config(model_config_file)
    kwargs: dict[str, Any] = {}
    if input_size is not None:
        kwargs["force_image_size"] = input_size
    # open_clip takes local-dir: and hf-hub: as the model name (then `pretrained` is ignored)
    if model.startswith("hf-hub:"):
        name, weights = f"local-dir:{_hf_cache_dir(model)}", None
    elif pretrained and pretrained.startswith("local-dir:"):
        folder = Path(pretrained.removeprefix("local-dir:"))
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"local-dir: {folder} has no open_clip_config.json")
        name, weights = pretrained, None
    else:
        if not Path(str(pretrained)).is_file():
            raise FileNotFoundError(f"open_clip weights not found: {pretrained} (a local "
                                    "file or local-dir:/folder; nothing is downloaded)")
        name, weights = model, pretrained
    net, preprocess = open_clip.create_model_from_pretrained(name, pretrained=weights,
                                                             device=device, **kwargs)
    return net.eval(), preprocess, open_clip.get_tokenizer(name)


def clear_cache() -> None:
    """Forget the loaded surrogates (tests; freeing GPU memory between runs)."""
    with _LOCK:
        _CACHE.clear()
