"""The build stages as plain functions: plan → process shards → finalise the release.

``flows/build.py`` wraps these in Prefect tasks; ``build_release`` runs them in-process, so the
library works without any Prefect server. Either way shards run on a pool of ``workers``
(``advbench.workers``), and every worker reuses its opened sources and models across shards.

A shard task loads its studies, extracts their concepts and streams ``clean`` rows into its
Parquet shard; then each attack of the build turns the accepted studies, a batch at a time,
into the rows of its derived config. Every input and every planned case ends as one outcome.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advbench.attacks.base import ATTACKS, Attack
from advbench.config import BuildConfig
from advbench.errors import BuildError
from advbench.records import SPLITS, InputRejected, Outcome, Sample, StudyRef
from advbench.release.assemble import ReleaseSummary, finalize_release
from advbench.release.clean import CONFIG_NAME as CLEAN
from advbench.release.clean import AcceptedStudy, CleanConfig
from advbench.release.configs import ReleaseConfig
from advbench.release.shards import RowFailure, ShardWriter, shard_name
from advbench.sources.base import SOURCES, Source
from advbench.workers import RUNNERS, WORKER_CACHE, Runner, WorkerCache, result_of


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work: the studies of one split that go into shard ``index`` of ``count``
    of every config of the build."""

    split: str
    index: int
    count: int
    refs: tuple[StudyRef, ...]

    def relpath(self, config: str) -> str:
        return f"data/{config}/{shard_name(self.split, self.index, self.count)}"


@dataclass
class BuildPlan:
    """Everything finalising needs, decided before any shard runs."""

    shards: list[ShardSpec]
    selection: list[Outcome]  # inputs turned away while selecting, before any shard
    staging_dir: Path
    configs: dict[str, ReleaseConfig]  # "clean", then one per attack of the build
    sources: list[dict[str, Any]]  # kind, license, image option of each source
    started: float = field(default_factory=time.time)

    @property
    def inputs(self) -> int:
        return sum(len(s.refs) for s in self.shards) + len(self.selection)


@dataclass(frozen=True)
class ShardFile:
    config: str
    split: str
    path: str  # relative to the release folder
    rows: int
    sha256: str
    bytes: int


@dataclass
class ShardResult:
    split: str
    index: int
    files: list[ShardFile]
    outcomes: list[Outcome]
    planned: dict[str, int]  # cases planned per derived config
    seconds: float

    def rows(self, config: str = CLEAN) -> int:
        return sum(f.rows for f in self.files if f.config == config)


def make_source(config: BuildConfig, index: int) -> Source:
    spec = config.sources[index]
    return SOURCES.get(spec.kind)(spec, index=index, base_dir=config.base_dir, seed=config.seed)


def make_attack(config: BuildConfig, index: int) -> Attack:
    spec = config.attacks[index]
    return ATTACKS.get(spec.kind)(spec, seed=config.seed)


def release_configs(config: BuildConfig) -> dict[str, ReleaseConfig]:
    """The build's release configs by name: ``clean`` first, then one per attack entry."""
    out: dict[str, ReleaseConfig] = {CLEAN: CleanConfig()}
    for spec in config.attacks:
        out[spec.config_name()] = ATTACKS.get(spec.kind).release_config(spec.config_name())
    return out


def make_runner(config: BuildConfig) -> Runner:
    """The build's pool, ``workers`` wide."""
    return RUNNERS.get(config.runner)(config.worker_count())


def warm_worker() -> None:
    """Import the stages and load the concept lexicon (about a second per process), so that
    workers start while the main process plans instead of after."""
    from advbench.concepts.extract import extract

    extract("")


def plan_build(config: BuildConfig, *, overwrite: bool = False) -> BuildPlan:
    """Plan every source, cut the inputs into shards per split, prepare a staging folder."""
    release = config.release_dir()
    if release.exists() and not overwrite:
        raise BuildError(
            f"release {release} already exists; choose a new version or pass --overwrite"
        )
    refs: list[StudyRef] = []
    selection: list[Outcome] = []
    sources: list[dict[str, Any]] = []
    for index, spec in enumerate(config.sources):
        source = make_source(config, index)
        plan = source.plan()
        refs.extend(plan.refs)
        selection.extend(plan.rejected)
        lic = source.license_info()
        sources.append({"kind": spec.kind, "license": lic.name, "license_url": lic.url,
                        "credentialed": lic.credentialed, "image": spec.image.model_dump()})
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
            shards.append(ShardSpec(split, i, count, chunk))

    staging = release.with_name(f".{release.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return BuildPlan(shards=shards, selection=selection, staging_dir=staging,
                     configs=release_configs(config), sources=sources)


def _fingerprint(config: BuildConfig) -> str:
    """What a worker's cached sources and attacks depend on."""
    text = f"{config.base_dir.resolve()}\n{config.model_dump_json()}"
    return hashlib.sha1(text.encode()).hexdigest()


def _batches(refs: tuple[StudyRef, ...], size: int) -> Iterator[tuple[StudyRef, ...]]:
    for i in range(0, len(refs), size):
        yield refs[i : i + size]


