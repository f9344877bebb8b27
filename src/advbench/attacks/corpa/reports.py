"""Adversarial reports that say exactly their target concept states.

A perturbation changes some concepts. The writer takes their mentions out of the report (a
list item or clause where other findings share the sentence, else the sentence), adds
sentences that state the new states (FINDINGS and IMPRESSION alike), keeps every other section
and sentence as it was, and re-extracts the result: a report is accepted only when all 17
states equal the target. Otherwise other sentences and the sentence-level removal are tried,
and when none works the failure is returned with the states that differ.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from advbench.attacks.corpa.planner import Perturbation, stable_seed
from advbench.attacks.corpa.sentences import SentenceBank, role_of, side_of
from advbench.concepts.extract import ConceptExtractor, Mention
from advbench.concepts.vocabulary import CONCEPTS, STATE_PRIORITY

# what separates the items of a list inside a sentence
_SEPARATOR = re.compile(r"\s*(?:,\s*(?:and/or|and|or|nor)?|;|\s(?:and/or|and|or|nor|with))\s+")
# words that open a list and belong to all of it: kept when its first item goes
_OPENING = re.compile(
    r"(?:(?:no|not|without|there|is|are|was|were|a|an|the|of|evidence|for|possible|possibly|"
    r"probable|probably|likely|new|definite|definitely|any|suspected|questionable|also|again|"
    r"persistent|stable|unchanged|redemonstrated|interval|increased|decreased|continued)\s+)*",
    re.IGNORECASE)
_NUMBERED = re.compile(r"(?m)^\s*(\d{1,2})[.)]\s")


@dataclass(frozen=True)
class Written:
    """The outcome of writing one adversarial report."""

    status: str  # "verified" or "failed"
    report: str | None
    achieved: dict[str, str]
    reason: str | None
    tries: int


def has_normal(state: str) -> bool:
    """Whether an ``unremarkable`` state means a normal statement is made (its positive or
    negative is then decided by the disease concepts, not by the statement)."""
    return state in ("positive", "negative")


class ReportWriter:
    """Writes and verifies adversarial reports; one per worker (the bank grows per corpus)."""

    def __init__(self, extractor: ConceptExtractor, bank: SentenceBank, *, tries: int = 12):
        self.extractor = extractor
        self.bank = bank
        self.tries = tries

    def write(self, report: str, perturbation: Perturbation) -> Written:
        target = perturbation.target_concepts
        rng = random.Random(stable_seed(perturbation.id))
        found = self.extractor.extract(report)
        source = found.concepts
        drop = {c for c in CONCEPTS if _changed(c, source[c], target[c])
                and source[c] != "absent"}
        needs = {c: target[c] for c in CONCEPTS
                 if _changed(c, source[c], target[c]) and target[c] != "absent"}
        got: dict[str, str] = dict(source)
        reason = "no candidate was tried"
        for attempt in range(self.tries):
            whole_sentences = attempt % 2 == 1
            text = _remove(report, found.mentions, drop,
                           self.extractor.sentence_spans(report), whole_sentences)
            if text is None:
                continue
            text = self._add(text, needs, rng, attempt)
            text, got = self._repair(text, target, rng, attempt)
            if got == target:
                return Written("verified", text, got, None, attempt + 1)
            reason = "re-extraction differs: " + ", ".join(
                f"{c} wanted {target[c]}, got {got[c]}" for c in CONCEPTS if got[c] != target[c])
        return Written("failed", None, got, reason, self.tries)

    # -- adding ---------------------------------------------------------------------------

    def _add(self, text: str, needs: dict[str, str], rng: random.Random, attempt: int) -> str:
        """Insert a sentence per needed state: positive findings into FINDINGS and their short
        form into IMPRESSION, negatives into FINDINGS, a normal statement into IMPRESSION."""
        if not needs:
            return text
        sections = {}
        for s in self.extractor.sections(text):
            if s.name == "body" or s.name not in sections:
                sections[s.name] = s  # the first FINDINGS / IMPRESSION, the last body part
        place: dict[str, list[str]] = {}
        for concept in CONCEPTS:
            state = needs.get(concept)
            if state is None:
                continue
            first = None  # the findings sentence: the impression says the same
            for section in _targets(concept, state, sections):
                said = "positive" if concept == "unremarkable" else state  # a normal statement
                role = role_of(said, section)
                if first is not None and role == "impression" and len(first) <= 90:
                    sentence = first
                else:
                    sentence = self._choose(concept, state, role, rng, attempt,
                                            first and side_of(first))
                if sentence is None:
                    continue
                first = first or sentence
                place.setdefault(section, []).append(sentence)
        for name in sorted(place, key=lambda n: -sections[n].end if n in sections else 0):
            text = _insert(text, sections.get(name), place[name])
        return text

    def _choose(self, concept: str, state: str, role: str, rng: random.Random,
                attempt: int, side: str | None) -> str | None:
        state = "positive" if concept == "unremarkable" else state
        options = self.bank.candidates(concept, state, role, random.Random(rng.random()),
                                       side=side)
        if not options:
            return None
        return options[(attempt // 2) % len(options)]

    # -- repair ---------------------------------------------------------------------------

    def _repair(self, text: str, target: dict[str, str], rng: random.Random,
                attempt: int) -> tuple[str, dict[str, str]]:
        """One pass over what re-extraction still gets wrong: a state that is missing (a kept
        concept whose sentence went) is stated again; one that is too strong is taken out with
        its sentence."""
        got = self.extractor.extract(text).concepts
        for _ in range(2):
            wrong = [c for c in CONCEPTS if got[c] != target[c]
                     and not (c == "unremarkable" and has_normal(got[c]) == has_normal(target[c]))]
            if not wrong:
                break
            strong = {c for c in wrong if c != "unremarkable" and (
                target[c] == "absent" or STATE_PRIORITY[got[c]] > STATE_PRIORITY[target[c]])}
            if strong:
                found = self.extractor.extract(text)
                cut = _remove(text, found.mentions, strong,
                              self.extractor.sentence_spans(text), True)
                text = cut if cut is not None else text
            weak = {c: target[c] for c in wrong if c not in strong and target[c] != "absent"}
            if weak:
                text = self._add(text, weak, rng, attempt)
            got = self.extractor.extract(text).concepts
        return text, got


def _changed(concept: str, before: str, after: str) -> bool:
    if concept == "unremarkable":
        return has_normal(before) != has_normal(after)
    return before != after


def _targets(concept: str, state: str, sections: dict) -> list[str]:
    """The sections a new sentence goes into."""
    if "findings" not in sections and "impression" not in sections:
        return ["body"] if "body" in sections else []
    if concept == "unremarkable":
        return ["impression"] if "impression" in sections else ["findings"]
    if state == "negative":
        return ["findings"] if "findings" in sections else ["impression"]
    return [s for s in ("findings", "impression") if s in sections]


def _insert(text: str, section, sentences: list[str]) -> str:
    """Sentences added at the end of a section's text (numbered on when it is a numbered
    list); without the section, at the end of the report."""
    if section is None:
        end = len(text.rstrip())
        return text[:end] + ("\n" if end else "") + " ".join(sentences) + text[end:]
    body = text[section.start:section.end]
    end = section.start + len(body.rstrip())
    numbers = _NUMBERED.findall(body)
    if numbers:
        n = int(numbers[-1])
        line_start = text.rfind("\n", section.start, end) + 1
        indent = re.match(r"[ \t]*", text[line_start:end]).group()
        added = "".join(f"\n{indent}{n + i + 1}. {s}" for i, s in enumerate(sentences))
    else:
        last = text[section.start:end].rstrip()
        lead = " " if not last or last.endswith((".", "!", "?", ":")) else ". "
        added = lead + " ".join(sentences)
    return text[:end] + added + text[end:]


def _remove(text: str, mentions: list[Mention], drop: set[str],
            sentences: list[tuple[str, int, int]], whole_sentences: bool) -> str | None:
    """The report without the mentions of ``drop``: each goes with its list item or clause
    when other findings share its sentence (``whole_sentences``: with its sentence)."""
    if not drop:
        return text
    cuts: list[tuple[int, int]] = []
    for _, a, b in sentences:
        inside = [m for m in mentions if a <= m.start < b]
        gone = [(m.start, m.end) for m in inside if m.concept in drop]
        if not gone:
            continue
        kept = sorted({(m.start, m.end) for m in inside if m.concept not in drop} - set(gone))
        if whole_sentences or not kept:
            cuts.append(_sentence_cut(text, a, b))
            continue
        for s, e in sorted(set(gone)):
            cut = _item_cut(text, a, b, s, e, kept)
            if cut is None:
                return None
            cuts.append(cut)
    out = text
    for s, e in sorted(_merge(cuts), reverse=True):
        out = out[:s] + out[e:]
    return out


def _sentence_cut(text: str, a: int, b: int) -> tuple[int, int]:
    """A whole sentence with the spaces after it on its line."""
    e = b
    while e < len(text) and text[e] in " \t":
        e += 1
    return a, e


def _item_cut(text: str, a: int, b: int, s: int, e: int,
              kept: list[tuple[int, int]]) -> tuple[int, int] | None:
    """The span of the list item or clause around a mention [s, e) inside sentence [a, b),
    with one separator, never touching a kept mention."""
    sentence = text[a:b]
    seps = [(m.start() + a, m.end() + a) for m in _SEPARATOR.finditer(sentence)]
    left = max((x for x in seps if x[1] <= s), default=None, key=lambda x: x[1])
    right = min((x for x in seps if x[0] >= e), default=None, key=lambda x: x[0])
    item_start = left[1] if left else a
    end = b - 1 if text[b - 1] in ".;!?" else b
    item_end = right[0] if right else end
    if any(item_start <= ks < item_end for ks, _ in kept):
        return None  # a kept finding in the same item: only the sentence can go
    if left:
        return left[0], item_end  # ", item" / " or item": the separator before it goes too
    if right:
        opening = _OPENING.match(text, item_start, s)
        return (opening.end() if opening else item_start), right[1]
    return None


def _merge(cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(cuts):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
