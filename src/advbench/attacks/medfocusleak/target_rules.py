"""The edit rules of MedFocusLeak target findings: targets.yaml loaded, checked and compiled.

Rules are data so that a clinician can read and extend them without reading Python; this
module only turns them into regular expressions and finds every place in a text where one
applies (a ``Candidate``: one span and what it can become). Choosing among candidates is
``targets.py``'s job. The YAML format is described at the top of targets.yaml.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Candidate", "RuleSet", "TargetRulesError", "canonical_modality", "load_rules",
           "rules_for"]

Term = str | list[str]  # a term, or a list of synonyms that stand for one term
_WORD = r"(?<![\w-])"  # a term starts a word (a hyphen belongs to the word: "non-enhancing")
_END = r"(?![\w-])"
_SCALE_END = r"(?![\w+]|\.\d)"


class TargetRulesError(ValueError):
    """targets.yaml is malformed (unknown key, bad regex, empty group)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class _Pattern(_Model):
    find: str
    replace: str
    at: Literal["anywhere", "sentence_start"] = "anywhere"


class _Scale(_Model):
    prefix: str
    values: list[Term] = Field(min_length=2)


class _Measure(_Model):
    units: list[str] = Field(min_length=1)
    factors: list[float] = Field(min_length=1)


class RuleBlock(_Model):
    """One attribute's rules in one section of targets.yaml."""

    groups: list[list[Term]] = []
    exact: list[list[Term]] = []
    maps: dict[str, str | list[str]] = {}
    patterns: list[_Pattern] = []
    scales: list[_Scale] = []
    measure: _Measure | None = None
    exclude: list[str] = []


class _ConceptCheck(_Model):
    modalities: list[str] = []
    uncaptured: list[str] = []


class _RulesFile(_Model):
    aliases: dict[str, str] = {}
    names: dict[str, str] = {}
    concept_check: _ConceptCheck = _ConceptCheck()
    generic: dict[str, RuleBlock]
    modalities: dict[str, dict[str, RuleBlock]] = {}


@dataclass(frozen=True)
class Candidate:
    """One applicable edit: ``text[start:end]`` (``from_``) becomes ``to``."""

    attribute: str
    start: int
    end: int
    from_: str
    to: str


