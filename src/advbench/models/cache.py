"""Models trained by the project at first use and cached by the hash of their spec.

The demo classifiers (``demo.py``) and the demo CLIPs (``demo_clip.py``) share this: a model
lives in a folder named for its spec's hash and counts as trained once its ``metrics.json``
exists; processes that ask at once wait on a lock file for the one that trains.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def spec_hash(spec: Any) -> str:
    """12 hex digits of the sha256 of ``spec`` as sorted JSON: a change anywhere retrains."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held for the block, across processes."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_once(folder: Path, train: Callable[[], Any], *, what: str,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The held-out metrics of the model in ``folder``, calling ``train`` first when it has
    none; ``train`` writes the folder (its ``metrics.json`` last, or the folder at once)."""
    done = folder / "metrics.json"
    if not done.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(folder.parent / f"{folder.name}.lock"):
            if not done.is_file():
                for stale in folder.parent.glob(f"{folder.name}.*.tmp"):
                    shutil.rmtree(stale, ignore_errors=True)  # a killed run's leftovers
                if log:
                    log(f"training {what} (first use; cached in {folder})")
                train()
    return json.loads(done.read_text("utf-8"))
