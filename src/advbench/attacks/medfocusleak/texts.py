"""The texts the attack works on: a study's findings (a chest radiograph's FINDINGS and
IMPRESSION only) and the (target, truth) pair the surrogates read, cut to the edited sentence
when an edit lies past their context length."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from advbench.models.clip import Surrogate


def findings_of(study: Any) -> str:
    """The findings text a study's targets are made from, and answers judged against: a chest
    radiograph report's kept sections (FINDINGS and IMPRESSION: not the header, indication or
    history, which a victim never sees), any other study's findings as given."""
    report = study.report or ""
    if not study.is_chest_radiograph:
        return report
    from advbench.concepts.extract import default_extractor

    kept = default_extractor().sections(report)
    return " ".join(" ".join(report[s.start:s.end].split()) for s in kept).strip() or report


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def aim_texts(truth: str, target: str, surrogates: list[Surrogate]) -> tuple[str, str] | None:
    """(target, truth) as the surrogates should read them: whole, when some surrogate's
    tokenizer sees the edit; else from the first edited sentence on (CLIP reads 77 tokens, a
    long report's edit may lie past them); None when even that hides it."""
    if any(not s.reads_alike(target, truth) for s in surrogates):
        return target, truth
    a, b = _SENTENCE_END.split(target), _SENTENCE_END.split(truth)
    if len(a) == len(b):
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        if first is not None:
            window = " ".join(a[first:]), " ".join(b[first:])
            if any(not s.reads_alike(*window) for s in surrogates):
                return window
    return None
