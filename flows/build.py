"""The Prefect build flow: plan shards → one task per shard → finalise the release.

The stages are the plain functions of ``advbench.pipeline``; this module only adds
orchestration: a task per shard (retries, logging in the Prefect UI), at most ``workers`` of
them at once, each handing its shard to the build's worker pool (``advbench.workers``).

Plans, shard specs and results are passed ``quote``d: Prefect would otherwise walk every
study ref and outcome in them looking for futures (0.6 s per walk of a 5,000-study plan).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.utilities.annotations import quote

from advbench.config import BuildConfig
from advbench.pipeline import (
    BuildPlan,
    ShardResult,
    ShardSpec,
    make_runner,
    plan_build,
    process_shard,
    warm_worker,
)
from advbench.release.assemble import ReleaseSummary, finalize_release
from advbench.workers import pool, result_of, shared_pool


@task(name="plan-shards", cache_policy=NO_CACHE)
def plan_task(config: BuildConfig, overwrite: bool) -> BuildPlan:
    plan = plan_build(config, overwrite=overwrite)
    get_run_logger().info("%d inputs in %d shards", plan.inputs, len(plan.shards))
    return plan


@task(
    name="process-shard",
    task_run_name="shard {spec.split}-{spec.index}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=2,
)
def shard_task(
    config: BuildConfig, spec: ShardSpec, staging_dir: Path, pool_key: str | None
) -> ShardResult:
    return result_of(pool(pool_key).submit(process_shard, config, spec, staging_dir))


@task(name="finalise-release", cache_policy=NO_CACHE)
def finalize_task(
    config: BuildConfig, plan: BuildPlan, results: list[ShardResult]
) -> ReleaseSummary:
    return finalize_release(config, plan, results)


@flow(name="advbench-build", validate_parameters=False)
def build_flow(
    config: BuildConfig,
    overwrite: bool = False,
    on_shard: Callable[[ShardResult], None] | None = None,
) -> ReleaseSummary:
    """Build one release. ``on_shard`` is called as each shard finishes (progress display)."""
    runner = make_runner(config)
    results: list[ShardResult] = []
    running: list[PrefectFuture[ShardResult]] = []
    with shared_pool(runner) as key:
        for _ in range(runner.workers):  # workers start while the plan is made
            pool(key).submit(warm_worker)
        plan = plan_task(config, overwrite)
        waiting = list(reversed(plan.shards))
        while waiting or running:
            while waiting and len(running) < runner.workers:
                running.append(shard_task.submit(config, quote(waiting.pop()), plan.staging_dir,
                                                  key))
            done = next(as_completed(running))
            running.remove(done)
            results.append(done.result())
            if on_shard is not None:
                on_shard(results[-1])
    return finalize_task(config, quote(plan), quote(results))
