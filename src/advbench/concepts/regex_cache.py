"""Large regular expressions, compiled once per Python version and kept on disk.

Python's ``re`` parses and compiles a pattern in pure Python: the lexicon's two patterns (about
220,000 characters each) take about two seconds, at every start of every process that extracts
concepts. The compiled program depends only on the pattern and the Python build, so it is kept
in advbench's cache folder and handed on the next start to the regex engine's own constructor
(``_sre.compile``, the call ``re.compile`` ends with). The file name is a hash of the pattern
and of the engine's version; anything unexpected (another Python, a damaged or unwritable
cache) falls back to ``re.compile``.
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
    _sre = None

from advbench.paths import cache_dir


def compile_cached(pattern: str, folder: Path | None = None) -> re.Pattern[str]:
    """``re.compile(pattern)``, from the compiled program cached in ``folder`` when it is
    there (default: ``<cache>/regex``), and written there when it is not."""
    if _sre is None:
        return re.compile(pattern)
    path = (folder or cache_dir() / "regex") / f"{_key(pattern)}.marshal"
    try:
        flags, code, groups, groupindex, indexgroup = marshal.loads(path.read_bytes())
        compiled = _sre.compile(pattern, flags, code, groups, groupindex, indexgroup)
        if compiled.pattern == pattern:
            return compiled
    except Exception:  # no cache yet, or one this Python cannot use: compile afresh
        pass
    parsed = _parser.parse(pattern, 0)
    code = [int(c) for c in _compiler._code(parsed, 0)]
    groupindex = dict(parsed.state.groupdict)
    indexgroup = [None] * parsed.state.groups
    for name, i in groupindex.items():
        indexgroup[i] = name
    args = (parsed.state.flags, code, parsed.state.groups - 1, groupindex, tuple(indexgroup))
    try:
        compiled = _sre.compile(pattern, *args)
    except Exception:  # the engine's constructor differs in this Python
        return re.compile(pattern)
    _write(path, marshal.dumps(args))
    return compiled


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
