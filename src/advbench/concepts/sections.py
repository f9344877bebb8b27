"""Split a radiology report into its sections and pick the text that counts for concepts.

Only FINDINGS and IMPRESSION count when a report has either; otherwise the whole body counts
except the dropped sections (EXAMINATION, INDICATION, HISTORY, ...). The header names are data
in ``lexicon.yaml``. Offsets always refer to the original text, so mentions found in the kept
text map straight back to the report.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

_TEXT = re.compile(r"\S")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# any "Name:" at a line start ("Lungs:", "Mediastinum/hila:", "Report:"), or a "Name." /
# "Name -" line alone ("Findings.", "Opinion -"): it ends a dropped section's paragraph in a
# report without FINDINGS or IMPRESSION (organ-by-organ templates, other languages' layouts)
_LINE_HEADER = re.compile(
    r"\n[ \t]*(?:[A-Za-z][A-Za-z0-9 /&()'-]{0,40}:"
    r"|(?i:(?:imaging )?(?:findings?|impressions?|conclusions?|opinion|results?|assessment|"
    r"report|description|summary|comment|diagnosis|befund|beurteilung|hallazgos|conclusi[oó]n|"
    r"impresi[oó]n|verslag|conclusie|bevindingen))[ \t]*[.:\u2013-][ \t]*(?=\r?\n|$))")


class Section(NamedTuple):
    """One section of a report: ``name`` is lower-case; ``start``/``end`` bound its content.

    ``header_start`` is where its header begins (0 for the preamble).
    """

    name: str
    start: int
    end: int
    header_start: int


class SectionSplitter:
    """Finds section headers (``FINDINGS:``, ``IMPRESSION:``, ...) and the kept text."""

    def __init__(self, config: dict[str, Any]):
        kept: dict[str, str] = {k.upper(): v.lower() for k, v in config["kept"].items()}
        dropped = {n.upper() for n in config["dropped"]}
        wet = {n.upper() for n in config.get("wet_read", [])}
        self._canon: dict[str, str] = {}  # header as written (normalised) -> section name
        self._kind: dict[str, str] = {}  # section name -> kept | dropped | wet
        for name, canon in kept.items():
            self._canon[_norm(name)], self._kind[canon] = canon, "kept"
        for name in dropped:
            self._canon[_norm(name)] = _norm(name).lower()
            self._kind[_norm(name).lower()] = "dropped"
        for name in wet:
            self._canon[_norm(name)], self._kind["wet read"] = "wet read", "wet"
        # A header at a line start (any case) followed by ":", or alone on its line (upper
        # case); the leading newline is a literal, so the engine skips other text quickly.
        header = (rf"[ \t]*+({_trie(list(self._canon))})(?:[ \t]*\([^)\n]{{1,40}}\))?"
                  r"[ \t]*(:|(?=[ \t]*(?:\r?\n|$)))")  # "FINDINGS (CHEST):" too
        self._line = re.compile(r"\n" + header)
        self._first = re.compile(header)
        # Kept headers may also follow other text on a line when written in upper case.
        self._raw: dict[str, str] = {}  # header as found -> section name
        words = {_norm(n).split()[0].split("/")[0] for n in kept}
        self._inline = tuple(sorted(w for w in words if not any(
            o != w and w.startswith(o) for o in words)))
        self._kept_words = tuple(w.lower() for w in self._inline)

    def split(self, text: str) -> list[Section]:
        """All sections in order; text before the first header is the ``preamble``."""
        heads = self._heads(text)
        if not heads:
            return [Section("preamble", 0, len(text), 0)]
        sections = [Section("preamble", 0, heads[0][0], 0)]
        last = len(heads) - 1
        for i, (hstart, name, cstart) in enumerate(heads):
            end = heads[i + 1][0] if i < last else len(text)
            sections.append(Section(name, cstart if cstart < end else end, end, hstart))
        return sections

    def _heads(self, text: str) -> list[tuple[int, str, int]]:
        """(header start, section name, content start) of every header, in order."""
        name_of = self._name_of
        heads = []
        m = self._first.match(text)
        if m is not None and (m.group(2) or m.group(1).isupper()):
            heads.append((m.start(1), name_of(m.group(1)), m.end()))
        for m in self._line.finditer(text):
            raw, colon = m.group(1, 2)
            if colon or raw.isupper():
                heads.append((m.start(1), name_of(raw), m.end()))
        added = False
        for word in self._inline:
            i = text.find(word)
            while i >= 0:
                inside = any(h[0] <= i < h[2] for h in heads)
                if not inside and (i == 0 or not text[i - 1].isalnum()):
                    m = self._first.match(text, i)
                    if m is not None and m.group(2) and m.group(1).isupper():
                        heads.append((i, name_of(m.group(1)), m.end()))
                        added = True
                i = text.find(word, i + 1)
        if added:
            heads.sort()
        return heads

    def _name_of(self, raw: str) -> str:
        name = self._raw.get(raw)
        if name is None:
            name = self._raw[raw] = self._canon[_norm(raw)]
        return name

    def kind(self, name: str) -> str:
        """What a section name is: ``kept``, ``dropped``, ``wet`` or ``body`` (the preamble)."""
        return self._kind.get(name, "body")

    def kept(self, text: str, low: str | None = None) -> list[Section]:
        """The sections whose text counts, per the labelling guide.

        FINDINGS/IMPRESSION sections keep their names; without either, the preamble and every
        section that is not dropped are returned named ``body`` (a dropped section is one
        paragraph: the text after its first blank line, or from the next line that starts with
        a "Name:" header, is body again). ``low`` is
        ``text.lower()`` when the caller has it (same length).
        """
        chosen = self._kept_headers(text, text.lower() if low is None else low)
        if chosen:
            return [Section(name, start, end, header) for name, start, end, header in chosen]
        return self._body(text)

    def kept_spans(self, text: str, low: str) -> list[tuple[str, int, int, int]]:
        """``kept`` as plain tuples, for the extractor's hot path."""
        return self._kept_headers(text, low) or self._body(text)

    def _body(self, text: str) -> list[Section]:
        """The sections that count in a report without FINDINGS and IMPRESSION."""
        kind = self._kind
        body = []
        for s in self.split(text):
            start = s.start
            if kind.get(s.name, "body") == "dropped":
                first = _TEXT.search(text, start, s.end)
                if not first:
                    continue
                blank = _BLANK_LINE.search(text, first.start(), s.end)
                head = _LINE_HEADER.search(text, first.start(), s.end)
                ends = [m.end() if m is blank else m.start() + 1 for m in (blank, head) if m]
                if not ends:
                    continue
                start = min(ends)
            if text[start : s.end].strip():
                body.append(Section("body", start, s.end, s.header_start))
        return body

    def _kept_headers(self, text: str, low: str) -> list[tuple[str, int, int, int]]:
        """The FINDINGS/IMPRESSION sections, found without splitting the whole report.

        Same result as taking them from ``split``: a kept header is one of the headers that
        ``split`` finds (at a line start, or inline in upper case), and its section ends at
        the next header of any name.
        """
        candidates = []
        for word in self._kept_words:
            i = low.find(word)
            while i >= 0:
                candidates.append(i)
                i = low.find(word, i + 1)
        if not candidates:
            return []
        if len(candidates) > 1:
            candidates.sort()
        kind = self._kind
        first = self._first.match
        heads = []
        for i in candidates:
            if heads and i < heads[-1][2]:
                continue  # inside the previous header ("IMPRESSION AND FINDINGS:")
            line = text.rfind("\n", 0, i) + 1
            m = None
            if line == i or not text[line:i].strip():
                m = first(text, line)
                if m is not None and (m.start(1) != i or not (m.group(2) or m.group(1).isupper())):
                    m = None
            if m is None and (i == 0 or not text[i - 1].isalnum()) and text[i].isupper():
                m = first(text, i)
                if m is not None and not (m.group(2) and m.group(1).isupper()):
                    m = None
            if m is not None:
                name = self._name_of(m.group(1))
                if kind.get(name) == "kept":
                    heads.append((i, name, m.end()))
        chosen = []
        n = len(text)
        for k, (hstart, name, cstart) in enumerate(heads):
            limit = heads[k + 1][0] if k + 1 < len(heads) else n
            pos = cstart
            while True:
                end = limit
                inner = None
                for m in self._line.finditer(text, pos, limit):
                    if m.group(2) or m.group(1).isupper():
                        end, inner = m.start(1), m
                        break
                chosen.append((name, pos if pos < end else end, end, hstart))
                if inner is None or kind.get(self._name_of(inner.group(1))) == "kept":
                    break
                # a dropped header inside FINDINGS ("Comparison: CT 4 months ago.") holds one
                # paragraph; the kept section goes on after it
                pos = _paragraph_end(text, inner.end(), limit)
                if pos >= limit:
                    break
        return chosen


