"""Victim classifiers: multi-label chest X-ray models behind one black-box interface.

A victim takes images as they are stored (uint8 grayscale arrays) and answers with the six class
labels of the release (black box) or their scores. Preprocessing — resizing, channels,
normalisation — lives inside each wrapper, so the attack never needs to know a model's input
convention. Each wrapper maps the model's own label names onto the six classes (a class scores
the maximum of its mapped labels; ``healthy`` is one minus the largest disease score).

Kinds (a registry, as for sources and attacks):
- ``torchxrayvision``: its DenseNet / ResNet models, weights from a local file;
- ``timm``: any timm architecture, a local checkpoint and its label names;
- ``torchscript``: a scripted or traced model file and its label names;
- ``demo``: the small classifiers trained on phantoms at first use (``models.demo``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from advbench.concepts.vocabulary import CLASSES
from advbench.registry import Registry

if TYPE_CHECKING:
    import torch

DISEASES: tuple[str, ...] = tuple(c for c in CLASSES if c != "healthy")

# Label names of common chest X-ray models → the release's classes.
STANDARD_LABEL_MAP: dict[str, str] = {
    "cardiomegaly": "cardiomegaly", "enlarged cardiomediastinum": "cardiomegaly",
    "effusion": "pleural_effusion", "pleural effusion": "pleural_effusion",
    "pneumonia": "pneumonia", "consolidation": "pneumonia", "lung opacity": "pneumonia",
    "infiltration": "pneumonia",
    "mass": "cancer", "nodule": "cancer", "lung lesion": "cancer",
    "pneumothorax": "pneumothorax",
    **{c: c for c in DISEASES},
}


class VictimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: str
    name: str | None = Field(default=None, description="Name in the release (default: kind).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(default=32, ge=1)
    threshold: float = Field(default=0.5, gt=0, lt=1,
                             description="Score at or above which a class is predicted.")
    label_map: dict[str, str] | None = Field(
        default=None, description="Model label → class (default: the standard names).")

    def display_name(self) -> str:
        return self.name or self.kind


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for, but no CUDA device is available")
    return device


class Victim(ABC):
    """A loaded classifier. Subclasses set ``kind`` and ``Config`` and implement ``load``,
    ``preprocess`` and ``labels_of_model``."""

    kind: ClassVar[str]
    Config: ClassVar[type[VictimConfig]]

    def __init__(self, config: VictimConfig):
        self.config = config
        self.name = config.display_name()
        self.device = pick_device(config.device)
        self.thresholds: dict[str, float] = dict.fromkeys(DISEASES, config.threshold)
        self.model = self.load().to(self.device).eval()
        names = self.labels_of_model()
        mapping = config.label_map or STANDARD_LABEL_MAP
        self._columns: dict[str, list[int]] = {c: [] for c in DISEASES}
        for i, label in enumerate(names):
            cls = mapping.get(label) or mapping.get(label.lower())
            if cls in self._columns:
                self._columns[cls].append(i)
        if not any(self._columns.values()):
            raise ValueError(f"victim {self.name!r}: none of its labels ({', '.join(names)}) "
                             "maps onto a class; give label_map")

    @abstractmethod
    def load(self) -> torch.nn.Module:
        """The model, on the CPU."""

    @abstractmethod
    def labels_of_model(self) -> list[str]:
        """The model's output names, in output order."""

    @abstractmethod
    def preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        """Images as float in [0, 1], N × 1 × H × W → the model's input."""

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's raw outputs for images in [0, 1] (differentiable: white-box baselines
        use it)."""
        return self.model(self.preprocess(batch))

    def class_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """Scores of the five disease classes (N × 5), differentiable; a class without a
        mapped label scores 0."""
        import torch

        probs = torch.sigmoid(self.logits(batch))
        cols = [probs[:, idx].amax(dim=1) if idx else torch.zeros_like(probs[:, 0])
                for idx in self._columns.values()]
        return torch.stack(cols, dim=1)

    def scores(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Scores of the six classes (N × 6, in CLASSES order) for stored images."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.config.batch_size):
                batch = to_batch(images[start:start + self.config.batch_size]).to(self.device)
                out.append(self.class_scores(batch).float().cpu().numpy())
        disease = np.concatenate(out) if out else np.zeros((0, len(DISEASES)), np.float32)
        healthy = 1.0 - disease.max(axis=1, keepdims=True) if len(disease) else disease[:, :1]
        return np.concatenate([healthy, disease], axis=1)

    def predict(self, images: Sequence[np.ndarray]) -> list[list[str]]:
        """The black-box answer: the classes scored at or above the threshold per image
        (``healthy`` when no disease is)."""
        return labels_from_scores(self.scores(images), self.thresholds)


def labels_from_scores(scores: np.ndarray, threshold: float | dict[str, float]
                       ) -> list[list[str]]:
    """Classes at or above their threshold per row (``healthy`` when no disease is)."""
    cut = threshold if isinstance(threshold, dict) else dict.fromkeys(DISEASES, threshold)
    out = []
    for row in scores:
        found = [c for c, s in zip(DISEASES, row[1:], strict=True) if s >= cut[c]]
        out.append(found or ["healthy"])
    return out


def to_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (or uint16) grayscale arrays of one size → float N × 1 × H × W in [0, 1]."""
    import torch

    arrays = []
    for img in images:
        a = np.asarray(img)
        if a.ndim == 3:
            a = a.mean(axis=2)
        scale = 65535.0 if a.dtype == np.uint16 else 255.0
        arrays.append(a.astype(np.float32) / scale)
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes in one batch: {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays)[:, None])


