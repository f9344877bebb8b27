"""Run the Prefect build flow with no server set up by the user.

With no ``PREFECT_API_URL``, Prefect starts a temporary local server; its SQLite home goes under
advbench's cache unless the user chose one. The settings must be in the environment before
Prefect is imported, so this module imports the flow lazily.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from advbench.paths import prefect_home

if TYPE_CHECKING:
    from advbench.config import BuildConfig
    from advbench.pipeline import ShardResult
    from advbench.release.assemble import ReleaseSummary


def prepare_prefect_environment(*, quiet: bool = True) -> None:
    """Defaults for a local run; anything the user set wins."""
    os.environ.setdefault("PREFECT_HOME", str(prefect_home()))
    # The first start of the temporary server migrates SQLite: slow on small machines.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # No network here or on many clusters: no telemetry, no update checks.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_build(
    config: BuildConfig,
    *,
    overwrite: bool = False,
    on_shard: Callable[[ShardResult], None] | None = None,
    quiet: bool = True,
) -> ReleaseSummary:
    """Build a release through the Prefect flow (one task per shard)."""
    import time

    prepare_prefect_environment(quiet=quiet)
    from flows.build import build_flow

    t0 = time.perf_counter()
    summary = build_flow(config, overwrite=overwrite, on_shard=on_shard)
    summary.seconds = time.perf_counter() - t0
    return summary
