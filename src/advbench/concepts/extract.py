"""Rule-based extraction of the 17 clinical concepts, with states, from chest X-ray reports.

Implements docs/concept-labelling.md with every phrase and cue as data (lexicon.yaml). It must
keep up with a whole MIMIC-CXR corpus per release, so the lexicon is compiled into one trie-
shaped regular expression: one scan of the kept text yields the tokens, and states are resolved
per clause from that short token list. States never cross a sentence end and report text
repeats a lot, so each sentence's result is cached by its text (short sections, clauses and
tokens too): most sentences of a corpus are looked up, not scanned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from itertools import chain
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from advbench.concepts.lexicon import (
    _BOTH,
    _BREAK,
    _CUE,
    _IGNORE,
    _MENTION,
    _PRE,
    _PRED,
    _RESET,
    _SCAN_TABLE,
    _SENT,
    _WHOLE_SECTION,
    LexiconError,
    _Compiled,
    _Entry,
    _load_entries,
)
from advbench.concepts.sections import Section, SectionSplitter
from advbench.concepts.vocabulary import (
    CLASSES,
    CONCEPT_CLASS,
    CONCEPTS,
    STATE_PRIORITY,
)

__all__ = [
    "ConceptExtractor",
    "ConceptResult",
    "LexiconError",
    "Mention",
    "derive_labels",
    "extract",
]


class Mention(NamedTuple):
    """One phrase of a report that names a concept, with the state it gives the concept.

    ``start``/``end`` are offsets in the original report (``text == report[start:end]``);
    ``trigger`` is the cue that decided the state (``None`` for a plain positive). A normal
    statement (``unremarkable``) is always a ``positive`` mention: the report-level state of
    ``unremarkable`` also depends on the disease concepts (see the guide). A named tuple:
    a report has many mentions, and a tuple is the cheapest immutable record to make.
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
        return dict(zip(self._fields, self, strict=True))


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


_STATE_OF_PRIORITY = {p: s for s, p in STATE_PRIORITY.items()}
_PNEUMONIA_OTHERS = tuple(
    c for c in CONCEPTS if CONCEPT_CLASS[c] == "pneumonia" and c != "opacity"
)


def derive_labels(concepts: dict[str, str]) -> dict[str, str]:
    """The six class labels: the strongest state among each class's concepts.

    ``opacity`` counts towards ``pneumonia`` when pneumonitis, consolidation or infection is
    positive or uncertain, and towards ``pleural_effusion`` otherwise; ``healthy`` is the state
    of ``unremarkable``.
    """
    best = dict.fromkeys(CLASSES, 0)
    opacity_class = (
        "pneumonia"
        if any(concepts.get(c) in ("positive", "uncertain") for c in _PNEUMONIA_OTHERS)
        else "pleural_effusion"
    )
    for concept in CONCEPTS:
        cls = opacity_class if concept == "opacity" else CONCEPT_CLASS[concept]
        p = STATE_PRIORITY[concepts.get(concept, "absent")]
        if p > best[cls]:
            best[cls] = p
    return {c: _STATE_OF_PRIORITY[best[c]] for c in CLASSES}


_ALL_ABSENT = dict.fromkeys(CONCEPTS, "absent")
_ALL_ABSENT_LABELS = dict.fromkeys(CLASSES, "absent")


def _labels(best: dict[str, int]) -> dict[str, str]:
    """``derive_labels`` on the priorities of the mentioned concepts (fast path of extract)."""
    label = dict.fromkeys(CLASSES, 0)
    cls_of = CONCEPT_CLASS
    for concept, p in best.items():
        if concept == "opacity":
            cls = "pleural_effusion"
            for c in _PNEUMONIA_OTHERS:
                if best.get(c, 0) >= 2:
                    cls = "pneumonia"
                    break
        else:
            cls = cls_of[concept]
        if p > label[cls]:
            label[cls] = p
    names = _STATE_OF_PRIORITY
    return {c: names[p] for c, p in label.items()}


