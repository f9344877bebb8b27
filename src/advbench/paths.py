"""Where advbench keeps its cache (demo data, Prefect home, trained demo models)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$ADVBENCH_CACHE``, else ``$XDG_CACHE_HOME/advbench``, else ``~/.cache/advbench``."""
    if env := os.environ.get("ADVBENCH_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "advbench"


def prefect_home() -> Path:
    """Prefect's home when the user has not set one: its SQLite database lives here."""
    return cache_dir() / "prefect"
