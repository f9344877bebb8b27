"""MedFocusLeak as one batched, joint objective.

Each step, for the whole batch at once: one random crop box per image inside one of its
background squares (found once per image, before the loop), all crops resized to each
surrogate's input in one op; the loss is

    −mean cos(crop embedding, target embedding) over the surrogate ensemble
    + λ_attn · (CLS→patch attention share on the diagnostic region − share on the background),

the second term from the full image on the ViT surrogates (mask area-downsampled to the patch
grid; the attention map, summed over layers, is normalised to shares so that λ does not depend
on the surrogate's depth). Sign-gradient step (I-FGSM or MI-FGSM), then projection every
step: δ clipped to ±floor(ε·255)/255, δ = 0 on the mask, x = clip(x0 + δ, 0, 1). The
diagnostic region therefore stays bit-identical and the L∞ bound holds against the clean
image — the two flaws of the released code. ``masked=False`` is the M-Attack baseline: crops
of the whole image, no mask, no attention term.

The loss is per image and summed over the batch, and crop boxes come from per-image random
streams (``crops.uniforms``): an image's attack does not depend on its batch-mates.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from advbench.attacks.medfocusleak import crops as C
from advbench.attacks.medfocusleak.regions import background_squares, background_squares_batch
from advbench.models.victims import pick_device

if TYPE_CHECKING:
    import torch

    from advbench.models.clip import Surrogate


class AttackSettings(BaseModel):
    """The attack's knobs; defaults are the paper's (ε 16/255, step 1/255, 300 steps)."""

    model_config = ConfigDict(extra="forbid")
    epsilon: float = Field(default=16 / 255, gt=0, le=1, description="L∞ bound, 0–1 scale.")
    step_size: float = Field(default=1 / 255, gt=0, le=1)
    steps: int = Field(default=300, ge=1)
    optimizer: Literal["ifgsm", "mifgsm"] = "ifgsm"
    decay: float = Field(default=1.0, ge=0, description="MI-FGSM momentum decay.")
    crops_per_step: int = Field(default=1, ge=1)
    crop_scale: tuple[float, float] = Field(default=(0.5, 1.0),
                                            description="Area fraction of the square cropped.")
    lambda_attn: float = Field(default=1.0, ge=0)
    truth_weight: float = Field(
        default=0.0, ge=0, description="Also push away from the true findings: the aligned "
        "similarity is sim(target) − w · sim(truth) (0: the paper's pull toward the target "
        "alone). A target text differs from the truth in a few words, so their embeddings "
        "are close and pulling toward one pulls toward both.")
    global_view: bool = Field(
        default=False, description="Add the whole image, resized as a victim sees it, to "
        "each step's crops (the paper: crops only). Only unmasked pixels ever change.")
    squares: int = Field(default=10, ge=1, description="k background squares per image.")
    min_square: int = Field(default=8, ge=1, description="Smallest square side (px).")
    target: Literal["text", "image", "both"] = Field(
        default="text", description="Target embedding: the text, its rendered picture, or "
        "the normalised mean of both.")
    masked: bool = Field(default=True, description="False: the M-Attack baseline.")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> AttackSettings:
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if C.epsilon_pixels(self.epsilon) < 1:
            raise ValueError("epsilon is below one uint8 level (1/255): nothing could change")
        return self


@dataclass
class AttackResult:
    """A batch's outcome. Row t of the histories is the iterate after t steps on that step's
    crops (row 0: clean); the last row is the returned image on the first step's crops, so
    that first and last rows compare the same crops."""

    adversarial: torch.Tensor  # B×C×H×W float in [0, 1], CPU
    delta: torch.Tensor  # adversarial − clean, B×C×H×W, CPU (quantise with crops.quantise)
    loss_history: np.ndarray  # (steps+1)×B
    similarity_history: np.ndarray  # (steps+1)×B, mean cosine to the target (− w × truth)
    seconds: float
    seeds: list[int] = field(default_factory=list)

    @property
    def final_loss(self) -> np.ndarray:
        return self.loss_history[-1]

    @property
    def final_similarity(self) -> np.ndarray:
        return self.similarity_history[-1]

    def history(self, points: int = 20) -> list[tuple[int, float]]:
        """A short history: (step, mean loss over the batch) at about `points` steps."""
        idx = np.unique(np.linspace(0, len(self.loss_history) - 1, points).round().astype(int))
        return [(int(i), float(self.loss_history[i].mean())) for i in idx]


def _device(device: str | torch.device, surrogates: Sequence[Surrogate]) -> str:
    """The surrogates' device ("auto"), or the one asked for, which they must all be on."""
    if not surrogates:
        raise ValueError("no surrogates")
    dev = str(surrogates[0].device) if str(device) == "auto" else pick_device(str(device))
    for s in surrogates:
        if str(s.device).split(":")[0] != dev.split(":")[0]:
            raise ValueError(f"surrogate {s.name} is on {s.device}, the attack runs on {dev}")
    return str(surrogates[0].device) if dev == "cuda" else dev


