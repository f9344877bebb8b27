"""The on-disk cache of compiled regular expressions behaves as ``re.compile``."""

from __future__ import annotations

import _sre
import re
import types

import pytest

from advbench.concepts import regex_cache
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


# The private API (``_sre``, ``re._parser``, ``re._compiler``) may move or change in another
# Python: each way it can break must end in a working ``re.compile`` pattern, and no cache file
# may be written from a program that was not built.


def _raises(exc: type[Exception]):
    def fail(*args, **kwargs):
        raise exc("changed in this Python")

    return fail


def _engine(**overrides) -> types.SimpleNamespace:
    """A stand-in for ``_sre`` with the real constants and constructor, less or plus overrides."""
    real = {"MAGIC": _sre.MAGIC, "CODESIZE": _sre.CODESIZE, "compile": _sre.compile}
    return types.SimpleNamespace(**{**real, **overrides})


@pytest.mark.parametrize(
    "attribute, replacement",
    [
        ("_sre", None),
        ("_parser", None),
        ("_compiler", None),
        ("_compiler", types.SimpleNamespace()),  # no _code
        ("_compiler", types.SimpleNamespace(_code=_raises(TypeError))),  # signature changed
        ("_parser", types.SimpleNamespace()),  # no parse
        ("_parser", types.SimpleNamespace(parse=_raises(TypeError))),
        ("_sre", types.SimpleNamespace(compile=_sre.compile)),  # no MAGIC/CODESIZE for the key
    ],
    ids=["no-sre", "no-parser", "no-compiler", "compiler-without-code", "code-typeerror",
         "parser-without-parse", "parse-typeerror", "sre-without-magic"],
)
def test_a_missing_or_changed_private_api_falls_back_to_re_compile(
    tmp_path, monkeypatch, attribute, replacement
):
    monkeypatch.setattr(regex_cache, attribute, replacement)
    _same(compile_cached(PATTERN, tmp_path), re.compile(PATTERN))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("error", [TypeError, AttributeError, RuntimeError])
def test_an_engine_constructor_that_raises_falls_back_to_re_compile(tmp_path, monkeypatch, error):
    monkeypatch.setattr(regex_cache, "_sre", _engine(compile=_raises(error)))
    _same(compile_cached(PATTERN, tmp_path), re.compile(PATTERN))
    assert not list(tmp_path.iterdir())


def test_an_engine_constructor_that_returns_no_pattern_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(regex_cache, "_sre", _engine(compile=lambda *args: None))
    _same(compile_cached(PATTERN, tmp_path), re.compile(PATTERN))
    assert not list(tmp_path.iterdir())


def test_a_cached_program_the_engine_refuses_falls_back(tmp_path, monkeypatch):
    compile_cached(PATTERN, tmp_path)  # a good cache file, then an engine that rejects it
    assert len(list(tmp_path.iterdir())) == 1
    monkeypatch.setattr(regex_cache, "_sre", _engine(compile=_raises(TypeError)))
    _same(compile_cached(PATTERN, tmp_path), re.compile(PATTERN))
