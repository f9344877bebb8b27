"""The phrase language of ``lexicon.yaml``, compiled into one trie-shaped regular expression.

A phrase (words, optional groups, raw ``{regex}`` pieces, ``<fragments>``) becomes literal
symbols for a trie plus a regex tail; all phrases of all entries become one scanning regex
(no groups) and one marker regex (one empty group per phrase) that tells which entry a token
is. ``_sentence_regex`` finds the sentence ends no phrase spans, for the extractor's cache.
The extractor (``extract.py``) runs what this module compiles.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from advbench.concepts.regex_cache import compile_cached
from advbench.concepts.vocabulary import CONCEPTS, STATE_PRIORITY

# token kinds (the first three take part in a clause)
_MENTION, _BLOCK, _CUE, _CLAUSE, _SENT, _IGNORE = range(6)
# cue directions: forward, backward, both, backward when no finding follows, scope reset
_PRE, _POST, _BOTH, _PRED, _RESET = range(5)

# The scanned text is the lower-cased report with these characters turned into spaces, so that
# every word is preceded by a space (the literal first character of the word branch).
_SEPARATORS = "\n\r\t\f()[]{}\"/*<>=+&|`~^"
_SCAN_TABLE = str.maketrans(dict.fromkeys(_SEPARATORS, " "))
_BREAK = "\x0b"  # marks a paragraph break in the scanned text
_SENT_TAIL = "{(?:[ \x0b]*\x0b)?}"  # a sentence end takes the paragraph breaks after it

_SP = r"[\s-]+"  # a space in a phrase: whitespace (line wraps) or a hyphen
_HY = r"[\s-]*"  # a hyphen in a phrase: hyphen, space or nothing
_WORD = r"[a-z0-9']+"
_END = r"(?![a-z0-9])"
_SPACE, _HYPHEN = "\x00sp", "\x00hy"  # trie symbols for a phrase's space and hyphen
_SYMBOL_REGEX = {_SPACE: _SP, _HYPHEN: _HY}
_EXPANSION_BUDGET = 48  # literal variants one phrase may expand into for the trie
# A section this short (characters) is also looked up whole.
_WHOLE_SECTION = 240
# Initial letters of report words, most frequent first.
_LETTER_RANK = {c: i for i, c in enumerate("tcpilansefrmwohbdugvkqyjxz")}


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
    negation_only: bool = False  # a scope reset that only ends a negation
    cue: _Entry | None = None  # a mention that also acts as a cue
    # the state of a mention that no cue changes (normal statements, fixed phrases)
    own: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.kind == _MENTION:
            own = self.state
            if own is None and self.concepts[:1] == ("unremarkable",):
                own = "positive"
            object.__setattr__(self, "own", own)


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
                i += 1
                if s[i - 1] == ")":
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
        escaped = c == "\\"
        if escaped:
            if i + 1 >= len(s):
                raise LexiconError(f"trailing '\\' in {s!r}")
            c = s[i + 1]
            i += 2
        elif c in "?|)":
            raise LexiconError(f"unexpected {c!r} at {i} in {s!r}")
        else:
            i += 1
        if c in _SEPARATORS:
            item: tuple = ("hy",)  # the scanned text has a space there: optional in a phrase
        elif escaped:
            item = ("c", c)
        elif c == " ":
            item = ("sp",)
        elif c == "-":
            item = ("hy",)
        elif c == "*":
            item = ("w",)
        else:
            item = ("c", c)
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
        else:  # longer alternatives first: the regex takes the first that matches
            alts = sorted(it[1], key=lambda a: (-_minwidth(a), -len(_regex(a))))
            body = "|".join(_regex(a) for a in alts)
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


def _expand(items: list) -> list[tuple[tuple[str, ...], list]]:
    """Split a phrase into (literal leading symbols, rest) pairs for the trie.

    Leading characters, spaces and hyphens become trie symbols; a group is expanded into its
    alternatives while the phrase stays within the budget of variants, so phrases that share
    their first words share one path of the regex (the engine then rejects a wrong branch on
    its first character instead of trying every phrase).
    """
    done: list[tuple[tuple[str, ...], list]] = []
    todo: list[tuple[tuple[str, ...], list]] = [((), items)]
    while todo:
        syms, its = todo.pop()
        expanded = False
        while its:
            it = its[0]
            t = it[0]
            if t == "c":
                syms += (it[1],)
            elif t in ("sp", "hy") and not syms:
                pass  # "(has|have)? not": the space after a left-out first word
            elif t == "sp":
                syms += (_SPACE,)
            elif t == "hy":
                syms += (_HYPHEN,)
            elif t == "g" and len(done) + len(todo) + len(it[1]) + it[2] <= _EXPANSION_BUDGET:
                for alt in reversed(it[1]):
                    todo.append((syms, alt + its[1:]))
                if it[2]:
                    todo.append((syms, its[1:]))
                expanded = True
                break
            else:
                break
            its = its[1:]
        if expanded:
            continue
        if not syms:
            raise LexiconError("a phrase must start with a literal word or punctuation mark")
        done.append((syms, its))
    return done


def _needs_end(items: list) -> bool:
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
    """The scanning regex (no groups) and the marker regex (one empty group per phrase)."""

    def __init__(self, entries: list[_Entry]):
        root = _Node()
        seen: set[tuple[tuple[str, ...], str]] = set()
        for idx, entry in enumerate(entries):
            items, _ = _parse(entry.phrase)
            if not items:
                raise LexiconError(f"empty phrase in lexicon ({entry})")
            end = _END if _needs_end(items) else ""
            try:
                variants = _expand(items)
            except LexiconError as exc:
                raise LexiconError(f"{exc}: {entry.phrase!r}") from None
            for syms, rest in variants:
                if syms[0] in (_SPACE, _HYPHEN):
                    raise LexiconError(f"a phrase starts with a space: {entry.phrase!r}")
                if syms[0].isalnum():
                    syms = (" ", *syms)  # words are preceded by a space in the scanned text
                rx = _regex(rest) + end
                if (syms, rx) in seen:
                    continue  # an earlier entry has the same words: it wins
                seen.add((syms, rx))
                node = root
                for sym in syms:
                    node = node.children.setdefault(sym, _Node())
                node.rests.append(((-_minwidth(rest), -len(rx)), rx, idx))
        if root.rests:
            raise LexiconError("empty phrase in lexicon")
        self.group_entry: list[int] = [-1]  # marker group number -> entry index
        self.marked = self._emit(root, True, top=True)
        self.plain = self._emit(root, False, top=True)
        self.scan_regex = compile_cached(self.plain)
        self.sentence_regex = _sentence_regex(entries)
        self.marker_regex = compile_cached(self.marked)
        if self.marker_regex.groups != len(self.group_entry) - 1 or self.scan_regex.groups:
            raise LexiconError("a raw {regex} in the lexicon has a capturing group; use (?:...)")

    def _emit(self, node: _Node, marked: bool, top: bool = False) -> str:
        # Longer phrases first: continuations of the path, then the phrases ending here.
        # Common first letters first: the engine tries the branches in order.
        alts = []
        rank = _LETTER_RANK.get
        for sym in sorted(node.children, key=lambda c: (c in _SYMBOL_REGEX, rank(c, 99), c)):
            child, lit = node.children[sym], _SYMBOL_REGEX.get(sym) or re.escape(sym)
            while len(child.children) == 1 and not child.rests:
                (sym2, child), = child.children.items()
                lit += _SYMBOL_REGEX.get(sym2) or re.escape(sym2)
            alts.append(lit + self._emit(child, marked))
        for _key, rx, idx in sorted(node.rests, key=lambda r: r[0]):
            if marked:
                self.group_entry.append(idx)
            alts.append(rx + ("()" if marked else ""))
        if top or len(alts) == 1:
            return "|".join(alts)
        return "(?:" + "|".join(alts) + ")"


def _literals(items: list) -> set[str]:
    """The literal characters a parsed phrase can match."""
    out: set[str] = set()
    for it in items:
        if it[0] == "c":
            out.add(it[1])
        elif it[0] == "g":
            for alt in it[1]:
                out |= _literals(alt)
    return out


def _sentence_regex(entries: list[_Entry]) -> re.Pattern[str] | None:
    """What cuts a section into sentences cheaply, over the lower-case text: a match is a
    sentence-end mark (not the bare paragraph break, which a phrase's space may span), or,
    when it sets group 1, a mark inside another phrase ("e.g.", "vs."), which is no sentence
    end. Such a mark is found by a look-behind at the mark for each literal form of the
    phrase up to it, so the engine only stops at marks. ``None`` when a phrase has a mark
    after a space or a group (no literal form): sections are then scanned whole.
    """
    ends: list[str] = []
    behind: set[tuple[str, str | None, str]] = set()  # (mark, char before, look-behinds)
    for entry in entries:
        if entry.kind == _SENT and entry.phrase != "\\" + _BREAK:
            ends.append(_regex(_parse(entry.phrase)[0]))
    end_rx = re.compile("|".join(ends) or "(?!)")
    # A word starts the text or follows what the scanned text makes a space.
    not_after = "[^" + re.escape(" " + _SEPARATORS + "\v") + "]"
    for entry in entries:
        if entry.kind == _SENT:
            continue
        items = _parse(entry.phrase)[0]
        if not any(end_rx.match(ch) for ch in _literals(items)):
            continue
        word = items[0][0] == "c" and items[0][1].isalnum()
        for syms, rest in _expand(items):
            k = 0
            while k < len(syms) and syms[k] not in _SYMBOL_REGEX:
                if end_rx.match(syms[k]):
                    form = re.escape("".join(syms[: k + 1]))
                    behind.add((syms[k], syms[k - 1] if k else None, f"(?<={form})" + (
                        f"(?<!{not_after}{form})" if word else "")))
                k += 1
            if any(end_rx.match(ch) for ch in _literals(rest) | set(syms[k:])):
                return None
    inner = []
    for mark in sorted({m for m, _, _ in behind}):
        looks = "|".join(sorted(b for m, _, b in behind if m == mark))
        # a gate on the character before the mark: most marks end a plain word ("effusion.")
        # and are let through at once instead of trying every look-behind
        before = {c for m, c, _ in behind if m == mark}
        gate = "" if None in before else (
            f"(?<=[{''.join(re.escape(c) for c in sorted(before))}]{re.escape(mark)})")
        inner.append(f"{re.escape(mark)}{gate}(?:{looks})")
    # no group before the first character: the engine then skips to the marks quickly
    return re.compile(f"(?:{'|'.join(inner) or '(?!)'})()|{end_rx.pattern}")


_FRAGMENT = re.compile(r"<([a-z_]+)>")


def _fragments(lex: dict[str, Any]) -> Callable[[str], str]:
    """The lexicon's named fragments: ``<name>`` in a phrase stands for the fragment's text
    (a long list of words shared by several phrases, written once)."""
    named = lex.get("fragments") or {}
    for name, body in named.items():
        if not isinstance(body, str) or _FRAGMENT.search(body):
            raise LexiconError(f"fragment {name!r} must be a string without fragments in it")

    def fill(phrase: str) -> str:
        def one(m: re.Match[str]) -> str:
            if m.group(1) not in named:
                raise LexiconError(f"unknown fragment <{m.group(1)}> in {phrase!r}")
            return named[m.group(1)]
        return _FRAGMENT.sub(one, phrase) if "<" in phrase else phrase

    return fill


def _load_entries(lex: dict[str, Any]) -> list[_Entry]:
    entries: list[_Entry] = []
    fill = _fragments(lex)

    def as_list(v: Any) -> list:
        items = []
        for p in [] if v is None else v:
            phrase = p.get("p") if isinstance(p, dict) else p
            if not isinstance(phrase, str):
                raise LexiconError(f"phrase {phrase!r} is not a string (quote it in the YAML)")
            items.append({**p, "p": fill(phrase)} if isinstance(p, dict) else fill(p))
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
            cue = _cue_entry(p["p"], p["cue"]) if p.get("cue") else None
            entries.append(_Entry(_MENTION, p["p"], (concept, *also), state, cue=cue))
    for p in as_list(lex.get("other_findings")):
        entries.append(_Entry(_BLOCK, p))
    for p in as_list(lex.get("ignore")):
        entries.append(_Entry(_IGNORE, p))
    cues = lex.get("cues") or {}
    links = set(as_list(cues.get("uncertainty_link")))
    kinds_of: dict[str, set[str]] = {}
    for kind, phrases in cues.items():
        for p in as_list(phrases):
            kinds_of.setdefault(p, set()).add(kind)
    for kind, phrases in cues.items():
        for p in as_list(phrases):
            kinds = kinds_of[p]
            if kind == "uncertainty_link" and "uncertainty_pre" in kinds:
                continue  # the _pre entry carries the link flag
            if kind.endswith("_post") and kind[:-5] + "_pre" in kinds:
                continue  # the _pre entry becomes a both-ways cue
            this = kind  # a phrase in both _pre and _post lists is one both-ways cue
            if kind.endswith("_pre") and kind[:-4] + "_post" in kinds:
                this = kind[:-4] + "_both"
            entries.append(_cue_entry(p, this, p in links))
    for p in as_list(lex.get("terminators")):
        entries.append(_Entry(_CLAUSE, p))
    for p in as_list(lex.get("sentence_ends")):
        # one token with the paragraph breaks right after it (not the spaces before a word)
        entries.append(_Entry(_SENT, p + _SENT_TAIL))
    entries.append(_Entry(_SENT, "\\" + _BREAK))
    return entries


_CUE_STATE = {
    "negation": "negative",
    "uncertainty": "uncertain",
    "pseudo": "positive",
    "resolution": "negative",
}
_CUE_DIR = {"pre": _PRE, "post": _POST, "both": _BOTH, "link": _PRE, "predicate": _PRED}


def _cue_entry(phrase: str, kind: str, link: bool = False) -> _Entry:
    if kind in ("reset", "reset_negation"):
        return _Entry(
            _CUE, phrase, state="positive", direction=_RESET,
            negation_only=kind == "reset_negation",
        )
    base, _, direction = kind.rpartition("_")
    if base not in _CUE_STATE or direction not in _CUE_DIR:
        raise LexiconError(f"unknown cue list {kind!r} in lexicon")
    return _Entry(
        _CUE, phrase, state=_CUE_STATE[base], direction=_CUE_DIR[direction],
        link=link or direction == "link",
    )