def target_embeddings(surrogate: Surrogate, texts: Sequence[str],
                      mode: Literal["text", "image", "both"]) -> torch.Tensor:
    """B×D target embeddings of one surrogate: the text's, its rendered picture's, or the
    normalised mean of both. Computed once, without gradient."""
    import torch

    parts = []
    if mode in ("text", "both"):
        parts.append(surrogate.encode_text(texts))
    if mode in ("image", "both"):
        pics = torch.stack([C.render_text(t) for t in texts]).to(surrogate.device)
        with torch.no_grad():
            parts.append(surrogate.encode_image(C.resize(pics, surrogate.input_size)))
    z = sum(parts)
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def aim_embeddings(surrogate: Surrogate, target_texts: Sequence[str],
                   truth_texts: Sequence[str] | None, settings: AttackSettings) -> torch.Tensor:
    """B×D vectors whose dot product with an image embedding is the similarity the attack
    raises: the target's embedding, minus ``truth_weight`` × the true findings' one."""
    aim = target_embeddings(surrogate, target_texts, settings.target)
    if settings.truth_weight > 0:
        if truth_texts is None or len(truth_texts) != len(target_texts):
            raise ValueError("truth_weight > 0 needs the true findings, one per image")
        aim = aim - settings.truth_weight * target_embeddings(surrogate, truth_texts,
                                                              settings.target)
    return aim


