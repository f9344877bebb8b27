"""Demo victims: small classifiers trained on chest X-ray phantoms at first use, then cached.

Recipes are data (``demo_recipes.yaml``): the architecture, epochs, learning rate and, for one
of them, PGD adversarial training, fine-tuning another recipe's model (``init``): adversarial
training from scratch costs several clean trainings, and robustness is what it adds. A trained
model lives in the cache under the hash of its recipe and of the training data spec, with its
held-out figures (per-label accuracy, exact-match accuracy, per-class AUROC). An untrained
victim would make every attack figure meaningless, so the figures are written next to the
weights and reported by the build.

Training data are phantoms rendered from seeded scenes (never the demo's own studies); a
phantom's labels are the classes of its scene's findings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from advbench.concepts.vocabulary import CONCEPT_CLASS
from advbench.models.cache import spec_hash, train_once
from advbench.models.victims import DISEASES
from advbench.paths import cache_dir

TRAINING_VERSION = 5  # bump when the training code changes what a recipe produces


@cache
def recipes() -> dict[str, Any]:
    text = resources.files("advbench.models").joinpath("demo_recipes.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@cache
def finding_classes() -> dict[str, str]:
    """Phantom finding kind → class, from the concepts each finding shows."""
    from advbench.attacks.corpa.generators import finding_of

    out: dict[str, str] = {}
    for concept, kind in finding_of().items():
        out.setdefault(kind, CONCEPT_CLASS[concept])
    return out


def scene_labels(scene) -> np.ndarray:
    """Multi-hot over the five disease classes for a phantom scene."""
    classes = finding_classes()
    y = np.zeros(len(DISEASES), np.float32)
    for f in scene.findings:
        y[DISEASES.index(classes[f.kind])] = 1.0
    return y


def phantom_dataset(n: int, seed: int, size: int, *, workers: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` phantom images (uint8, n × size × size) and their labels (n × 5); phantom ``i``
    is a pure function of (seed, i), so ``workers`` processes render chunks of it alike."""
    if workers <= 1 or n < 64:
        return _render_range(seed, size, 0, n)
    from advbench.workers import process_pool

    bounds = np.linspace(0, n, 4 * workers + 1).astype(int)
    with process_pool(workers) as ex:
        parts = list(ex.map(_render_range, [seed] * (len(bounds) - 1), [size] * (len(bounds) - 1),
                            bounds[:-1].tolist(), bounds[1:].tolist()))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _render_range(seed: int, size: int, start: int, stop: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    from advbench.phantoms.rendering import render
    from advbench.phantoms.scene import sample_scene

    images = np.empty((stop - start, size, size), np.uint8)
    labels = np.empty((stop - start, len(DISEASES)), np.float32)
    for j, i in enumerate(range(start, stop)):
        scene = sample_scene(np.random.default_rng([seed, i]))
        images[j] = render(scene, size)
        labels[j] = scene_labels(scene)
    return images, labels


# -- the architectures ----------------------------------------------------------------------

def build_model(architecture: str):
    """``cnn`` or ``timm:<name>``: one input channel, five outputs (logits)."""
    import torch
    import torch.nn as nn

    class AvgMaxPool(nn.Module):
        """Global average and max pooling side by side: a small nodule is lost in an
        average."""

        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)

    if architecture == "cnn":
        layers: list[nn.Module] = []
        width = 1
        for out in (16, 32, 64, 96):
            layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width = out
        return nn.Sequential(*layers, AvgMaxPool(), nn.Linear(2 * width, len(DISEASES)))
    if architecture.startswith("timm:"):
        import timm

        return timm.create_model(architecture[5:], pretrained=False, in_chans=1,
                                 num_classes=len(DISEASES), global_pool="catavgmax")
    raise ValueError(f"unknown demo architecture {architecture!r} (cnn or timm:<name>)")


# -- training -------------------------------------------------------------------------------

@dataclass
class TrainedDemo:
    name: str
    folder: Path
    metrics: dict[str, Any]

    @property
    def weights(self) -> Path:
        return self.folder / "model.pt"


def recipe_key(name: str) -> tuple[dict[str, Any], str]:
    all_recipes = recipes()
    if name not in all_recipes["victims"]:
        raise KeyError(f"unknown demo victim {name!r}; known: "
                       f"{', '.join(sorted(all_recipes['victims']))}")
    victim = all_recipes["victims"][name]
    spec = {"victim": victim, "data": all_recipes["data"], "training_version": TRAINING_VERSION}
    if victim.get("init"):  # fine-tuned from another recipe: its change is this one's too
        spec["init_key"] = recipe_key(victim["init"])[1]
    return spec, spec_hash(spec)


def ensure_trained(name: str, *, log: Callable[[str], None] | None = None) -> TrainedDemo:
    """The demo victim ``name``, trained now if its recipe has no cached model."""
    spec, digest = recipe_key(name)
    folder = cache_dir() / "models" / "demo" / f"{name}-{digest}"
    metrics = train_once(folder, lambda: _train(name, spec, folder),
                         what=f"demo victim {name}", log=log)
    return TrainedDemo(name, folder, metrics)


