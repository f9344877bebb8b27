"""The white-box baseline CoRPA is compared with: L∞ PGD on each victim, on the same clean
studies, at the configured budgets (the paper's ε = 4/255 and 8/255).

PGD is the Adversarial Robustness Toolbox's (``ProjectedGradientDescentPyTorch``), not written
again here. Compared with torchattacks: torchattacks' PGD fixes a cross-entropy loss over
exclusive classes, so it cannot attack a multi-label model, and its package pins requests 2.25,
which breaks this project's Prefect. ART takes any loss; its classifier reduces one-hot labels
for the standard BCE classes, so the multi-label BCE is given as a module of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from advbench.models.victims import DISEASES, labels_from_scores, to_batch

if TYPE_CHECKING:
    from advbench.models.victims import Victim


class PgdConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epsilons: list[float] = Field(default_factory=lambda: [4 / 255, 8 / 255], min_length=1,
                                  description="L∞ budgets on images scaled to [0, 1].")
    steps: int = Field(default=10, ge=1, le=200)
    step_fraction: float = Field(default=0.25, gt=0, le=1,
                                 description="Step size as a fraction of ε.")


def pgd_answers(victim: Victim, image: np.ndarray, true_labels: list[str], config: PgdConfig
                ) -> list[dict[str, Any]]:
    """The victim's labels on untargeted PGD images of ``image`` (one per ε), attacking its
    multi-label loss against the study's true labels."""
    import torch
    import torch.nn.functional as F
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    class ClassScores(torch.nn.Module):
        def forward(self, x):
            return victim.class_scores(x)

    class MultiLabelBCE(torch.nn.Module):  # not an nn.BCELoss: ART would reduce the labels
        def forward(self, probs, y):
            return F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), y.float())

    x = to_batch([image]).numpy()
    y = np.array([[1.0 if c in true_labels else 0.0 for c in DISEASES]], np.float32)
    classifier = PyTorchClassifier(
        model=ClassScores(), loss=MultiLabelBCE(), input_shape=x.shape[1:],
        nb_classes=len(DISEASES), clip_values=(0.0, 1.0),
        device_type="gpu" if victim.device == "cuda" else "cpu")
    out = []
    for eps in config.epsilons:
        attack = ProjectedGradientDescentPyTorch(
            classifier, norm=np.inf, eps=eps, eps_step=eps * config.step_fraction,
            max_iter=config.steps, targeted=False, num_random_init=0, batch_size=1,
            verbose=False)
        adv = attack.generate(x=x, y=y)
        scores = victim.scores([(adv[0, 0] * 255.0).round().clip(0, 255).astype(np.uint8)])
        out.append({"epsilon": float(eps),
                    "labels": labels_from_scores(scores, victim.thresholds)[0]})
    return out