VICTIMS: Registry[type[Victim]] = Registry("victim")


def load_victim(spec: VictimConfig) -> Victim:
    return VICTIMS.get(spec.kind)(spec)


# -- kinds --------------------------------------------------------------------------------

class _ResizeNormalize:
    """Resize to a square input and normalise with mean / std, repeated to ``channels``."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], channels: int):
        self.size, self.channels = size, channels
        self.mean, self.std = list(mean), list(std)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        x = batch
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = x.repeat(1, self.channels, 1, 1)
        mean = torch.tensor(_per_channel(self.mean, self.channels), device=x.device)
        std = torch.tensor(_per_channel(self.std, self.channels), device=x.device)
        return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    """A mean or std per input channel (one value serves every channel)."""
    return list(values) * channels if len(values) == 1 else list(values[:channels])


class TimmConfig(VictimConfig):
    kind: Literal["timm"] = "timm"
    architecture: str = Field(description="A timm model name, e.g. densenet121.")
    checkpoint: Path = Field(description="A local state_dict (.pt/.pth/.safetensors).")
    labels: list[str] = Field(min_length=1, description="Output names, in order.")
    input_size: int = 224
    in_chans: int = Field(default=3, ge=1, le=3)
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])


def _state_dict(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


class _ListedLabels(Victim):
    """A model whose output names are given in the config, preprocessed by ``self._pre``."""

    _pre: _ResizeNormalize

    def labels_of_model(self) -> list[str]:
        return list(self.config.labels)

    def preprocess(self, batch):
        return self._pre(batch)


@VICTIMS.register("timm")
class TimmVictim(_ListedLabels):
    kind = "timm"
    Config = TimmConfig

    def load(self):
        import timm

        c = self.config
        model = timm.create_model(c.architecture, pretrained=False, num_classes=len(c.labels),
                                  in_chans=c.in_chans)
        model.load_state_dict(_state_dict(c.checkpoint))
        self._pre = _ResizeNormalize(c.input_size, c.mean, c.std, c.in_chans)
        return model


class TorchscriptConfig(VictimConfig):
    kind: Literal["torchscript"] = "torchscript"
    file: Path = Field(description="A TorchScript file (torch.jit.save).")
    labels: list[str] = Field(min_length=1)
    input_size: int = 224
    in_chans: int = Field(default=1, ge=1, le=3)
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])


@VICTIMS.register("torchscript")
class TorchscriptVictim(_ListedLabels):
    kind = "torchscript"
    Config = TorchscriptConfig

    def load(self):
        import torch

        c = self.config
        if not c.file.is_file():
            raise FileNotFoundError(f"TorchScript file not found: {c.file}")
        self._pre = _ResizeNormalize(c.input_size, c.mean, c.std, c.in_chans)
        return torch.jit.load(str(c.file), map_location="cpu")


class XrvConfig(VictimConfig):
    kind: Literal["torchxrayvision"] = "torchxrayvision"
    architecture: Literal["densenet", "resnet50", "resnet101"] = "densenet"
    weights: str | None = Field(
        default=None, description="A torchxrayvision weights name (e.g. densenet121-res224-all): "
        "its labels and input size; the file itself comes from weights_file (no download).")
    weights_file: Path | None = Field(
        default=None, description="A local state_dict of the model (None: random weights, "
        "for tests only).")
    labels: list[str] | None = Field(default=None, description="Output names (default: those "
                                     "of `weights`, else torchxrayvision's 18 pathologies).")
    input_size: int | None = None


@VICTIMS.register("torchxrayvision")
class XrvVictim(Victim):
    """torchxrayvision's models take one channel scaled to [-1024, 1024] at 224 (DenseNet) or
    512 (ResNet). The model is built here with the labels of its weights and loaded from a
    local file: nothing is downloaded."""

    kind = "torchxrayvision"
    Config = XrvConfig

    def load(self):
        import torch.nn as nn
        import torchxrayvision as xrv

        c = self.config
        info = None
        if c.weights is not None:
            info = xrv.models.model_urls.get(c.weights)
            if info is None:
                raise ValueError(f"unknown torchxrayvision weights {c.weights!r}; known: "
                                 f"{', '.join(sorted(xrv.models.model_urls))}")
        labels = list(c.labels or (info["labels"] if info else
                                   xrv.datasets.default_pathologies))
        self._size = c.input_size or int((info or {}).get(
            "input_resolution", 224 if c.architecture == "densenet" else 512))
        if c.architecture == "densenet":
            model = xrv.models.DenseNet(weights=None, num_classes=len(labels),
                                        apply_sigmoid=False)
            model.targets = model.pathologies = labels
        else:
            import torchvision

            net = getattr(torchvision.models, c.architecture)(num_classes=len(labels),
                                                             weights=None)
            net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            model = nn.Module()
            model.model = net  # the key prefix of torchxrayvision's ResNet state dicts
            model.forward = net.forward
        if c.weights_file is not None:
            state = _state_dict(c.weights_file)
            if c.architecture != "densenet" and not any(k.startswith("model.") for k in state):
                state = {f"model.{k}": v for k, v in state.items()}
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"{c.weights_file}: {len(missing)} weights missing for a "
                                 f"{c.architecture} with {len(labels)} outputs "
                                 f"(e.g. {missing[0]})")
        self._names = labels
        return model

    def labels_of_model(self) -> list[str]:
        return list(self._names)

    def preprocess(self, batch):
        import torch.nn.functional as F

        size = self._size
        x = batch
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                              antialias=True)
        return x * 2048.0 - 1024.0


class DemoConfig(VictimConfig):
    kind: Literal["demo"] = "demo"
    recipe: str = Field(default="demo-cnn",
                        description="A recipe of models/demo_recipes.yaml (trained at first use).")

    def display_name(self) -> str:
        return self.name or self.recipe


@VICTIMS.register("demo")
class DemoVictim(Victim):
    """A classifier trained on phantoms (``models.demo``); trained once, then cached."""

    kind = "demo"
    Config = DemoConfig

    def load(self):
        import torch

        from advbench.models.demo import build_model, ensure_trained, recipes

        trained = ensure_trained(self.config.recipe)
        self.metrics = trained.metrics
        self.thresholds.update(trained.metrics.get("thresholds") or {})  # chosen on held-out
        self._size = int(recipes()["data"]["size"])
        model = build_model(recipes()["victims"][self.config.recipe]["architecture"])
        model.load_state_dict(torch.load(trained.weights, map_location="cpu",
                                         weights_only=True))
        return model

    def labels_of_model(self) -> list[str]:
        return list(DISEASES)

    def preprocess(self, batch):
        import torch.nn.functional as F

        if batch.shape[-1] != self._size or batch.shape[-2] != self._size:
            batch = F.interpolate(batch, size=(self._size, self._size), mode="bilinear",
                                  align_corners=False, antialias=True)
        return batch
