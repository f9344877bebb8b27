"""Large regular expressions, compiled once per Python version and kept on disk.

Python's ``re`` parses and compiles a pattern in pure Python: the lexicon's two patterns (about
220,000 characters each) take about two seconds, at every start of every process that extracts
concepts. The compiled program depends only on the pattern and the Python build, so it is kept
in advbench's cache folder and handed on the next start to the regex engine's own constructor
(``_sre.compile``, the call ``re.compile`` ends with). The file name is a hash of the pattern
and of the engine's version; anything unexpected (another Python, a private API that moved or
changed, a damaged or unwritable cache) falls back to ``re.compile``.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import re
import sys
import tempfile
from pathlib import Path

try:  # CPython's regex engine and compiler; another Python simply compiles
    import _sre
    from re import _compiler, _parser
except ImportError:  # pragma: no cover
    _sre = _compiler = _parser = None

from advbench.paths import cache_dir


def compile_cached(pattern: str, folder: Path | None = None) -> re.Pattern[str]:
    """``re.compile(pattern)``, from the compiled program cached in ``folder`` when it is
    there (default: ``<cache>/regex``), and written there when it is not.

    Every step that touches the private API is guarded: whatever fails (a missing module or
    function, a changed signature or result) ends in ``re.compile``, never in an error.
    """
    if _sre is None or _compiler is None or _parser is None:
        return re.compile(pattern)
    try:
        path = (folder or cache_dir() / "regex") / f"{_key(pattern)}.marshal"
    except Exception:  # the engine lacks MAGIC/CODESIZE: nothing to key a cache on
        return re.compile(pattern)
    try:
        compiled = _sre.compile(pattern, *marshal.loads(path.read_bytes()))
        if _is_pattern(compiled, pattern):
            return compiled
    except Exception:  # no cache yet, or one this Python cannot use: compile afresh
        pass
    try:
        args = _program(pattern)
        compiled = _sre.compile(pattern, *args)
        data = marshal.dumps(args)
    except Exception:  # the private compiler or the engine's constructor differs here
        return re.compile(pattern)
    if not _is_pattern(compiled, pattern):
        return re.compile(pattern)
    _write(path, data)
    return compiled


def _program(pattern: str) -> tuple:
    """The arguments ``re.compile`` hands to ``_sre.compile`` (CPython 3.11+ internals)."""
    parsed = _parser.parse(pattern, 0)
    code = [int(c) for c in _compiler._code(parsed, 0)]
    groupindex = dict(parsed.state.groupdict)
    indexgroup = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    return (parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup))


def _is_pattern(compiled: object, pattern: str) -> bool:
    """A changed engine could hand back something else: only a real pattern of ours counts."""
    return isinstance(compiled, re.Pattern) and compiled.pattern == pattern


def _key(pattern: str) -> str:
    engine = f"{sys.implementation.cache_tag}|{sys.version}|{_sre.MAGIC}|{_sre.CODESIZE}"
    return hashlib.sha256(f"{engine}\n{pattern}".encode()).hexdigest()[:40]


def _write(path: Path, data: bytes) -> None:
    """Atomically (a temporary file, then a rename); a cache that cannot be written is skipped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
