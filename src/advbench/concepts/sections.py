"""Split a radiology report into its sections and pick the text that counts for concepts.

Only FINDINGS and IMPRESSION count when a report has either; otherwise the whole body counts
except the dropped sections (EXAMINATION, INDICATION, HISTORY, ...). The header names are data
in ``lexicon.yaml``. Offsets always refer to the original text, so mentions found in the kept
text map straight back to the report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Section:
    """One section of a report: ``name`` is lower-case; ``start``/``end`` bound its content.

    ``header_start`` is where its header begins (equal to ``start`` for the preamble).
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
        names = sorted(self._canon, key=len, reverse=True)
        alt = "|".join(re.escape(n).replace(r"\ ", r"[ \t]+") for n in names)
        # Upper-case headers anywhere (followed by ":", or alone on their line); the leading
        # alternation of literals lets the regex engine skip lower-case text quickly.
        self._upper = re.compile(rf"(?:{alt})(?=[ \t]*(?::|\n|$))")
        # Headers in any case at a line start.
        self._line = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z /&()#]{0,60}?)[ \t]*:")
        self._colon = re.compile(r"[ \t]*:")

    def split(self, text: str) -> list[Section]:
        """All sections in order; text before the first header is the ``preamble``."""
        found: dict[int, tuple[str, int]] = {}  # header start -> (section name, content start)
        canon = self._canon
        for m in self._upper.finditer(text):
            start, end = m.span()
            if start and (text[start - 1].isalnum() or text[start - 1] in "_#/"):
                continue
            colon = self._colon.match(text, end)
            if colon is None:  # no colon: only a header alone on its own line
                nl = text.rfind("\n", 0, start) + 1
                if text[nl:start].strip():
                    continue
            else:
                end = colon.end()
            found[start] = (canon[_norm(m.group())], end)
        if ":" in text:
            for m in self._line.finditer(text):
                name = canon.get(_norm(m.group(1)))
                if name is not None and m.start(1) not in found:
                    found[m.start(1)] = (name, m.end())
        heads = sorted(found.items())
        first = heads[0][0] if heads else len(text)
        sections = [Section("preamble", 0, first, 0)]
        for i, (hstart, (name, cstart)) in enumerate(heads):
            end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
            sections.append(Section(name, min(cstart, end), end, hstart))
        return sections

    def kind(self, name: str) -> str:
        """What a section name is: ``kept``, ``dropped``, ``wet`` or ``body`` (the preamble)."""
        return self._kind.get(name, "body")

    def kept(self, text: str) -> list[Section]:
        """The sections whose text counts, per the labelling guide.

        FINDINGS/IMPRESSION sections keep their names; without either, the preamble and every
        section that is not dropped are returned named ``body``.
        """
        sections = self.split(text)
        kind = self._kind
        chosen = [s for s in sections if kind.get(s.name) == "kept"]
        if chosen:
            return chosen
        return [
            Section("body", s.start, s.end, s.header_start)
            for s in sections
            if kind.get(s.name, "body") in ("wet", "body") and text[s.start : s.end].strip()
        ]


def _norm(name: str) -> str:
    return " ".join(name.upper().split())