class _Objective:
    """The joint per-image loss, shared by the batched attack and the reference."""

    def __init__(self, surrogates: Sequence[Surrogate], targets: list[torch.Tensor],
                 masks: torch.Tensor | None, settings: AttackSettings):
        import torch.nn.functional as F

        self.surrogates = list(surrogates)
        self.targets = targets
        self.lam = settings.lambda_attn
        self.global_view = settings.global_view
        use = settings.masked and self.lam > 0 and masks is not None
        self.attend = [use and s.has_attention for s in self.surrogates]
        self.n_attend = sum(self.attend)
        self.fg: dict[int, torch.Tensor] = {}  # per attending surrogate: B×h×w mask fraction
        for i, s in enumerate(self.surrogates):
            if self.attend[i]:
                self.fg[i] = F.interpolate(masks[:, None].float(), size=s.grid_size,
                                           mode="area")[:, 0]

    def __call__(self, x: torch.Tensor, rois: torch.Tensor, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image loss and similarity (B each) of the whole batch x (B×C×H×W) on the
        crops `rois` (B·k roi_align rows, k per image), plus the whole image with
        ``global_view``."""
        import torch

        b = x.shape[0]
        sim = x.new_zeros(b)
        attn = x.new_zeros(b)
        for i, s in enumerate(self.surrogates):
            crops = C.crop_resize(x, rois, s.input_size)
            whole = self.global_view or self.attend[i]
            views = torch.cat([crops, C.resize(x, s.input_size)]) if whole else crops
            if self.attend[i]:
                z, a = s.encode_and_attend(views)
                a = a[b * k:]
                fg = self.fg[i]
                a = a / a.sum((1, 2), keepdim=True).clamp_min(1e-12)  # shares: λ means alike
                attn = attn + (a * fg).sum((1, 2)) - (a * (1 - fg)).sum((1, 2))
            else:
                z = s.encode_image(views)
            per_view = (z[: b * k].view(b, k, -1) * self.targets[i][:, None]).sum(-1)
            if self.global_view:  # the whole image is one more view
                per_view = torch.cat([per_view, (z[b * k:] * self.targets[i]).sum(-1)[:, None]],
                                     dim=1)
            sim = sim + per_view.mean(1)
        sim = sim / len(self.surrogates)
        loss = -sim + (self.lam * attn / self.n_attend if self.n_attend else 0.0)
        return loss, sim

    def one(self, x: torch.Tensor, crops_boxes: np.ndarray, row: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same loss for ONE image, one surrogate call per crop (the reference)."""
        sims, attn = [], 0.0
        for i, s in enumerate(self.surrogates):
            views = [C.crop_resize_one(x, box, s.input_size) for box in crops_boxes]
            for view in views + ([C.resize(x, s.input_size)] if self.global_view else []):
                z = s.encode_image(view)
                sims.append((z[0] * self.targets[i][row]).sum())
            if self.attend[i]:
                a = s.attention(C.resize(x, s.input_size))[0]
                a = a / a.sum().clamp_min(1e-12)
                fg = self.fg[i][row]
                attn = attn + (a * fg).sum() - (a * (1 - fg)).sum()
        sim = sum(sims) / len(sims)
        loss = -sim + (self.lam * attn / self.n_attend if self.n_attend else 0.0)
        return loss, sim


def _prepare(images: torch.Tensor, masks: torch.Tensor | np.ndarray | None,
             target_texts: Sequence[str], settings: AttackSettings, device: str,
             seeds: Sequence[int] | None):
    import torch

    x0 = torch.as_tensor(images).to(device=device, dtype=torch.float32)
    if x0.ndim != 4 or x0.shape[1] not in (1, 3):
        raise ValueError(f"images must be B×C×H×W with C = 1 or 3, got {tuple(x0.shape)}")
    if float(x0.min()) < 0 or float(x0.max()) > 1:
        raise ValueError("images must lie in [0, 1]")
    b, _, h, w = x0.shape
    if len(target_texts) != b:
        raise ValueError(f"{b} images but {len(target_texts)} target texts")
    if masks is None:
        if settings.masked:
            raise ValueError("masked=True needs masks (True = diagnostic region)")
        m = torch.zeros(b, h, w, dtype=torch.bool, device=device)
    else:
        m = torch.as_tensor(np.asarray(masks.cpu() if hasattr(masks, "cpu") else masks, bool),
                            device=device)
        if tuple(m.shape) != (b, h, w):
            raise ValueError(f"masks must be B×H×W = {(b, h, w)}, got {tuple(m.shape)}")
    seeds = list(seeds) if seeds is not None else [settings.seed + i for i in range(b)]
    if len(seeds) != b:
        raise ValueError(f"{b} images but {len(seeds)} seeds")
    return x0, m, seeds


def _project(x0: torch.Tensor, delta: torch.Tensor, mask: torch.Tensor | None,
             eps_q: float) -> torch.Tensor:
    import torch

    delta = delta.clamp(-eps_q, eps_q)
    if mask is not None:
        delta = torch.where(mask[:, None], torch.zeros((), device=delta.device), delta)
    return (x0 + delta).clamp(0, 1) - x0


def _step(delta: torch.Tensor, grad: torch.Tensor, momentum: torch.Tensor | None,
          settings: AttackSettings) -> tuple[torch.Tensor, torch.Tensor | None]:
    if settings.optimizer == "mifgsm":
        norm = grad.abs().mean(dim=tuple(range(1, grad.ndim)), keepdim=True).clamp_min(1e-12)
        momentum = settings.decay * momentum + grad / norm
        grad = momentum
    return delta - settings.step_size * grad.sign(), momentum


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_attack(images: torch.Tensor, masks: torch.Tensor | np.ndarray | None,
               target_texts: Sequence[str], surrogates: Sequence[Surrogate],
               settings: AttackSettings, *, device: str = "auto",
               seeds: Sequence[int] | None = None,
               truth_texts: Sequence[str] | None = None) -> AttackResult:
    """Attack a batch of same-size images (B×C×H×W in [0, 1], C = 1 or 3; masks B×H×W,
    True = diagnostic, kept bit-identical). `seeds` (default settings.seed + index) seed each
    image's crop stream; `truth_texts` (the true findings) are needed when
    ``truth_weight`` > 0. Returns float results; quantise with ``crops.quantise``."""
    import torch

    t0 = time.perf_counter()
    dev = _device(device, surrogates)
    x0, m, seeds = _prepare(images, masks, target_texts, settings, dev, seeds)
    b, _, h, w = x0.shape
    k = settings.crops_per_step
    squares = (background_squares_batch(m.cpu().numpy(), settings.squares,
                                        min_side=settings.min_square)
               if settings.masked else None)
    boxes = C.sample_boxes(squares, seeds, range(settings.steps + 1), k, settings.crop_scale,
                           (h, w))
    rois = C.boxes_to_rois(boxes, dev)
    targets = [aim_embeddings(s, target_texts, truth_texts, settings) for s in surrogates]
    objective = _Objective(surrogates, targets, m if settings.masked else None, settings)
    mask = m if settings.masked else None
    eps_q = C.epsilon_pixels(settings.epsilon) / 255.0
    delta = torch.zeros_like(x0)
    momentum = torch.zeros_like(x0) if settings.optimizer == "mifgsm" else None
    losses = torch.zeros(settings.steps + 1, b, device=dev)
    sims = torch.zeros_like(losses)
    for t in range(settings.steps):
        delta.requires_grad_(True)
        loss, sim = objective((x0 + delta).clamp(0, 1), rois[t], k)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            delta, momentum = _step(delta.detach(), grad, momentum, settings)
            delta = _project(x0, delta, mask, eps_q)
            losses[t], sims[t] = loss, sim
    with torch.no_grad():
        adv = (x0 + delta).clamp(0, 1)
        # the returned image on the first step's crops: the last row compares with the first
        losses[-1], sims[-1] = objective(adv, rois[0], k)
    _sync(dev)
    seconds = time.perf_counter() - t0
    return AttackResult(adversarial=adv.cpu(), delta=delta.cpu(),
                        loss_history=losses.cpu().numpy(), similarity_history=sims.cpu().numpy(),
                        seconds=seconds, seeds=seeds)


def unbatched_reference(images: torch.Tensor, masks: torch.Tensor | np.ndarray | None,
                        target_texts: Sequence[str], surrogates: Sequence[Surrogate],
                        settings: AttackSettings, *, device: str = "auto",
                        seeds: Sequence[int] | None = None,
                        truth_texts: Sequence[str] | None = None) -> AttackResult:
    """The same attack shaped like the released code, for the benchmark only: one image at a
    time, the background-square search redone in Python every iteration, each crop cut by
    slicing and resized alone, one surrogate call per crop (and one per attention map)."""
    import torch

    t0 = time.perf_counter()
    dev = _device(device, surrogates)
    x0_all, m_all, seeds = _prepare(images, masks, target_texts, settings, dev, seeds)
    b, _, h, w = x0_all.shape
    k = settings.crops_per_step
    eps_q = C.epsilon_pixels(settings.epsilon) / 255.0
    targets = [aim_embeddings(s, target_texts, truth_texts, settings) for s in surrogates]
    objective = _Objective(surrogates, targets, m_all if settings.masked else None, settings)
    losses = np.zeros((settings.steps + 1, b))
    sims = np.zeros_like(losses)
    advs, deltas = [], []
    for i in range(b):
        x0, m = x0_all[i:i + 1], m_all[i:i + 1]
        mask = m if settings.masked else None
        m_np = m[0].cpu().numpy()
        delta = torch.zeros_like(x0)
        momentum = torch.zeros_like(x0) if settings.optimizer == "mifgsm" else None
        for t in range(settings.steps + 1):
            sq = ([background_squares(m_np, settings.squares, min_side=settings.min_square)]
                  if settings.masked else None)
            step = 0 if t == settings.steps else t  # the last row on the first step's crops
            box = C.sample_boxes(sq, [seeds[i]], [step], k, settings.crop_scale, (h, w))[0, 0]
            if t == settings.steps:
                with torch.no_grad():
                    loss, sim = objective.one((x0 + delta).clamp(0, 1), box, i)
            else:
                delta.requires_grad_(True)
                loss, sim = objective.one((x0 + delta).clamp(0, 1), box, i)
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta, momentum = _step(delta.detach(), grad, momentum, settings)
                    delta = _project(x0, delta, mask, eps_q)
            losses[t, i], sims[t, i] = float(loss.detach()), float(sim.detach())
        advs.append((x0 + delta).clamp(0, 1).detach())
        deltas.append(delta.detach())
    _sync(dev)
    seconds = time.perf_counter() - t0
    return AttackResult(adversarial=torch.cat(advs).cpu(), delta=torch.cat(deltas).cpu(),
                        loss_history=losses, similarity_history=sims, seconds=seconds,
                        seeds=seeds)


@dataclass
class AttackedImage:
    """One image's outcome from ``run_attack_groups``, in the input's own layout."""

    adversarial: np.ndarray  # uint8, H×W or H×W×3 like the input
    loss_history: np.ndarray  # steps+1
    similarity_history: np.ndarray  # steps+1
    seed: int

    @property
    def final_loss(self) -> float:
        return float(self.loss_history[-1])


def run_attack_groups(items: Sequence[tuple[np.ndarray, np.ndarray | None, str]],
                      surrogates: Sequence[Surrogate], settings: AttackSettings, *,
                      device: str = "auto", batch_size: int = 8,
                      truths: Sequence[str] | None = None) -> list[AttackedImage]:
    """Attack (uint8 image H×W or H×W×3, mask H×W, target text) items of any sizes: same-shape
    images go together in batches of `batch_size`, nothing is resized (crops are resized to
    the surrogate input). Item i's crops are seeded settings.seed + i, so the grouping does
    not change any image's result; `truths` are the items' true findings (for
    ``truth_weight``). Returns uint8 results in input order (``crops.quantise``: L∞ <=
    floor(ε·255) and the mask bit-identical)."""
    import torch

    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if truths is not None and len(truths) != len(items):
        raise ValueError(f"{len(items)} items but {len(truths)} true findings")
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, (img, _, _) in enumerate(items):
        a = np.asarray(img)
        if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
            raise ValueError(f"item {i}: expected a uint8 H×W or H×W×3 image, got "
                             f"{a.dtype} {a.shape}")
        groups[a.shape].append(i)
    out: list[AttackedImage | None] = [None] * len(items)
    for shape, members in groups.items():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            u8 = np.stack([np.asarray(items[i][0]) for i in chunk])
            chw = u8[:, None] if len(shape) == 2 else u8.transpose(0, 3, 1, 2)
            masks = None if not settings.masked else np.stack(
                [np.asarray(items[i][1], bool) for i in chunk])
            res = run_attack(torch.from_numpy(chw.astype(np.float32) / 255.0), masks,
                             [items[i][2] for i in chunk], surrogates, settings, device=device,
                             seeds=[settings.seed + i for i in chunk],
                             truth_texts=None if truths is None else [truths[i] for i in chunk])
            adv = C.quantise(chw, res.delta, settings.epsilon,
                             None if masks is None else masks[:, None])
            for j, i in enumerate(chunk):
                a = adv[j, 0] if len(shape) == 2 else adv[j].transpose(1, 2, 0)
                out[i] = AttackedImage(adversarial=np.ascontiguousarray(a),
                                       loss_history=res.loss_history[:, j],
                                       similarity_history=res.similarity_history[:, j],
                                       seed=settings.seed + i)
    return [o for o in out if o is not None]
