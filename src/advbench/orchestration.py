"""Run the Prefect build flow, with a temporary local server unless the user set one up.

Prefect's home (its SQLite database) goes under advbench's cache unless the user chose one.
Prefect reads its settings when it is imported, so the environment is prepared first and the
flow is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from advbench.paths import prefect_home

if TYPE_CHECKING:
    from advbench.config import BuildConfig
    from advbench.pipeline import ShardResult
    from advbench.release.assemble import ReleaseSummary

# The first start on an empty home migrates SQLite (seconds); this only bounds a server that
# hangs: one that fails exits, and is reported, at once.
DEFAULT_SERVER_TIMEOUT = 120.0


def prepare_prefect_environment(*, quiet: bool = True) -> None:
    """Defaults for a local run; anything the user set wins."""
    os.environ.setdefault("PREFECT_HOME", str(prefect_home()))
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # No network here or on many clusters: no telemetry, no update checks.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def server_timeout() -> float:
    """Prefect's own setting for its ephemeral server's start-up, when the user set it."""
    value = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    try:
        return float(value) if value else DEFAULT_SERVER_TIMEOUT
    except ValueError:
        return DEFAULT_SERVER_TIMEOUT


def run_build(
    config: BuildConfig,
    *,
    overwrite: bool = False,
    on_shard: Callable[[ShardResult], None] | None = None,
    quiet: bool = True,
) -> ReleaseSummary:
    """Build a release through the Prefect flow (one task per shard).

    A server the user set (``PREFECT_API_URL``, in the environment or a Prefect profile) is
    used as it is; otherwise advbench runs a temporary one that ends with the build.
    """
    import time

    from advbench.prefect_server import PrefectServerError, ensure_home, temporary_server

    prepare_prefect_environment(quiet=quiet)
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    # Before Prefect is imported: it tries to create its home then, and only warns if it cannot.
    try:
        ensure_home(home)
    except PrefectServerError:
        if not os.environ.get("PREFECT_API_URL"):  # the user's server needs no local database
            raise
    from prefect.settings import get_current_settings

    from flows.build import build_flow

    t0 = time.perf_counter()
    user_server = os.environ.get("PREFECT_API_URL") or get_current_settings().api.url
    with nullcontext() if user_server else temporary_server(home, timeout=server_timeout()):
        summary = build_flow(config, overwrite=overwrite, on_shard=on_shard)
    summary.seconds = time.perf_counter() - t0
    return summary
