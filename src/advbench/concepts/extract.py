"""Rule-based extraction of the 17 clinical concepts, with states, from chest X-ray reports.

Implements ``docs/concept-labelling.md``; every phrase and cue is data in ``lexicon.yaml``.
Speed matters (a whole MIMIC-CXR corpus is re-extracted for every release and every
adversarial report is checked with it), so all phrases, cues and sentence/clause ends are
compiled into one regular expression shaped as a trie over their first word: one ``finditer``
over the kept text yields the tokens in order, and the states are resolved per clause from
that short token list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from advbench.concepts.sections import SectionSplitter
from advbench.concepts.vocabulary import (
    CLASSES,
    CONCEPT_CLASS,
    CONCEPTS,
    DISEASE_CONCEPTS,
    STATE_PRIORITY,
)

__all__ = ["ConceptExtractor", "ConceptResult", "Mention", "derive_labels", "extract"]


@dataclass(frozen=True)
class Mention:
    """One phrase of a report that names a concept, with the state it gives the concept.

    ``start``/``end`` are offsets in the original report (``text == report[start:end]``);
    ``trigger`` is the cue that decided the state (``None`` for a plain positive). A normal
    statement (``unremarkable``) is always a ``positive`` mention: the report-level state of
    ``unremarkable`` also depends on the disease concepts (see the guide).
    """

    concept: str
    state: str
    section: str
    sentence: str
    start: int
    end: int
    text: str
    trigger: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "state": self.state,
            "section": self.section,
            "sentence": self.sentence,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "trigger": self.trigger,
        }


@dataclass
class ConceptResult:
    """Report-level concept states (all 17, vocabulary order), class labels and mentions."""

    concepts: dict[str, str]
    labels: dict[str, str]
    mentions: list[Mention] = field(default_factory=list)

    def to_dict(self, id: str) -> dict[str, Any]:
        """One ``advbench concepts`` output line (validates with ``schemas.ConceptsLine``)."""
        return {
            "id": id,
            "concepts": dict(self.concepts),
            "labels": dict(self.labels),
            "mentions": [m.to_dict() for m in self.mentions],
        }


_PNEUMONIA_OTHERS = tuple(
    c for c in CONCEPTS if CONCEPT_CLASS[c] == "pneumonia" and c != "opacity"
)


def derive_labels(concepts: dict[str, str]) -> dict[str, str]:
    """The six class labels: the strongest state among each class's concepts.

    ``opacity`` counts towards ``pneumonia`` when pneumonitis, consolidation or infection is
    positive or uncertain, and towards ``pleural_effusion`` otherwise; ``healthy`` is the state
    of ``unremarkable``.
    """
    best = {c: 0 for c in CLASSES}
    opacity_class = (
        "pneumonia"
        if any(concepts.get(c) in ("positive", "uncertain") for c in _PNEUMONIA_OTHERS)
        else "pleural_effusion"
    )
    for concept in CONCEPTS:
        state = concepts.get(concept, "absent")
        cls = CONCEPT_CLASS[concept]
        if concept == "opacity":
            cls = opacity_class
        p = STATE_PRIORITY[state]
        if p > best[cls]:
            best[cls] = p
    return {c: _STATE_OF_PRIORITY[best[c]] for c in CLASSES}


_STATE_OF_PRIORITY = {p: s for s, p in STATE_PRIORITY.items()}

# ---------------------------------------------------------------------------------------
# Lexicon compilation
# ---------------------------------------------------------------------------------------

# token kinds
_MENTION, _BLOCK, _CUE, _CLAUSE, _SENT, _IGNORE = range(6)
# cue directions
_PRE, _POST, _BOTH, _RESET = range(4)

_SP = r"[\s-]+"  # a space in a phrase: whitespace (line wraps) or a hyphen
_HY = r"[\s-]*"  # a hyphen in a phrase: hyphen, space or nothing
_WORD = r"[a-z0-9']+"
_END = r"(?![a-z0-9])"


class LexiconError(ValueError):
    """The lexicon file cannot be compiled."""


@dataclass(frozen=True)
class _Entry:
    kind: int
    phrase: str
    concepts: tuple[str, ...] = ()
    state: str | None = None  # fixed state of a mention, or the state a cue gives
    direction: int = _PRE
    link: bool = False  # an uncertainty cue that keeps an earlier negation
    cue: _Entry | None = None  # a mention that also acts as a cue


def _parse(s: str, i: int = 0, stops: str = "") -> tuple[list, int]:
    """Parse the phrase mini-language (see lexicon.yaml) into items."""
    items: list = []
    while i < len(s):
        c = s[i]
        if c in stops:
            break
        if c == "(":
            alts = []
            i += 1
            while True:
                seq, i = _parse(s, i, "|)")
                alts.append(seq)
                if i >= len(s):
                    raise LexiconError(f"unbalanced '(' in {s!r}")
                if s[i] == "|":
                    i += 1
                    continue
                i += 1
                break
            opt = i < len(s) and s[i] == "?"
            i += opt
            items.append(("g", alts, opt))
            continue
        if c == "{":
            depth, j = 1, i + 1
            while j < len(s) and depth:
                depth += {"{": 1, "}": -1}.get(s[j], 0)
                j += 1
            if depth:
                raise LexiconError(f"unbalanced '{{' in {s!r}")
            items.append(("r", s[i + 1 : j - 1]))
            i = j
            continue
        if c == "\\":
            if i + 1 >= len(s):
                raise LexiconError(f"trailing '\\' in {s!r}")
            item: tuple = ("c", s[i + 1])
            i += 2
        elif c == " ":
            item, i = ("sp",), i + 1
        elif c == "-":
            item, i = ("hy",), i + 1
        elif c == "*":
            item, i = ("w",), i + 1
        elif c in "?|)":
            raise LexiconError(f"unexpected {c!r} at {i} in {s!r}")
        else:
            item, i = ("c", c), i + 1
        if i < len(s) and s[i] == "?":
            item = ("g", [[item]], True)
            i += 1
        items.append(item)
    return items, i


def _regex(items: list) -> str:
    out = []
    for it in items:
        t = it[0]
        if t == "c":
            out.append(re.escape(it[1]))
        elif t == "sp":
            out.append(_SP)
        elif t == "hy":
            out.append(_HY)
        elif t == "w":
            out.append(_WORD)
        elif t == "r":
            out.append(it[1])
        else:
            body = "|".join(_regex(a) for a in it[1])
            out.append(f"(?:{body})" + ("?" if it[2] else ""))
    return "".join(out)


def _minwidth(items: list) -> int:
    n = 0
    for it in items:
        t = it[0]
        if t in ("c", "sp", "w"):
            n += 1
        elif t == "g" and not it[2]:
            n += min(_minwidth(a) for a in it[1])
    return n


_SPACE, _HYPHEN = "\x00sp", "\x00hy"  # trie symbols for a phrase's space and hyphen
_SYMBOL_REGEX = {_SPACE: _SP, _HYPHEN: _HY}
_EXPANSION_BUDGET = 48  # literal variants a phrase may expand into for the trie


def _expand(items: list) -> list[tuple[tuple[str, ...], list]]:
    """Split a phrase into (literal leading symbols, rest) pairs for the trie.

    Leading characters, spaces and hyphens become trie symbols; a group is expanded into its
    alternatives while the phrase stays within the budget of variants, so phrases that share
    their first words share one path of the regex (the regex engine then rejects a wrong
    branch on its first character instead of trying every phrase).
    """
    done: list[tuple[tuple[str, ...], list]] = []
    todo: list[tuple[tuple[str, ...], list]] = [((), items)]
    while todo:
        syms, its = todo.pop()
        while its:
            it = its[0]
            t = it[0]
            if t == "c":
                syms += (it[1],)
            elif t == "sp":
                if not syms:  # "(has|have)? not": the space after a left-out first word
                    its = its[1:]
                    continue
                syms += (_SPACE,)
            elif t == "hy" and syms:
                syms += (_HYPHEN,)
            elif t == "g" and len(done) + len(todo) + len(it[1]) + it[2] <= _EXPANSION_BUDGET:
                for alt in reversed(it[1]):
                    todo.append((syms, alt + its[1:]))
                if it[2]:
                    todo.append((syms, its[1:]))
                syms = None
                break
            else:
                break
            its = its[1:]
        if syms is None:
            continue
        if not syms or syms[0] in (_SPACE, _HYPHEN):
            raise LexiconError("a phrase must start with a literal word or punctuation mark")
        done.append((syms, its))
    return done


def _needs_end(items: list) -> bool:
    if not items:
        return True
    last = items[-1]
    if last[0] == "c":
        return last[1].isalnum()
    return last[0] in ("g", "w")


class _Node:
    __slots__ = ("children", "rests")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.rests: list[tuple[tuple[int, int], str, int]] = []  # (sort key, regex, entry)


class _Compiled:
    """The token regex and, per capturing group number, the entry it stands for.

    Phrases form a trie of literal symbols; each path ends in the phrase's remaining regex
    and an empty capturing group whose number identifies the entry (``Match.lastindex``).
    """

    def __init__(self, entries: list[_Entry]):
        words, puncts = _Node(), _Node()
        raws: list[tuple[str, int]] = []
        seen: set[tuple[tuple[str, ...], str]] = set()
        for idx, entry in enumerate(entries):
            items, _ = _parse(entry.phrase)
            if not items:
                raise LexiconError(f"empty phrase in lexicon ({entry})")
            end = _END if _needs_end(items) else ""
            if items[0][0] == "r":
                raws.append((_regex(items) + end, idx))
                continue
            try:
                variants = _expand(items)
            except LexiconError as exc:
                raise LexiconError(f"{exc}: {entry.phrase!r}") from None
            for syms, rest in variants:
                rx = _regex(rest) + end
                if (syms, rx) in seen:
                    continue  # an earlier entry has the same words: it wins
                seen.add((syms, rx))
                node = words if syms[0].isalnum() else puncts
                for sym in syms:
                    node = node.children.setdefault(sym, _Node())
                node.rests.append(((-_minwidth(rest), -len(rx)), rx, idx))
        self.group_entry: list[int] = [-1]  # group number -> entry index
        parts = []
        if words.children:
            parts.append(r"\b" + self._emit(words))
        if puncts.children:
            parts.append(self._emit(puncts))
        for rx, idx in raws:
            self.group_entry.append(idx)
            parts.append(f"(?:{rx})()")
        self.pattern = "|".join(parts)
        self.regex = re.compile(self.pattern)
        if self.regex.groups != len(self.group_entry) - 1:
            raise LexiconError("a raw {regex} in the lexicon has a capturing group; use (?:...)")

    def _emit(self, node: _Node) -> str:
        # Longer phrases first: continuations of the path, then the phrases ending here.
        alts = []
        for sym in sorted(node.children, key=lambda c: (c in _SYMBOL_REGEX, c)):
            child = node.children[sym]
            lit = _SYMBOL_REGEX.get(sym) or re.escape(sym)
            while len(child.children) == 1 and not child.rests:
                (sym2, child), = child.children.items()
                lit += _SYMBOL_REGEX.get(sym2) or re.escape(sym2)
            alts.append(lit + self._emit(child))
        for _key, rx, idx in sorted(node.rests, key=lambda r: r[0]):
            self.group_entry.append(idx)
            alts.append(rx + "()")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def _load_entries(lex: dict[str, Any]) -> list[_Entry]:
    entries: list[_Entry] = []

    def as_list(v: Any) -> list:
        items = [] if v is None else list(v)
        for p in items:
            phrase = p.get("p") if isinstance(p, dict) else p
            if not isinstance(phrase, str):
                raise LexiconError(f"phrase {phrase!r} is not a string (quote it in the YAML)")
        return items

    for concept, phrases in (lex.get("concepts") or {}).items():
        if concept not in CONCEPTS:
            raise LexiconError(f"unknown concept {concept!r} in lexicon")
        for p in as_list(phrases):
            if isinstance(p, str):
                entries.append(_Entry(_MENTION, p, (concept,)))
                continue
            also = tuple(p.get("also", ()))
            for c in also:
                if c not in CONCEPTS:
                    raise LexiconError(f"unknown concept {c!r} in lexicon")
            state = p.get("state")
            if state is not None and state not in STATE_PRIORITY:
                raise LexiconError(f"unknown state {state!r} in lexicon")
            cue = None
            if p.get("cue"):
                cue = _cue_entry(p["p"], p["cue"])
            entries.append(_Entry(_MENTION, p["p"], (concept, *also), state, cue=cue))
    for p in as_list(lex.get("other_findings")):
        entries.append(_Entry(_BLOCK, p))
    for p in as_list(lex.get("ignore")):
        entries.append(_Entry(_IGNORE, p))
    cues = lex.get("cues") or {}
    links = set(as_list(cues.get("uncertainty_link")))
    pre_post: dict[str, set[str]] = {}
    for kind, phrases in cues.items():
        for p in as_list(phrases):
            pre_post.setdefault(p, set()).add(kind)
    for kind, phrases in cues.items():
        for p in as_list(phrases):
            kinds = pre_post[p]
            if kind == "uncertainty_link" and "uncertainty_pre" in kinds:
                continue  # the _pre entry carries the link flag
            if kind.endswith("_post") and kind.replace("_post", "_pre") in kinds:
                continue  # the _pre entry becomes a both-ways cue
            if kind.endswith("_pre") and kind.replace("_pre", "_post") in kinds:
                entries.append(_cue_entry(p, kind.replace("_pre", "_both"), p in links))
            else:
                entries.append(_cue_entry(p, kind, p in links))
    for p in as_list(lex.get("terminators")):
        entries.append(_Entry(_CLAUSE, p))
    for p in as_list(lex.get("sentence_ends")):
        entries.append(_Entry(_SENT, p))
    return entries


_CUE_STATE = {
    "negation": "negative",
    "uncertainty": "uncertain",
    "pseudo": "positive",
    "resolution": "negative",
}
_CUE_DIR = {"pre": _PRE, "post": _POST, "both": _BOTH, "link": _PRE}


def _cue_entry(phrase: str, kind: str, link: bool = False) -> _Entry:
    if kind == "reset":
        return _Entry(_CUE, phrase, state="positive", direction=_RESET)
    base, _, direction = kind.rpartition("_")
    if base not in _CUE_STATE or direction not in _CUE_DIR:
        raise LexiconError(f"unknown cue list {kind!r} in lexicon")
    return _Entry(
        _CUE, phrase, state=_CUE_STATE[base], direction=_CUE_DIR[direction],
        link=link or direction == "link",
    )


# A finding joined to the next one in a list ("effusion, consolidation, or pneumothorax"):
# the text between them is a comma and/or a conjunction and at most three modifier words.
_LIST_GAP = re.compile(r"\s*(?:,\s*)?(?:(?:and|or|and/or|nor)\s+)?(?:[a-z-]+\s+){0,3}")
_CONJ = re.compile(r"\b(?:and|or|nor)\b")
_OR = re.compile(r"\b(?:or|nor)\b")
_TIGHT_GAP = re.compile(r"[^,.;:]{0,40}")


def _lower(text: str) -> str:
    """Lower-case text with the same length (offsets stay valid)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


