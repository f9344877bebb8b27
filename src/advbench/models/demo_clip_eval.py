"""Held-out figures of a demo CLIP, written next to its weights: an untrained surrogate or
victim would make every MedFocusLeak figure meaningless, so each model says how well it reads
modality, findings and the attack's own edits."""

from __future__ import annotations

from typing import Any

import numpy as np

from advbench.models.demo_clip import (
    MODALITIES,
    PairSet,
    clip_text,
    modality_prompt,
    normalise,
)


def _embed_images(model: Any, images: np.ndarray, batch: int = 256) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([model.encode_image(normalise(torch.from_numpy(images[s:s + batch])),
                                             normalize=True)
                          for s in range(0, len(images), batch)])


def _embed_texts(model: Any, tokenizer: Any, texts: list[str], batch: int = 256) -> Any:
    import torch

    with torch.no_grad():
        return torch.cat([model.encode_text(tokenizer(texts[s:s + batch]), normalize=True)
                          for s in range(0, len(texts), batch)])


def _by_modality(correct: np.ndarray, modalities: list[str]) -> dict[str, float]:
    mods = np.asarray(modalities)
    return {m: round(float(correct[mods == m].mean()), 4) for m in MODALITIES
            if (mods == m).any()}


def evaluate(model: Any, tokenizer: Any, held: PairSet) -> dict[str, Any]:
    """Held-out figures of a CLIP (chance levels in brackets):

    * ``retrieval``: image→text top-1 / top-5 among all distinct held-out texts (1/n, 5/n);
    * ``zero_shot_modality``: choosing the right one of the eight ``modality_prompt`` s (1/8);
    * ``lesion_pairs``: the same case with and without its finding (CT, MR, fundus, histology,
      chest X-ray): each image must score its own text above the other one's (1/2);
    * ``edit_check``: each image must score its text above texts with one medically
      significant edit by MedFocusLeak's target rules (what the attack pushes towards) (1/2).
    """
    from advbench.attacks.medfocusleak.targets import rule_targets

    img = _embed_images(model, held.images)
    texts = held.texts
    distinct, truth = np.unique(np.asarray(texts), return_inverse=True)
    sims = (img @ _embed_texts(model, tokenizer, distinct.tolist()).T).numpy()
    rank = (sims > sims[np.arange(len(truth)), truth][:, None]).sum(1)
    prompts = _embed_texts(model, tokenizer, [modality_prompt(m) for m in MODALITIES])
    guess = (img @ prompts.T).argmax(1).numpy()
    zero = guess == np.asarray([MODALITIES.index(m) for m in held.modalities])
    out: dict[str, Any] = {
        "retrieval": {"top1": round(float((rank < 1).mean()), 4),
                      "top5": round(float((rank < 5).mean()), 4),
                      "top1_per_modality": _by_modality(rank < 1, held.modalities),
                      "candidates": len(distinct)},
        "zero_shot_modality": {"accuracy": round(float(zero.mean()), 4),
                               "per_modality": _by_modality(zero, held.modalities)}}
    if len(held.pair_of):
        a = held.pair_of
        own = _embed_texts(model, tokenizer, [texts[i] for i in a])
        clear = [clip_text(held.modalities[i], f)
                 for i, f in zip(a, held.pair_findings, strict=True)]
        clear_txt = _embed_texts(model, tokenizer, clear)
        clear_img = _embed_images(model, held.pair_images)
        ok_with = ((img[a] * own).sum(1) > (img[a] * clear_txt).sum(1)).numpy()
        ok_without = ((clear_img * clear_txt).sum(1) > (clear_img * own).sum(1)).numpy()
        both = (ok_with.astype(float) + ok_without) / 2
        mods = [held.modalities[i] for i in a]
        out["lesion_pairs"] = {"accuracy": round(float(both.mean()), 4),
                               "per_modality": _by_modality(both, mods), "pairs": len(a)}
    rows, edited = [], []
    for i, (m, f) in enumerate(zip(held.modalities, held.findings, strict=True)):
        for target in rule_targets(f, m, 3, seed=i, max_edits=1):
            rows.append(i)
            edited.append(clip_text(m, target.text))
    if rows:
        own = _embed_texts(model, tokenizer, [texts[i] for i in rows])
        other = _embed_texts(model, tokenizer, edited)
        ok = ((img[rows] * own).sum(1) > (img[rows] * other).sum(1)).numpy()
        out["edit_check"] = {"accuracy": round(float(ok.mean()), 4),
                             "per_modality": _by_modality(ok, [held.modalities[i] for i in rows]),
                             "edits": len(rows)}
    return out