# A finding joined to the next one in a list ("effusion, consolidation, or pneumothorax"):
# the text between them is a comma and/or a conjunction and at most three modifier words.
_LIST_GAP = re.compile(r"\s*(?:,\s*)?(?:(?:and|or|and/or|nor)\s+)?(?:[a-z-]+\s+){0,3}")
_CONJ = re.compile(r"\b(?:and|or|nor)\b")
_OR = re.compile(r"\b(?:or|nor)\b")
_TIGHT_GAP = re.compile(r",?[^,.;:]{0,40}")
# After a pre cue with no finding after it, what may follow for it to look back instead:
# "pneumonia, possible.", "a small effusion may be present".
_DANGLING_TAIL = re.compile(
    r"[\s.,;:!?)\]]*(?:$|(?:present|seen|noted|identified|visible|evident|there|demonstrated)"
    r"\b(?:\s+[a-z-]+){0,4}[\s.,;:!?)\]]*$)"  # "may be present at the right base"
)
_NON_SPACE = re.compile(r"\S")
# "?pna", "?RLL infiltrate", "pneumonia?": a question mark stuck to a finding hedges it
# (clinical shorthand); the scanned text gets a space there so the word after it is found
_QUERY_WORD = re.compile(r"\?(?=[a-z])")
# ... also through a word or two before the finding ("?early pneumonia", "?small R effusion")
_QUERY_BEFORE = re.compile(r"\?[a-z][a-z-]*(?:[ \t]+[a-z][a-z-]*){0,2}[ \t]+$")


def _queried(low: str, s: int, t: int) -> bool:
    """Whether a finding at [s, t) carries a stuck-on question mark ("?pna", "pneumonia?",
    "?early pneumonia")."""
    return (s > 0 and low[s - 1] == "?") or low[t:t + 1] == "?" or (
        "?" in low[max(0, s - 40):s] and _QUERY_BEFORE.search(low, max(0, s - 40), s) is not None)
_OR_GAP = re.compile(r"\s*,?\s*(?:or|nor)\s+")
# After a hedging predicate ("pneumonia is likely"), what may follow for it to look back.
_PRED_TAIL = re.compile(
    r"[\s,]*(?:$|[.;:!?)\]]|(?:and|or|but|given|in|on|at|with|as|if|clinically|particularly"
    r"|especially|based|since|because|considering|for|although|though|however|which|present"
    r"|seen|noted|identified|demonstrated|there|here|today|now|again|too|also)\b)"
)


def _clean(phrase: str) -> str:
    """A phrase with its whitespace (line wraps) made single spaces."""
    if "\n" in phrase or "  " in phrase or "\t" in phrase:
        return " ".join(phrase.split())
    return phrase


