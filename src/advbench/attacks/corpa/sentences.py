"""Sentences that state one or two concepts, for writing adversarial reports.

The bank is made from the corpus being built: every sentence of the kept sections, keyed by the
(concept, state) pairs it expresses on its own (re-extracted alone, so a sentence whose meaning
leans on its neighbours is not kept), deduplicated by text. Where the corpus has no sentence for
a need, the written-out sentences of ``sentences.yaml`` are used; they are checked the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources

import yaml

from advbench.concepts.extract import ConceptExtractor
from advbench.concepts.vocabulary import CONCEPTS

Key = frozenset[tuple[str, str]]  # the (concept, state) pairs a sentence expresses
# a negative from the bank must say "not there" plainly ("No effusion."), not "resolved"
_PLAIN_NEGATION = re.compile(r"\b(?:no|not|without|negative for|free of)\b", re.IGNORECASE)
# a sentence that leans on the one before it reads wrong anywhere else
_LEANING = re.compile(r"(?:otherwise|also|however|again|as compared|compared|in comparison|"
                      r"additionally|in addition|but|and|this|these|it|which|there has been)\b",
                      re.IGNORECASE)
_SIDE_WORD = re.compile(r"\b(right|left|bilateral|bilaterally|both)\b", re.IGNORECASE)
_SIDES = ("right", "left")
_MAX_CHARS = 160
_MIN_CHARS = 8


@cache
def written_sentences() -> dict[str, dict[str, list[str]]]:
    """The fallback sentences per concept and role (see sentences.yaml)."""
    text = resources.files("advbench.attacks.corpa").joinpath("sentences.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    unknown = sorted(set(data) - set(CONCEPTS))
    if unknown:
        raise ValueError(f"sentences.yaml names unknown concepts: {unknown}")
    return data


def key_of(concepts: dict[str, str]) -> Key:
    return frozenset((c, s) for c, s in concepts.items() if s != "absent")


def role_of(state: str, section: str) -> str:
    """Which kind of sentence states ``state`` in a section."""
    if state in ("negative", "uncertain"):
        return state
    return "impression" if section == "impression" else "findings"


class SentenceBank:
    """Corpus sentences by what they say, with the written fallback behind them."""

    def __init__(self, extractor: ConceptExtractor):
        self.extractor = extractor
        self._by_key: dict[tuple[Key, str], list[str]] = {}
        self._seen: set[str] = set()
        self._checked: dict[str, Key] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def add_reports(self, reports: Iterable[str]) -> None:
        for report in reports:
            self.add_report(report)

    def add_report(self, report: str) -> None:
        """Bank the sentences of one report that state one or two concepts on their own."""
        for section, start, end in self.extractor.sentence_spans(report):
            sentence = " ".join(report[start:end].split())
            if (sentence in self._seen or "___" in sentence
                    or not _MIN_CHARS <= len(sentence) <= _MAX_CHARS
                    or not sentence[0].isupper() or _LEANING.match(sentence)):
                continue
            self._seen.add(sentence)
            key = self.says(sentence)
            if not 1 <= len(key) <= 2:
                continue
            states = {s for _, s in key}
            if len(states) != 1:
                continue  # one plain statement: all present, all hedged or all negated
            role = role_of(next(iter(states)), section)
            if role == "impression" and len(sentence) > 80:
                continue
            if role == "negative" and not _PLAIN_NEGATION.search(sentence):
                continue
            self._by_key.setdefault((key, role), []).append(sentence)

    def says(self, sentence: str) -> Key:
        """The (concept, state) pairs a sentence expresses on its own (cached)."""
        key = self._checked.get(sentence)
        if key is None:
            key = key_of(self.extractor.extract(sentence).concepts)
            self._checked[sentence] = key
        return key

    def candidates(self, concept: str, state: str, role: str, rng: random.Random,
                   limit: int = 6, side: str | None = None) -> list[str]:
        """Sentences that say ``concept`` is ``state`` and nothing else, corpus ones first
        (in a seeded order), then the written ones that check out. With ``side``, only
        sentences that name no other side (so FINDINGS and IMPRESSION agree)."""
        key = frozenset({(concept, state)})
        found = list(self._by_key.get((key, role), ()))
        rng.shuffle(found)
        if side is not None:
            found = [s for s in found if side_of(s) in (None, side)]
        out = found[:limit]
        side = side or rng.choice(_SIDES)
        for sentence in self._written(concept, role, side, rng):
            if self.says(sentence) == key and sentence not in out:
                out.append(sentence)
        return out

    @staticmethod
    def _written(concept: str, role: str, side: str, rng: random.Random) -> list[str]:
        forms = written_sentences().get(concept, {})
        if role == "uncertain":  # "Possible small left pleural effusion."
            made = [f"Possible {s[0].lower()}{s[1:]}" for s in forms.get("impression", ())]
        else:
            made = list(forms.get(role, ()))
        rng.shuffle(made)
        word = "bilateral" if side == "bilateral" else side
        return [s.format(side=word, Side=word.capitalize()) for s in made]



def side_of(sentence: str) -> str | None:
    """The side a sentence names ("right", "left", "bilateral"), None when none or several."""
    sides = {m.group(1).lower() for m in _SIDE_WORD.finditer(sentence)}
    sides = {"bilateral" if s in ("bilaterally", "both") else s for s in sides}
    return sides.pop() if len(sides) == 1 else None