def _data(spec: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """Training and held-out phantoms, cached once for every recipe with the same data spec."""
    data = spec["data"]
    key = spec_hash(data)
    path = cache_dir() / "models" / "demo" / f"phantom-data-{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["xtr"], z["ytr"], z["xte"], z["yte"]
    from advbench.workers import default_workers

    workers = min(default_workers(), 8)
    xtr, ytr = phantom_dataset(data["train"], data["seed"], data["size"], workers=workers)
    xte, yte = phantom_dataset(data["heldout"], data["seed"] + 1, data["size"], workers=workers)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    tmp.replace(path)
    return xtr, ytr, xte, yte


def _train(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    recipe = spec["victim"]
    xtr, ytr, xte, yte = _data(spec)
    started = time.perf_counter()
    seed = recipe.get("seed", spec["data"]["seed"])  # weights' start and batch order
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(recipe["architecture"])
    if recipe.get("init"):
        base = ensure_trained(recipe["init"])
        model.load_state_dict(torch.load(base.weights, map_location="cpu", weights_only=True))
    # channels-last convolutions train about a quarter faster on CPU (oneDNN) and on GPU
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=1e-4)
    steps = recipe["epochs"] * int(np.ceil(len(xtr) / recipe["batch_size"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps)
    adv = recipe.get("adversarial")
    x_all = torch.from_numpy(xtr).float().div_(255.0)[:, None]
    x_all = x_all.contiguous(memory_format=torch.channels_last)
    y_all = torch.from_numpy(ytr)
    for _ in range(recipe["epochs"]):
        model.train()
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), recipe["batch_size"]):
            idx = torch.from_numpy(order[start:start + recipe["batch_size"]])
            x, y = _augment(x_all[idx], rng), y_all[idx]
            if adv:
                half = len(x) // 2
                x = torch.cat([x[:half], pgd(model, x[half:], y[half:], adv)])
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    # operating points from the first half of the held-out phantoms, figures from the second
    half = len(xte) // 2
    predict = lambda x: torch.sigmoid(model(x))  # noqa: E731
    thresholds = youden_thresholds(predict, xte[:half], yte[:half])
    metrics = evaluate(predict, xte[half:], yte[half:], thresholds)
    metrics["thresholds"] = thresholds
    metrics.update({"victim": name, "architecture": recipe["architecture"],
                    "adversarial": adv, "init": recipe.get("init"), "epochs": recipe["epochs"],
                    "train_seconds": round(time.perf_counter() - started, 1),
                    "train_images": len(xtr),
                    "calibration_images": half, "heldout_images": len(xte) - half})
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format)
    torch.save(model.state_dict(), tmp / "model.pt")
    (tmp / "recipe.json").write_text(json.dumps(spec, indent=1), "utf-8")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1), "utf-8")
    tmp.replace(folder)
    return metrics


def _augment(x, rng: np.random.Generator):
    """Small shifts and exposure changes: the victims should not key on exact pixels."""
    import torch

    dx, dy = (int(v) for v in rng.integers(-4, 5, size=2))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = float(rng.uniform(0.9, 1.1))
    return (x * gain).clamp_(0.0, 1.0)


def pgd(model, x, y, adv: dict[str, float]):
    """L∞ PGD on the multi-label BCE loss, from a random start (the training attack)."""
    import torch
    import torch.nn.functional as F

    eps, alpha = adv["epsilon"], adv["step_size"]
    was_training = model.training
    model.eval()
    delta = torch.empty_like(x).uniform_(-eps, eps)
    for _ in range(int(adv["steps"])):
        delta.requires_grad_(True)
        loss = F.binary_cross_entropy_with_logits(model((x + delta).clamp(0, 1)), y)
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
    model.train(was_training)
    return (x + delta).clamp(0, 1).detach()


def _scores(predict, images: np.ndarray, batch: int = 128) -> np.ndarray:
    import torch

    scores = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(images[start:start + batch]).float().div_(255.0)[:, None]
            scores.append(predict(x).float().cpu().numpy())
    return np.concatenate(scores)


def youden_thresholds(predict, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per class, the score threshold that maximises sensitivity + specificity (Youden's J):
    a small model's scores are rarely calibrated around 0.5."""
    s = _scores(predict, images)
    out = {}
    for i, c in enumerate(DISEASES):
        y = labels[:, i] > 0.5
        best, best_t = -1.0, 0.5
        if y.any() and (~y).any():
            for th in np.unique(s[:, i]):
                j = (s[y, i] >= th).mean() - (s[~y, i] >= th).mean()
                if j > best:
                    best, best_t = j, float(th)
        out[c] = best_t
    return out


def evaluate(predict, images: np.ndarray, labels: np.ndarray,
             thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Per-label accuracy, exact-match accuracy (at ``thresholds``, else 0.5) and per-class
    AUROC on held-out phantoms; ``predict`` maps a float batch N × 1 × H × W to
    probabilities N × 5."""
    s = _scores(predict, images)
    cut = np.array([(thresholds or {}).get(c, 0.5) for c in DISEASES])
    pred = s >= cut
    auroc = {c: auroc_of(labels[:, i], s[:, i]) for i, c in enumerate(DISEASES)}
    known = [v for v in auroc.values() if v is not None]
    return {
        "label_accuracy": float((pred == labels.astype(bool)).mean()),
        "exact_match": float((pred == labels.astype(bool)).all(axis=1).mean()),
        "auroc": auroc,
        "mean_auroc": float(np.mean(known)) if known else None,
    }


def auroc_of(y: np.ndarray, s: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann–Whitney, ties counted half); None with one class."""
    pos, neg = s[y > 0.5], s[y <= 0.5]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), float)
    ranks[order] = np.arange(1, len(order) + 1)
    allv = np.concatenate([pos, neg])
    # average ranks over ties
    _, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2)
                 / (len(pos) * len(neg)))
