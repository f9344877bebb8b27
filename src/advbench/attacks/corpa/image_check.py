"""The image check: a model that is not a victim must find the target in a candidate image
before the candidate is kept.

- ``classifier``: any model of the victim registry; it passes a candidate when it finds the
  classes the edit added and none it removed (``sees_target``).
- ``clip``: any open_clip model (a name plus a local weights file or ``local-dir:``), zero-shot:
  it passes a candidate when the image is closer to a prompt naming the target labels than to
  one naming the source labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from advbench.concepts.vocabulary import CLASSES
from advbench.models.clip import load_open_clip
from advbench.models.victims import VICTIMS, Victim, load_victim, pick_device

CLASS_WORDS = {"healthy": "no abnormality", "cancer": "a lung mass or nodules",
               "pneumonia": "pneumonia", "pleural_effusion": "a pleural effusion",
               "cardiomegaly": "an enlarged heart", "pneumothorax": "a pneumothorax"}


class ClassifierCheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: Literal["classifier"] = "classifier"
    model: VICTIMS.config_spec()  # type: ignore[valid-type]

    def identity(self) -> str:
        return self.model.model_dump_json()


class ClipCheckConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    kind: Literal["clip"] = "clip"
    model: str = Field(description="An open_clip model name, e.g. ViT-B-16.")
    pretrained: str = Field(description="A local weights file (.bin/.safetensors) or "
                            "local-dir:/folder; nothing is downloaded.")
    model_config_file: Path | None = Field(
        default=None, description="An open_clip model config (JSON) for an architecture "
        "open_clip does not ship; its file name (stem) is the model name.")
    prompt: str = Field(default="a chest radiograph showing {findings}",
                        description="Prompt template; {findings} lists the labels.")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def identity(self) -> str:
        return self.model_dump_json()


class ClipChecker:
    """Zero-shot target-versus-source check with an open_clip model."""

    def __init__(self, config: ClipCheckConfig):
        import torch

        self.config = config
        self.name = f"clip:{config.model}"
        self.device = pick_device(config.device)
        self.model, self.preprocess, self.tokenizer = load_open_clip(
            config.model, config.pretrained, config.model_config_file, self.device)
        self._torch = torch

    def prompt(self, labels: list[str]) -> str:
        words = [CLASS_WORDS[c] for c in CLASSES if c in labels] or [CLASS_WORDS["healthy"]]
        return self.config.prompt.format(findings=" and ".join(words))

    def verdict(self, pixels: np.ndarray, target: list[str], source: list[str]
                ) -> dict[str, Any]:
        from PIL import Image

        torch = self._torch
        image = Image.fromarray(np.asarray(pixels)).convert("RGB")
        x = self.preprocess(image).unsqueeze(0).to(self.device)
        texts = self.tokenizer([self.prompt(target), self.prompt(source)]).to(self.device)
        with torch.no_grad():
            img = self.model.encode_image(x)
            txt = self.model.encode_text(texts)
            img = img / img.norm(dim=-1, keepdim=True)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            probs = (100.0 * img @ txt.T).softmax(dim=-1)[0].float().cpu().numpy()
        return {"model": self.name, "target_score": float(probs[0]),
                "source_score": float(probs[1]), "passed": bool(probs[0] > probs[1])}


class ClassifierChecker:
    """A classifier of the victim registry: its answer must be the target labels."""

    def __init__(self, config: ClassifierCheckConfig):
        self.victim: Victim = load_victim(config.model)
        self.name = self.victim.name

    def verdict(self, pixels: np.ndarray, target: list[str], source: list[str]
                ) -> dict[str, Any]:
        columns = {c: i for i, c in enumerate(CLASSES)}
        scores = self.victim.scores([pixels])[0]
        answer = set(self.victim.predict([pixels])[0])
        removed = [c for c in source if c not in target]
        return {
            "model": self.name,
            "target_score": float(np.mean([scores[columns[c]] for c in target])),
            "source_score": float(np.mean([scores[columns[c]] for c in removed]))
            if removed else None,
            "passed": sees_target(answer, target, source),
        }


def sees_target(answer: set[str], target: list[str], source: list[str]) -> bool:
    """Whether a classifier's answer shows what the edit made: every added class found and no
    removed class found; when no class changed (``inner_class``), every target class found. A
    class the edit did not touch is not asked about: the checker's mistakes on pixels the edit
    left as they were say nothing about the candidate (an exact match of all five labels
    would reject good candidates for every unrelated mistake of a small checker)."""
    diseases = set(target) - {"healthy"}
    if not diseases:  # a normal target: no disease at all may be found
        return answer <= {"healthy"}
    added = diseases - set(source)
    removed = set(source) - set(target) - {"healthy"}
    wanted = added if (added or removed) else diseases
    return wanted <= answer and not (removed & answer)


def make_checker(config: ClassifierCheckConfig | ClipCheckConfig):
    return ClipChecker(config) if config.kind == "clip" else ClassifierChecker(config)