class ConceptExtractor:
    """Compiled lexicon; ``extract`` gives a report's concept states, labels and mentions."""

    def __init__(self, lexicon_path: Path | None = None):
        if lexicon_path is None:
            source = resources.files("advbench.concepts").joinpath("lexicon.yaml")
            text = source.read_text("utf-8")
        else:
            text = Path(lexicon_path).read_text("utf-8")
        lex = yaml.safe_load(text) or {}
        self._entries = _load_entries(lex)
        compiled = _Compiled(self._entries)
        self.pattern = compiled.pattern
        self._finditer = compiled.regex.finditer
        self._group_entry = [self._entries[i] if i >= 0 else None for i in compiled.group_entry]
        self._sections = SectionSplitter(lex.get("sections") or {"kept": {}, "dropped": []})

    def sections(self, text: str) -> list:
        """The kept sections of a report (see ``advbench.concepts.sections``)."""
        return self._sections.kept(text)

    def extract(self, text: str) -> ConceptResult:
        """Concept states, class labels and mentions of one report."""
        found: list[tuple] = []  # (concept, state, section, sentence, start, end, trigger)
        if text:
            low = _lower(text)
            for sec in self._sections.kept(text):
                self._scan(text, low, sec.name, sec.start, sec.end, found)
        best: dict[str, int] = {}
        mentions = []
        new = object.__new__
        for concept, state, section, sentence, start, end, trigger in found:
            m = new(Mention)
            m.__dict__.update(
                concept=concept, state=state, section=section, sentence=sentence,
                start=start, end=end, text=text[start:end], trigger=trigger,
            )
            mentions.append(m)
            p = STATE_PRIORITY[state]
            if p > best.get(concept, 0):
                best[concept] = p
        if "unremarkable" in best:
            sick = any(best.get(c, 0) >= 2 for c in DISEASE_CONCEPTS)
            best["unremarkable"] = 1 if sick else 3
        concepts = {c: _STATE_OF_PRIORITY[best.get(c, 0)] for c in CONCEPTS}
        return ConceptResult(concepts, derive_labels(concepts), mentions)

    # -- internals ------------------------------------------------------------------------

    def _scan(self, text: str, low: str, section: str, start: int, end: int,
              found: list) -> None:
        group_entry = self._group_entry
        clause: list[tuple[_Entry, int, int]] = []
        has_mention = False
        pending: list[tuple] = []  # mentions of the current sentence
        sent_start = start
        resolve = self._resolve
        for m in self._finditer(low, start, end):
            e = group_entry[m.lastindex]
            k = e.kind
            if k <= _CUE:
                if k == _MENTION:
                    has_mention = True
                clause.append((e, m.start(), m.end()))
                if e.cue is not None:
                    clause.append((e.cue, m.start(), m.end()))
            elif k == _IGNORE:
                continue
            else:
                if has_mention:
                    resolve(low, clause, m.start(), pending)
                clause = []
                has_mention = False
                if k == _SENT:
                    if pending:
                        _flush(text, section, sent_start, m.start(), pending, found)
                        pending = []
                    sent_start = m.end()
        if has_mention:
            resolve(low, clause, end, pending)
        if pending:
            _flush(text, section, sent_start, end, pending, found)

    @staticmethod
    def _resolve(low: str, clause: list[tuple[_Entry, int, int]], clause_end: int,
                 pending: list) -> None:
        n = len(clause)
        states: list[str | None] = [None] * n
        triggers: list[str | None] = [None] * n
        cur: str | None = None
        cur_trig: str | None = None
        since = 0  # findings since the current pre cue
        last_end = -1  # end of the last finding
        posts = []
        for i, (e, s, t) in enumerate(clause):
            k = e.kind
            if k != _CUE:
                if cur is not None:
                    states[i], triggers[i] = cur, cur_trig
                since += 1
                last_end = t
                continue
            d = e.direction
            if d == _PRE:
                if e.link and cur == "negative":
                    continue
                cur, cur_trig, since = e.state, low[s:t], 0
            elif d == _RESET:
                if cur is not None and since:
                    gap = low[last_end:s]
                    if ("," in gap or " and " in gap or "with" in gap) and not _OR.search(
                        gap
                    ) and not _OR.search(low, t, clause_end):
                        cur = cur_trig = None
                        since = 0
            else:
                posts.append(i)
        for i in posts:
            e, s, t = clause[i]
            trig = low[s:t]
            # backward: the finding right before, and a list joined to it by and/or
            j, first, need_conj, prev_start = i - 1, True, True, s
            while j >= 0:
                f, fs, ft = clause[j]
                if f.kind == _CUE:
                    break
                if not first:
                    gap = low[ft:prev_start]
                    if f.state is not None or _LIST_GAP.fullmatch(gap) is None:
                        break
                    if need_conj:
                        if _CONJ.search(gap) is None:
                            break
                        need_conj = False
                    elif "," not in gap and _CONJ.search(gap) is None:
                        break
                states[j], triggers[j] = e.state, trig
                first = False
                prev_start = fs
                j -= 1
            if e.direction == _BOTH and i + 1 < n:
                f, fs, ft = clause[i + 1]
                if f.kind != _CUE and _TIGHT_GAP.fullmatch(low, t, fs):
                    states[i + 1], triggers[i + 1] = e.state, trig
        for i, (e, s, t) in enumerate(clause):
            if e.kind != _MENTION:
                continue
            if e.state is not None:
                state, trig = e.state, (None if e.state == "positive" else low[s:t])
            elif e.concepts[0] == "unremarkable":
                state, trig = "positive", None
            else:
                state, trig = states[i] or "positive", triggers[i]
            if trig is not None:
                trig = " ".join(trig.split())
            for c in e.concepts:
                pending.append((c, state, s, t, trig))


def _flush(text: str, section: str, start: int, end: int, pending: list, found: list) -> None:
    sentence = " ".join(text[start:end].split())
    for c, state, s, t, trig in pending:
        found.append((c, state, section, sentence, s, t, trig))


@cache
def _default() -> ConceptExtractor:
    return ConceptExtractor()


def extract(text: str) -> ConceptResult:
    """Extract with the packaged lexicon (compiled once per process)."""
    return _default().extract(text)