def _norm(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def _phrase_regex(phrase: str) -> str:
    return r"\s+".join(re.escape(w) for w in phrase.split())


def _alternation(phrases: Iterable[str]) -> str:
    """Longest first, so "right middle lobe" wins over "right" at the same place."""
    return "|".join(_phrase_regex(p) for p in sorted(set(phrases), key=lambda p: (-len(p), p)))


def match_case(source: str, replacement: str) -> str:
    """``replacement`` written in ``source``'s case: all capitals, or a capital first letter."""
    letters = [c for c in source if c.isalpha()]
    if not letters or not replacement:
        return replacement
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if letters[0].isupper() and source.lstrip()[:1].isalpha():
        return replacement[0].upper() + replacement[1:]
    return replacement


def at_sentence_start(text: str, pos: int) -> bool:
    """Nothing but a sentence end, colon, line break or list mark before ``pos``."""
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?:;-•*" or "\n" in text[len(before):pos]


def _synonym_table(groups: list[list[Term]], table: dict[str, list[str]],
                   key: Callable[[str], str] = _norm) -> None:
    """Term -> other terms of its groups; synonym j maps to synonym j of the other term."""
    for group in groups:
        rungs = [[t] if isinstance(t, str) else list(t) for t in group]
        for i, rung in enumerate(rungs):
            for j, term in enumerate(rung):
                alts = table.setdefault(key(term), [])
                for k, other in enumerate(rungs):
                    if k != i:
                        to = other[j] if j < len(other) else other[0]
                        if to not in alts:
                            alts.append(to)


def _scale_number(number: str, factor: float) -> str:
    """``number`` times ``factor``, with the source's decimals (more only where needed)."""
    decimals = len(number.split(".")[1]) if "." in number else 0
    value = float(number) * factor
    for d in range(decimals, decimals + 3):
        if abs(round(value, d) - value) < 1e-9:
            break
    return f"{round(value, d):.{d}f}"


class AttributeRules:
    """All rules of one attribute for one modality (its own section's first, then generic)."""

    def __init__(self, name: str, blocks: list[RuleBlock], where: str):
        self.name = name
        phrases: dict[str, list[str]] = {}
        exact: dict[str, list[str]] = {}
        self.patterns: list[tuple[re.Pattern[str], str, str]] = []
        self.scales: list[tuple[re.Pattern[str], dict[str, list[str]]]] = []
        self.measures: list[tuple[re.Pattern[str], list[float]]] = []
        excludes: list[str] = []
        for block in blocks:
            _synonym_table(block.groups, phrases)
            _synonym_table(block.exact, exact, key=str)
            for term, to in block.maps.items():
                alts = phrases.setdefault(_norm(term), [])
                alts.extend(t for t in ([to] if isinstance(to, str) else to) if t not in alts)
            for p in block.patterns:
                self.patterns.append((_compile(_WORD + f"(?:{p.find})", where), p.replace, p.at))
            for s in block.scales:
                table: dict[str, list[str]] = {}
                _synonym_table([s.values], table)
                regex = (f"{_WORD}(?P<prefix>{s.prefix})(?P<value>{_alternation(table)})"
                         f"{_SCALE_END}")
                self.scales.append((_compile(regex, where), table))
            if block.measure:
                units = _alternation(block.measure.units)
                regex = (r"(?<![\w.])(?P<nums>\d+(?:\.\d+)?(?:\s*[x×]\s*\d+(?:\.\d+)?)*)"
                         rf"(?P<sp>\s*)(?P<unit>{units})(?!\w)")
                self.measures.append((_compile(regex, where), block.measure.factors))
            excludes.extend(block.exclude)
        self.phrases = phrases
        self.exact = exact
        self.phrase_re = (_compile(f"{_WORD}(?:{_alternation(phrases)}){_END}", where)
                          if phrases else None)
        self.exact_re = (_compile(f"{_WORD}(?:{_alternation(exact)}){_END}", where, flags=0)
                         if exact else None)
        self.exclude_re = [_compile(e, where) for e in excludes]

    def _sites(self, text: str) -> Iterable[tuple[int, int, str, bool]]:
        """(start, end, replacement, trim?) for every rule match, replacements in source case;
        pattern matches carry context words, which are trimmed off."""
        if self.phrase_re:
            for m in self.phrase_re.finditer(text):
                for to in self.phrases[_norm(m.group())]:
                    yield m.start(), m.end(), match_case(m.group(), to), False
        if self.exact_re:
            for m in self.exact_re.finditer(text):
                for to in self.exact[m.group()]:
                    yield m.start(), m.end(), to, False
        for regex, replace, at in self.patterns:
            for m in regex.finditer(text):
                if m.end() > m.start() and (at == "anywhere" or at_sentence_start(text, m.start())):
                    yield m.start(), m.end(), match_case(m.group(), m.expand(replace)), True
        for regex, table in self.scales:
            for m in regex.finditer(text):
                for to in table[_norm(m.group("value"))]:
                    yield m.start(), m.end(), m.group("prefix") + to, False
        for regex, factors in self.measures:
            for m in regex.finditer(text):
                for f in factors:
                    nums = re.sub(r"\d+(?:\.\d+)?", lambda n, f=f: _scale_number(n.group(), f),
                                  m.group("nums"))
                    yield m.start(), m.end(), nums + m.group("sp") + m.group("unit"), False

    def candidates(self, text: str) -> list[Candidate]:
        excluded = [m.span() for r in self.exclude_re for m in r.finditer(text)]
        out: list[Candidate] = []
        for start, end, to, trim in self._sites(text):
            if any(s < end and start < e and not (start <= s and e <= end)
                   for s, e in excluded):
                continue
            if text[start:end] == to:
                continue
            if trim:
                cut_start, cut_end, to = _trim(text[start:end], to)
                start, end = start + cut_start, end - cut_end
            start, end, to = _agree_articles(text, start, end, to)
            out.append(Candidate(self.name, start, end, text[start:end], to))
        return out


def _trim(src: str, to: str) -> tuple[int, int, str]:
    """Whole words at either end that a pattern leaves as they were: (chars cut at the start,
    chars cut at the end, the rest of ``to``), so the edit names only what it changes
    ("Heart size is normal" -> "... is enlarged" is normal -> enlarged)."""
    n = min(len(src), len(to))
    c = 0
    while c < n and src[c] == to[c]:
        c += 1
    p = next((i for i in range(c, 0, -1) if src[i - 1].isspace()), 0)
    n -= p
    c = 0
    while c < n and src[-1 - c] == to[-1 - c]:
        c += 1
    s = next((i for i in range(c, 0, -1) if src[-i].isspace()), 0)
    return p, s, to[p:len(to) - s]


_ARTICLE = re.compile(r"(?<![\w-])(an?)(\s+)\Z", re.IGNORECASE)
_ARTICLE_END = re.compile(r"(?<![\w-])(an?)\Z", re.IGNORECASE)
_AN_EXCEPTIONS = ("uni", "use", "usu", "eu", "one", "once")


def article_for(word: str) -> str:
    """"a" or "an" before ``word`` (by its spelling; numbers by how they are read)."""
    w = word.lower()
    if not w:
        return "a"
    if w[0].isdigit():
        whole = re.match(r"\d+", w).group()  # type: ignore[union-attr]
        return "an" if whole.startswith("8") or whole in ("11", "18") else "a"
    return "an" if w[0] in "aeiou" and not w.startswith(_AN_EXCEPTIONS) else "a"


def _agree_articles(text: str, start: int, end: int, to: str) -> tuple[int, int, str]:
    """Fix "a"/"an" next to the edit; an article before it becomes part of the edit."""
    head = _ARTICLE.search(text[max(0, start - 12):start]) if to else None
    if head:
        at = start - (len(head.group(0)))
        if at == 0 or not re.match(r"[\w-]", text[at - 1]):
            want = article_for(to)
            if want != head.group(1).lower():
                start, to = at, match_case(head.group(1), want) + head.group(2) + to
    tail = _ARTICLE_END.search(to)
    nxt = re.match(r"\s+(\w+)", text[end:])
    if tail and nxt:
        want = article_for(nxt.group(1))
        if want != tail.group(1).lower():
            to = to[:tail.start()] + match_case(tail.group(1), want)
    return start, end, to


def _compile(regex: str, where: str, flags: int = re.IGNORECASE | re.MULTILINE
             ) -> re.Pattern[str]:
    try:
        return re.compile(regex, flags)
    except re.error as exc:
        raise TargetRulesError(f"{where}: bad regular expression {regex!r}: {exc}") from exc


class RuleSet:
    """The compiled rules of one modality (``generic`` for modalities without a section)."""

    def __init__(self, modality: str, attributes: list[AttributeRules]):
        self.modality = modality
        self.attributes = attributes

    def candidates(self, text: str) -> list[Candidate]:
        """Every applicable edit, attribute by attribute in rule order."""
        return [c for a in self.attributes for c in a.candidates(text)]


@cache
def load_rules(path: str | None = None) -> _RulesFile:
    """targets.yaml (or another file in its format), validated."""
    if path is None:
        text = resources.files(__package__).joinpath("targets.yaml").read_text("utf-8")
        where = "targets.yaml"
    else:
        text, where = Path(path).read_text("utf-8"), path
    try:
        rules = _RulesFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise TargetRulesError(f"{where}: {exc}") from exc
    for section in [rules.generic, *rules.modalities.values()]:
        for attribute, block in section.items():
            if not re.fullmatch(r"[a-z_]+", attribute):
                raise TargetRulesError(f"{where}: attribute {attribute!r} is not a lower-case name")
            for group in block.groups + block.exact:
                if len(group) < 2:
                    raise TargetRulesError(f"{where}: {attribute}: group {group} has one term")
    return rules


def canonical_modality(modality: str, path: str | None = None) -> str:
    """The DICOM-style modality code for ``modality``, as ``Study.modality`` carries it (XR, CT,
    MR, US, MG, DMS, OP, SM, ...): case-insensitive, aliases resolved (``dermoscopy`` and
    ``DERM`` -> ``DMS``, ``fundus`` -> ``OP``, ``histology`` -> ``SM``); other text upper-cased."""
    code = modality.strip().upper()
    return load_rules(path).aliases.get(code, code)


@cache
def rules_for(modality: str, path: str | None = None) -> RuleSet:
    """The compiled rules for a modality; an unknown one gets the generic rules alone."""
    rules = load_rules(path)
    code = canonical_modality(modality, path)
    own = rules.modalities.get(code, {})
    names = list(own) + [a for a in rules.generic if a not in own]
    where = f"{path or 'targets.yaml'} ({code if own else 'generic'})"
    attributes = [
        AttributeRules(a, [b for b in (own.get(a), rules.generic.get(a)) if b is not None],
                       f"{where} {a}")
        for a in names
    ]
    return RuleSet(code if own else "generic", attributes)