def _lower(text: str) -> str:
    """Lower-case text with the same length (offsets stay valid)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


class ConceptExtractor:
    """Compiled lexicon; ``extract`` gives a report's concept states, labels and mentions."""

    _CACHE_LIMIT = 200_000

    def __init__(self, lexicon_path: Path | None = None, *, sentence_cache: bool = True):
        """``sentence_cache=False`` scans every section whole (to check the cache)."""
        if lexicon_path is None:
            source = resources.files("advbench.concepts").joinpath("lexicon.yaml")
            text = source.read_text("utf-8")
        else:
            text = Path(lexicon_path).read_text("utf-8")
        lex = yaml.safe_load(text) or {}
        self._entries = _load_entries(lex)
        compiled = _Compiled(self._entries)
        self.pattern = compiled.plain
        self._finditer = compiled.scan_regex.finditer
        self._marker_match = compiled.marker_regex.match
        self._group_entry = compiled.group_entry
        self._cache: dict[str, tuple[int, _Entry, int]] = {}  # token text -> entry
        self._clauses: dict[str, tuple] = {}  # clause text -> its mentions
        self._sentences: dict[str, tuple] = {}  # sentence text -> its mentions, relative
        self._whole: dict[str, tuple] = {}  # short section text -> its sentences' mentions
        # without a cheap sentence cut (see _sentence_regex), sections are scanned whole
        self._sentence_cache = sentence_cache and compiled.sentence_regex is not None
        if self._sentence_cache:
            self._sentences_in = compiled.sentence_regex.finditer
        brk = lex.get("paragraph_break")
        self._breaks = re.compile(brk) if brk else None
        self._sections = SectionSplitter(lex.get("sections") or {"kept": {}, "dropped": []})

    def cache_info(self) -> dict[str, int]:
        """How many entries each cache holds (each is cleared when it reaches its limit)."""
        return {"sentences": len(self._sentences), "short_sections": len(self._whole),
                "clauses": len(self._clauses), "tokens": len(self._cache),
                "limit": self._CACHE_LIMIT}

    def sections(self, text: str) -> list[Section]:
        """The kept sections of a report (see ``advbench.concepts.sections``)."""
        return self._sections.kept(text)

    def sentence_spans(self, text: str) -> list[tuple[str, int, int]]:
        """(section, start, end) of each sentence of the kept sections, cut as the extractor
        cuts them (a mention never crosses one), stripped of the spaces around it."""
        low = _lower(text)
        out: list[tuple[str, int, int]] = []
        for name, start, end, _ in self._sections.kept_spans(text, low):
            for a, b in self._cuts(low, start, end):
                piece = text[a:b]
                if piece.strip():
                    out.append((name, a + len(piece) - len(piece.lstrip()),
                                a + len(piece.rstrip())))
        return out

    def _cuts(self, low: str, start: int, end: int) -> Iterator[tuple[int, int]]:
        """The pieces [a, b) the cheap sentence cut makes of [start, end) (the whole span
        when the lexicon has no cheap cut)."""
        marks = self._sentences_in(low, start, end) if self._sentence_cache else ()
        a = start
        for mark in chain(marks, (None,)):
            if mark is None:
                b = end
            elif mark.lastindex:  # a mark inside a phrase ("e.g.")
                continue
            else:
                b = mark.end()
            yield a, b
            a = b

    def extract(self, text: str) -> ConceptResult:
        """Concept states, class labels and mentions of one report."""
        mentions: list[Mention] = []
        best: dict[str, int] = {}  # concept -> strongest state priority
        if text:
            low = _lower(text)
            scan: list[str] = []  # the scanned text, made when a sentence is not cached
            for name, start, end, _ in self._sections.kept_spans(text, low):
                self._section(text, low, scan, name, start, end, mentions, best)
        if not best:
            return ConceptResult(dict(_ALL_ABSENT), dict(_ALL_ABSENT_LABELS), mentions)
        if "unremarkable" in best:
            sick = any(p >= 2 for c, p in best.items() if c != "unremarkable")
            best["unremarkable"] = 1 if sick else 3
        concepts = dict(_ALL_ABSENT)
        names = _STATE_OF_PRIORITY
        for c, p in best.items():
            concepts[c] = names[p]
        return ConceptResult(concepts, _labels(best), mentions)

    # -- internals ------------------------------------------------------------------------

    def _scan_text(self, low: str) -> str:
        """The text the lexicon regex scans: paragraph breaks marked, separators made spaces,
        one leading space (``scan[i]`` is ``low[i - 1]``)."""
        scan = low
        if self._breaks is not None and "\n" in low:
            scan = self._breaks.sub(_BREAK, low)
            if len(scan) != len(low):  # the break pattern matched more than one character
                scan = self._breaks.sub(_breaks_to_marks, low)
        scan = scan.translate(_SCAN_TABLE)
        if "?" in scan:
            scan = _QUERY_WORD.sub(" ", scan)
        return " " + scan

    def _section(self, text: str, low: str, scan: list[str], section: str, start: int,
                 end: int, mentions: list[Mention], best: dict[str, int]) -> None:
        """The mentions of one kept section.

        A short section is looked up whole first: impressions repeat word for word ("No
        acute cardiopulmonary process.").
        """
        body = text[start:end]
        key = body.strip()
        if not key:
            return
        a0 = start + len(body) - len(body.lstrip())
        whole = self._sentence_cache and len(key) <= _WHOLE_SECTION
        parts = self._whole.get(key) if whole else None
        if parts is None:
            parts = self._sentences_of(text, low, scan, a0, end)
            if whole:
                if len(self._whole) >= self._CACHE_LIMIT:
                    self._whole.clear()
                self._whole[key] = parts
        tnew = tuple.__new__
        get = best.get
        for offset, records in parts:
            a = a0 + offset
            for c, state, s, t, mtext, trig, sentence, p in records:
                mentions.append(
                    tnew(Mention, (c, state, section, sentence, s + a, t + a, mtext, trig)))
                if p > get(c, 0):
                    best[c] = p

    def _sentences_of(self, text: str, low: str, scan: list[str], start: int,
                      end: int) -> tuple[tuple[int, tuple], ...]:
        """The mention records of a section's text, sentence by sentence: (sentence offset
        from ``start``, records with offsets from the sentence).

        States never cross a sentence end, so a sentence's mentions depend only on its own
        text, and report text repeats a lot ("No pleural effusion or pneumothorax."): each
        sentence is looked up by its text and scanned only when it is new. A sentence ends at
        a sentence-end mark that no lexicon phrase spans ("e.g.", "vs."); a sentence that this
        cheap split misses is only a longer piece, scanned as the whole section would be.
        """
        cache = self._sentences
        keep = self._sentence_cache
        parts = []
        for a, b in self._cuts(low, start, end):
            key = text[a:b].lstrip()  # the same sentence, whatever wrap or space before it
            if not key:
                continue
            a = b - len(key)
            records = cache.get(key) if keep else None
            if records is None:
                if not scan:
                    scan.append(self._scan_text(low))
                found: list[tuple] = []
                self._scan(text, low, scan[0], a, b, found)
                records = tuple((c, st, s - a, t - a, mt, tr, sn, p)
                                for c, st, s, t, mt, tr, sn, p in found)
                if keep:
                    if len(cache) >= self._CACHE_LIMIT:
                        cache.clear()
                    cache[key] = records
            if records:
                parts.append((a - start, records))
        return tuple(parts)

    def _lookup(self, scan: str, m: re.Match[str], endpos: int) -> tuple[int, _Entry, int]:
        """The entry of a token the cache does not know yet.

        A token's text decides its entry: the lexicon has no two phrases that differ only by
        a look-ahead (see lexicon.yaml), so the answer is cached by text.
        """
        marked = self._marker_match(scan, m.start(), endpos)
        key = m.group()
        if marked is None or marked.end() != m.end():  # cannot happen: same regex shape
            return (_IGNORE, _Entry(_IGNORE, key), 0)
        entry = self._entries[self._group_entry[marked.lastindex]]
        lead = 1 if key[0] == " " else 0
        info = (entry.kind, entry, lead)
        if key == "?":
            return info  # the one token whose text does not decide its phrase: "? effusion"
            # (a hedge) and "effusion?" (a sentence end) are told apart by the look-around
        if len(self._cache) >= self._CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = info
        return info

    def _scan(self, text: str, low: str, scan: str, start: int, end: int,
              found: list[tuple]) -> None:
        """Tokens of a piece of a kept section, clause by clause, into mention records.

        The hot loop of the extractor. A clause's result is cached by its text, so the loop
        only notes where each clause starts and whether it names a finding; the clause is
        tokenized again, and resolved, only when the cache does not know its text.
        """
        has_mention = False
        clause_at = -1  # where the clause's first token starts in the scanned text
        pending: list[tuple] = []  # (first token offset, mentions) of this sentence's clauses
        sent_start = start
        get = self._cache.get
        # scan[i] is low[i - 1]: the window starts on the separator before the section's first
        # word (the blank lines after a header are skipped)
        first = _NON_SPACE.search(low, start, end)
        if first is None:
            return
        e1 = end + 1
        for m in self._finditer(scan, first.start(), e1):
            info = get(m.group())
            if info is None:
                info = self._lookup(scan, m, e1)
            kind = info[0]
            if kind <= _CUE:
                if clause_at < 0:
                    clause_at = m.start()
                    base = clause_at - 1 + info[2]
                    if "?" in low[max(0, base - 40):base]:  # the cached text keeps its "?"
                        q = _QUERY_BEFORE.search(low, max(0, base - 40), base)
                        if q is not None:
                            base = q.start()
                        elif base and low[base - 1] == "?":
                            base -= 1
                if kind == _MENTION:
                    has_mention = True
            elif kind != _IGNORE:
                s = m.start() - 1
                if has_mention:
                    done = self._clause(low, scan, clause_at, e1, base, s)
                    if done:
                        pending.append((base, done))
                    has_mention = False
                clause_at = -1
                if kind == _SENT:
                    if pending:
                        _flush(text, sent_start, s, pending, found)
                        pending = []
                    sent_start = m.end() - 1
        if has_mention:
            done = self._clause(low, scan, clause_at, e1, base, end)
            if done:
                pending.append((base, done))
        if pending:
            _flush(text, sent_start, end, pending, found)

    def _clause(self, low: str, scan: str, at: int, endpos: int, base: int,
                clause_end: int) -> tuple:
        """The mentions of a clause, offsets relative to its start.

        The states depend only on the text from the clause's first token to its end (the
        tokens, the cues and the words between them), and report text repeats a lot ("no
        pleural effusion or pneumothorax"), so the result is cached by that text.
        """
        key = low[base:clause_end + 1]  # with what ends it: "pneumonia?" is not "pneumonia."
        done = self._clauses.get(key)
        if done is not None:
            return done
        clause: list[tuple[_Entry, int, int]] = []
        has_cue = False
        get = self._cache.get
        for m in self._finditer(scan, at, endpos):
            s, t = m.span()
            if s > clause_end:
                break
            info = get(m.group()) or self._lookup(scan, m, endpos)
            kind = info[0]
            if kind > _CUE:
                if kind == _IGNORE:
                    continue
                break
            e = info[1]
            clause.append((e, s - 1 + info[2], t - 1))
            if kind == _CUE or e.cue is not None:
                has_cue = True
                if e.cue is not None:
                    clause.append((e.cue, s - 1 + info[2], t - 1))
        out: list[tuple] = []
        if has_cue:
            self._resolve(low, clause, clause_end, out)
        else:
            _plain(low, clause, out)
        priority = STATE_PRIORITY
        done = tuple((c, st, s - base, t - base, tr, priority[st]) for c, st, s, t, tr in out)
        if len(self._clauses) >= self._CACHE_LIMIT:
            self._clauses.clear()
        self._clauses[key] = done
        return done

    @staticmethod
    def _resolve(low: str, clause: list[tuple[_Entry, int, int]], clause_end: int,
                 pending: list) -> None:
        """States of the mentions of one clause, from the cues around them."""
        n = len(clause)
        states: list = [None] * n  # (state, trigger) given by a cue, per finding
        last_finding = -1
        for i in range(n - 1, -1, -1):
            if clause[i][0].kind != _CUE:
                last_finding = i
                break
        cur = None  # (state, trigger) of the pre cue in force
        since = 0  # findings since that cue
        last_end = -1  # end of the last finding
        back = None  # cues that look back
        for i in range(n):
            e, s, t = clause[i]
            if e.kind != _CUE:
                if cur is not None:
                    states[i] = cur
                since += 1
                last_end = t
                continue
            d = e.direction
            if d == _PRE or d == _PRED:
                if (d == _PRED and _PRED_TAIL.match(low, t, clause_end)) or (
                    i > last_finding  # nothing follows: "pneumonia, possible." looks back
                    and e.state != "positive"
                    and _DANGLING_TAIL.match(low, t, clause_end)
                ):
                    if back is None:
                        back = [i]
                    else:
                        back.append(i)
                    continue
                if i > last_finding:
                    continue
                if cur is not None and cur[0] == "negative" and e.state == "uncertain" and (
                    e.link or not since or _OR_GAP.fullmatch(low, last_end, s)
                ):
                    continue  # "no opacity to suggest pneumonia", "no suspicious nodule"
                cur = (e.state, _clean(low[s:t]))
                since = 0
            elif d == _RESET:
                if cur is not None and since and (cur[0] == "negative" or not e.negation_only):
                    gap = low[last_end:s]
                    if (
                        ("," in gap or " and " in gap or " with " in gap)
                        and _OR.search(gap) is None
                        and _OR.search(low, t, clause_end) is None
                    ):
                        cur = None
                        since = 0
            elif back is None:
                back = [i]
            else:
                back.append(i)
        if back is not None:
            for i in back:
                e, s, t = clause[i]
                given = (e.state, _clean(low[s:t]))
                # a two-sided hedge keeps a negation in force: "no effusion and/or pneumothorax"
                hedge = e.direction == _BOTH and e.state == "uncertain"
                # backward: the finding right before, and a list joined to it by and/or
                j, first, need_conj, prev_start = i - 1, True, True, s
                while j >= 0:
                    f, fs, ft = clause[j]
                    if f.kind == _CUE:
                        if f.direction != _RESET:
                            break
                        j -= 1  # a positive adjective: "effusions are small, if any"
                        continue
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
                    if hedge and states[j] is not None and states[j][0] == "negative":
                        break
                    states[j] = given
                    first = False
                    prev_start = fs
                    j -= 1
                # forward: the finding right after it and a list joined to that; a hedge
                # always ("atelectasis versus pneumonia"), "resolved" when it found nothing
                # before it ("resolved pulmonary edema and pleural effusions")
                if e.direction == _BOTH and (first or e.state == "uncertain"):
                    j = i + 1
                    while j < n and clause[j][0].direction == _RESET:
                        j += 1  # "if any, residual pneumothorax"
                    if j < n:
                        f, fs, ft = clause[j]
                        if f.kind != _CUE and _TIGHT_GAP.fullmatch(low, t, fs) and not (
                                hedge and states[j] is not None and states[j][0] == "negative"):
                            states[j] = given
                            _forward_list(low, clause, j, given, states)
        for i in range(n):
            e, s, t = clause[i]
            if e.kind != _MENTION:
                continue
            state = e.own
            if state is None:
                given = states[i]
                if given is not None:
                    state, trig = given
                elif _queried(low, s, t):
                    state, trig = "uncertain", "?"
                else:
                    state, trig = "positive", None
            else:
                trig = None if state == "positive" else _clean(low[s:t])
            for c in e.concepts:
                pending.append((c, state, s, t, trig))