def process_shard(
    config: BuildConfig, spec: ShardSpec, staging_dir: Path, cache: WorkerCache = WORKER_CACHE
) -> ShardResult:
    """Load, extract and write one shard of every config; every input ends as one outcome."""
    from advbench.concepts.extract import extract

    t0 = time.perf_counter()
    key = _fingerprint(config)
    configs = cache.get(("configs", key), lambda: release_configs(config))
    attacks = [cache.get(("attack", key, i), lambda i=i: make_attack(config, i))
               for i in range(len(config.attacks))]
    writers = {name: ShardWriter(staging_dir / spec.relpath(name), rc.arrow_schema())
               for name, rc in configs.items()}
    outcomes: list[Outcome] = []
    planned: Counter[str] = Counter()
    try:
        for batch in _batches(spec.refs, config.row_group_size):
            accepted: list[AcceptedStudy] = []
            for ref in batch:
                stage = "load"
                try:
                    source = cache.get(("source", key, ref.source_index),
                                       lambda r=ref: make_source(config, r.source_index))
                    study = source.load(ref)
                    stage = "concepts"
                    record = AcceptedStudy(study, extract(study.report), ref.source_index)
                    stage = "write"
                    writers[CLEAN].add(configs[CLEAN].row(record))
                except InputRejected as exc:
                    outcomes.append(Outcome(ref.id, "rejected", stage, exc.reason, exc.message,
                                            ref.source_index))
                except Exception as exc:  # an unexpected error fails this input, not the shard
                    outcomes.append(Outcome(ref.id, "failed", stage, type(exc).__name__,
                                            f"{ref.id}: {exc}", ref.source_index))
                else:
                    outcomes.append(Outcome(ref.id, "accepted", stage,
                                            source_index=ref.source_index))
                    accepted.append(record)
            # one row group per batch; a row that does not fit fails its input, and its study
            # is not handed to the attacks
            unfit = _fail_unfit(writers[CLEAN].flush(), outcomes)
            accepted = [a for a in accepted if a.study.id not in unfit]
            for attack in attacks:
                name = attack.config_name
                found = _run_attack(attack, accepted, configs[name], writers[name], cache)
                _fail_unfit(writers[name].flush(), found)
                planned[name] += len(found)
                outcomes.extend(found)
        files = []
        for name, writer in writers.items():
            written = writer.close()
            if written is not None:
                files.append(ShardFile(name, spec.split, spec.relpath(name), written.rows,
                                       written.sha256, written.bytes))
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return ShardResult(spec.split, spec.index, files, outcomes, dict(planned),
                       time.perf_counter() - t0)


def _fail_unfit(failures: list[RowFailure], outcomes: list[Outcome]) -> set[str]:
    """Turn the accepted outcomes of rows that did not fit their schema into failures."""
    unfit = {f.id: f.message for f in failures}
    if unfit:
        for i, o in enumerate(outcomes):
            if o.status == "accepted" and o.id in unfit:
                outcomes[i] = Outcome(o.id, "failed", "write", "row_does_not_fit_schema",
                                      unfit[o.id], o.source_index, o.config)
    return set(unfit)


def _run_attack(
    attack: Attack,
    studies: list[AcceptedStudy],
    release: ReleaseConfig,
    writer: ShardWriter,
    cache: WorkerCache,
) -> list[Outcome]:
    """Plan and run one attack on a batch of accepted studies: one outcome per planned case.

    An error while planning fails one case per study; an error while running fails the cases
    not yet made; a sample that does not fit the config's rows fails that case alone.
    """
    name = attack.config_name
    if not studies:
        return []
    try:
        cases = attack.plan(studies)
    except Exception as exc:
        return [Outcome(f"{s.study.id}.{name}", "failed", "plan", type(exc).__name__,
                        f"{s.study.id}: {exc}", s.source_index, name) for s in studies]
    pending = {c.id: c for c in cases}
    if len(pending) != len(cases):
        raise BuildError(f"attack {attack.kind!r} planned duplicate case ids")  # a bug
    outcomes: list[Outcome] = []
    try:
        for item in attack.run(cases, cache):
            case = pending.pop(item.id, None)
            if case is None:
                raise BuildError(f"attack {attack.kind!r} returned {item.id!r}, which it did "
                                 "not plan or returned twice")  # a bug in the attack
            if isinstance(item, Sample):
                try:
                    writer.add(release.row(item))
                except ValueError as exc:  # pixels or fields the config cannot hold
                    outcomes.append(Outcome(case.id, "failed", "write", type(exc).__name__,
                                            f"{case.id}: {exc}", case.study.source_index, name))
                else:
                    outcomes.append(Outcome(case.id, "accepted", "run",
                                            source_index=case.study.source_index, config=name))
            elif item.status == "accepted" or item.config != name:
                raise BuildError(f"attack {attack.kind!r} returned a bad outcome {item}")
            else:
                outcomes.append(item)
    except BuildError:
        raise
    except Exception as exc:
        for case in pending.values():
            outcomes.append(Outcome(case.id, "failed", "run", type(exc).__name__,
                                    f"{case.id}: {exc}", case.study.source_index, name))
        pending.clear()
    for case in pending.values():
        outcomes.append(Outcome(case.id, "failed", "run", "no_result",
                                f"{case.id}: the attack returned nothing for this case",
                                case.study.source_index, name))
    return outcomes


def build_release(
    config: BuildConfig,
    *,
    overwrite: bool = False,
    on_shard: Callable[[ShardResult], None] | None = None,
) -> ReleaseSummary:
    """Run the whole build in this process (no Prefect) on a pool of ``workers``."""
    t0 = time.perf_counter()
    results = []
    runner = make_runner(config)
    with runner.executor() as pool:
        for _ in range(runner.workers):
            pool.submit(warm_worker)
        plan = plan_build(config, overwrite=overwrite)
        futures = [pool.submit(process_shard, config, spec, plan.staging_dir)
                   for spec in plan.shards]
        try:
            for future in as_completed(futures):
                results.append(result_of(future))
                if on_shard:
                    on_shard(results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    summary = finalize_release(config, plan, results)
    summary.seconds = time.perf_counter() - t0
    return summary