_LINE = re.compile(r"[^\n]*(?:\n|$)")


def _paragraph_end(text: str, start: int, limit: int) -> int:
    """Where the paragraph that starts at ``start`` (a header's text) ends: at a blank line,
    at a line that starts with a "Name:" header, or at a line that starts a new sentence in
    upper case after a line that ended one; a wrapped line goes on."""
    line_end = text.find("\n", start, limit)
    if line_end < 0:
        return limit
    prev = text[start:line_end].rstrip()
    pos = line_end + 1
    while pos < limit:
        m = _LINE.match(text, pos, limit)
        line = m.group().rstrip("\n")
        body = line.strip()
        if not body or _LINE_HEADER.match("\n" + line) or (
                prev.endswith(".") and body[0].isupper()):
            return pos - 1  # on the newline, so a header on the next line is still found
        prev = body
        pos = m.end()
    return limit


def _trie(names: list[str]) -> str:
    """A case-insensitive regex of the header names, shaped as a trie (few branches tried)."""
    root: dict = {}
    for name in names:
        node = root
        for ch in name:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict, top: bool = False) -> str:
        alts = []
        for ch in sorted(node, key=lambda c: c == ""):
            if ch == "":
                alts.append("")
            elif ch == " ":
                alts.append(r"[ \t]+" + emit(node[ch]))
            elif ch.isalpha() and top:  # literal first characters: the engine skips fast
                rest = emit(node[ch])
                alts += [re.escape(ch.upper()) + rest, re.escape(ch.lower()) + rest]
            elif ch.isalpha():
                alts.append(f"[{ch.upper()}{ch.lower()}]" + emit(node[ch]))
            else:
                alts.append(re.escape(ch) + emit(node[ch]))
        if len(alts) == 1:
            return alts[0]
        return "(?:" + "|".join(alts) + ")"

    return emit(root, top=True)


def _norm(name: str) -> str:
    return " ".join(name.upper().split())