def _forward_list(low: str, clause: list[tuple[_Entry, int, int]], j: int, given: tuple,
                  states: list) -> None:
    """Give ``given`` to the findings joined to finding ``j`` by commas and and/or."""
    prev_end = clause[j][2]
    for k in range(j + 1, len(clause)):
        f, fs, ft = clause[k]
        if f.kind == _CUE or f.state is not None:
            return
        gap = low[prev_end:fs]
        if _LIST_GAP.fullmatch(gap) is None or ("," not in gap and _CONJ.search(gap) is None):
            return
        if given[0] == "uncertain" and states[k] is not None and states[k][0] == "negative":
            return  # a negation in force stays
        states[k] = given
        prev_end = ft


def _plain(low: str, clause: list[tuple[_Entry, int, int]], pending: list) -> None:
    """A clause without cues: every mention keeps its own (fixed or positive) state."""
    for e, s, t in clause:
        if e.kind == _MENTION:
            state = e.own
            if state is None and _queried(low, s, t):
                for c in e.concepts:
                    pending.append((c, "uncertain", s, t, "?"))
            elif state is None or state == "positive":
                for c in e.concepts:
                    pending.append((c, "positive", s, t, None))
            else:
                trig = _clean(low[s:t])
                for c in e.concepts:
                    pending.append((c, state, s, t, trig))


def _flush(text: str, start: int, end: int, pending: list, found: list[tuple]) -> None:
    """The mention records of one sentence, now that its text is known.

    ``pending`` holds, per clause, its first token's offset and its mentions relative to it;
    a record is (concept, state, start, end, text, trigger, sentence, priority).
    """
    sentence = text[start:end]
    if "\n" in sentence:
        sentence = sentence.replace("\n ", " ")  # a MIMIC hard line wrap
    if "\n" in sentence or "  " in sentence or "\t" in sentence:
        sentence = " ".join(sentence.split())
    else:
        sentence = sentence.strip()
    for base, done in pending:
        for c, state, s, t, trig, p in done:
            s += base
            t += base
            found.append((c, state, s, t, text[s:t], trig, sentence, p))


def _breaks_to_marks(m: re.Match[str]) -> str:
    return _BREAK * (m.end() - m.start())


@cache
def default_extractor() -> ConceptExtractor:
    """The packaged lexicon's extractor, one per process (its caches shared by its users)."""
    return ConceptExtractor()


def extract(text: str) -> ConceptResult:
    """Extract with the packaged lexicon (compiled once per process)."""
    return default_extractor().extract(text)
