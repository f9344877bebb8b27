"""The on-disk cache of compiled regular expressions behaves as ``re.compile``."""

from __future__ import annotations

import re

from advbench.concepts.regex_cache import compile_cached

PATTERN = r"(?:\s(?P<word>no|without)\s+(effusion|pneumothora(?:x|ces)))|\.(?![0-9])()"
TEXTS = ["There is no effusion. ", "without pneumothoraces.", "2.5 cm", "", "no  effusion."]


def _same(a: re.Pattern[str], b: re.Pattern[str]) -> None:
    assert a.pattern == b.pattern and a.groups == b.groups and a.groupindex == b.groupindex
    for text in TEXTS:
        got = [(m.span(), m.groups(), m.lastindex) for m in a.finditer(text)]
        assert got == [(m.span(), m.groups(), m.lastindex) for m in b.finditer(text)]


def test_compiled_then_loaded_from_the_cache(tmp_path):
    first = compile_cached(PATTERN, tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    again = compile_cached(PATTERN, tmp_path)  # from the file this time
    _same(first, re.compile(PATTERN))
    _same(again, re.compile(PATTERN))
    compile_cached(PATTERN + "|x", tmp_path)  # another pattern, another file
    assert len(list(tmp_path.iterdir())) == 2


def test_a_damaged_cache_file_is_compiled_afresh(tmp_path):
    compile_cached(PATTERN, tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a compiled program")
    _same(compile_cached(PATTERN, tmp_path), re.compile(PATTERN))
    assert path.read_bytes() != b"not a compiled program"  # written anew


def test_an_unwritable_cache_is_skipped(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _same(compile_cached(PATTERN, blocker / "regex"), re.compile(PATTERN))
