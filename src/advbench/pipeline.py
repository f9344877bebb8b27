"""The build stages as plain functions: plan → process shards → finalise the release.

``flows/build.py`` wraps these in Prefect tasks; ``build_release`` runs them in-process, so the
library works without any Prefect server.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from advbench.config import BuildConfig
from advbench.records import SPLITS, InputRejected, Outcome, StudyRef
from advbench.release import clean
from advbench.release.shards import shard_name, write_shard
from advbench.sources.base import SOURCES, Source


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: the studies of one split that go into one Parquet shard."""

    config_name: str
    split: str
    index: int
    count: int
    refs: tuple[StudyRef, ...]

    @property
    def relpath(self) -> str:
        return f"data/{self.config_name}/{shard_name(self.split, self.index, self.count)}"


@dataclass
class BuildPlan:
    shards: list[ShardSpec]
    selection: list[Outcome]  # inputs turned away while selecting, before any shard
    staging_dir: Path
    started: float = field(default_factory=time.time)

    @property
    def inputs(self) -> int:
        return sum(len(s.refs) for s in self.shards) + len(self.selection)


@dataclass
class ShardResult:
    spec_path: str
    split: str
    rows: int
    sha256: str
    bytes: int
    outcomes: list[Outcome]
    seconds: float


class BuildError(Exception):
    """A build that cannot go on (unusable source, existing release, nothing accepted)."""


def make_source(config: BuildConfig, index: int) -> Source:
    spec = config.sources[index]
    return SOURCES.get(spec.kind)(spec, index=index, base_dir=config.base_dir, seed=config.seed)


def plan_build(config: BuildConfig, *, overwrite: bool = False) -> BuildPlan:
    """Plan every source, cut the inputs into shards per split, prepare a staging folder."""
    release = config.release_dir()
    if release.exists() and not overwrite:
        raise BuildError(
            f"release {release} already exists; choose a new version or pass --overwrite"
        )
    refs: list[StudyRef] = []
    selection: list[Outcome] = []
    for index in range(len(config.sources)):
        plan = make_source(config, index).plan()
        refs.extend(plan.refs)
        selection.extend(plan.rejected)
    seen: set[str] = set()
    unique: list[StudyRef] = []
    for ref in refs:
        if ref.id in seen:
            selection.append(Outcome(ref.id, "rejected", "select", "duplicate_id",
                                     f"id {ref.id} already taken by another input",
                                     ref.source_index))
        else:
            seen.add(ref.id)
            unique.append(ref)

    shards: list[ShardSpec] = []
    for split in SPLITS:
        mine = [r for r in unique if r.split == split]
        count = -(-len(mine) // config.shard_size)
        for i in range(count):
            chunk = tuple(mine[i * config.shard_size : (i + 1) * config.shard_size])
            shards.append(ShardSpec(clean.CONFIG_NAME, split, i, count, chunk))

    staging = release.with_name(f".{release.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return BuildPlan(shards=shards, selection=selection, staging_dir=staging)


def process_shard(config: BuildConfig, spec: ShardSpec, staging_dir: Path) -> ShardResult:
    """Load, extract concepts and write one shard; every input ends as one outcome."""
    from advbench.concepts.extract import extract

    t0 = time.perf_counter()
    sources: dict[int, Source] = {}
    rows, outcomes = [], []
    for ref in spec.refs:
        try:
            source = sources.get(ref.source_index)
            if source is None:
                source = sources[ref.source_index] = make_source(config, ref.source_index)
            study = source.load(ref)
            rows.append(clean.row(study, extract(study.report)))
            outcomes.append(Outcome(ref.id, "accepted", "load", source_index=ref.source_index))
        except InputRejected as exc:
            outcomes.append(Outcome(ref.id, "rejected", "load", exc.reason, exc.message,
                                    ref.source_index))
        except Exception as exc:  # an unexpected error fails this input, not the build
            outcomes.append(Outcome(ref.id, "failed", "load", type(exc).__name__,
                                    f"{ref.id}: {exc}", ref.source_index))
    path = staging_dir / spec.relpath
    digest = write_shard(clean.table(rows), path, row_group_size=config.row_group_size)
    return ShardResult(spec.relpath, spec.split, len(rows), digest, path.stat().st_size,
                       outcomes, time.perf_counter() - t0)


def build_release(
    config: BuildConfig,
    *,
    overwrite: bool = False,
    on_shard: Callable[[ShardResult], None] | None = None,
):
    """Run the whole build in this process (no Prefect); return the release summary."""
    from advbench.release.assemble import finalize_release

    plan = plan_build(config, overwrite=overwrite)
    results = []
    for spec in plan.shards:
        results.append(process_shard(config, spec, plan.staging_dir))
        if on_shard:
            on_shard(results[-1])
    return finalize_release(config, plan, results)
