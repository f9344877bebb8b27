"""Finalise a release: reconcile the counts of every config, write manifest, rejections and
card, then move the staging folder into place as ``<output>/<name>/<version>/`` in one rename.

Everything needed comes from the plan and the shard results (no source is opened here).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advbench import __version__
from advbench.errors import BuildError
from advbench.records import SPLITS, Outcome
from advbench.release.card import render_card
from advbench.release.clean import CONFIG_NAME as CLEAN
from advbench.release.configs import ReleaseConfig, SummaryTable
from advbench.release.shards import shard_name

if TYPE_CHECKING:
    from advbench.config import BuildConfig
    from advbench.pipeline import BuildPlan, ShardFile, ShardResult


@dataclass
class ConfigSummary:
    """One config of a release: counts that reconcile, splits, and its summary tables."""

    name: str
    derived: bool
    counts: dict[str, int]  # clean: inputs; derived: planned; + accepted, rejected, failed
    reasons: list[dict[str, Any]]
    splits: dict[str, int]
    tables: list[SummaryTable] = field(default_factory=list)


@dataclass
class ReleaseSummary:
    path: Path
    configs: dict[str, ConfigSummary]
    seconds: float
    credentialed: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """The ``clean`` counts: every input accepted, rejected or failed."""
        return self.configs[CLEAN].counts

    @property
    def reasons(self) -> list[dict[str, Any]]:
        return self.configs[CLEAN].reasons

    @property
    def splits(self) -> dict[str, int]:
        return self.configs[CLEAN].splits


def _reason_table(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    tally = Counter((o.status, o.stage, o.reason) for o in outcomes if o.status != "accepted")
    return [
        {"status": s, "stage": st, "reason": r, "count": n}
        for (s, st, r), n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _tables(release: ReleaseConfig, files: list[Path]) -> list[SummaryTable]:
    """The config's summary tables, read back from its shards with DuckDB."""
    if not files:
        return []
    import duckdb

    con = duckdb.connect()
    try:
        rows = "read_parquet([" + ", ".join(
            "'" + str(f).replace("'", "''") + "'" for f in files) + "])"
        return release.summary(con, rows)
    finally:
        con.close()


def _compact(staging: Path, files: list[ShardFile]) -> list[ShardFile]:
    """Renumber each config's shards of a split ``-NNNNN-of-NNNNN`` over the files written.

    Shards left without rows wrote no file (readers refuse zero-row Parquet files). Renaming
    keeps content and sha256.
    """
    kept: list[ShardFile] = []
    groups: dict[tuple[str, str], list[ShardFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        groups.setdefault((f.config, f.split), []).append(f)
    for (config, split), group in groups.items():
        for i, f in enumerate(group):
            new = f"data/{config}/{shard_name(split, i, len(group))}"
            if new != f.path:
                os.replace(staging / f.path, staging / new)
            kept.append(replace(f, path=new))
    return kept


def _reconcile(name: str, derived: bool, outcomes: list[Outcome], expected: int,
               rows: int) -> dict[str, int]:
    """Counts of one config; they must add up (a mismatch is a bug, never bad input)."""
    counts = Counter(o.status for o in outcomes)
    totals = {"planned" if derived else "inputs": expected,
              "accepted": counts["accepted"], "rejected": counts["rejected"],
              "failed": counts["failed"]}
    if counts["accepted"] + counts["rejected"] + counts["failed"] != expected:
        raise BuildError(f"counts of config {name!r} do not reconcile: {totals}")
    if rows != counts["accepted"]:
        raise BuildError(f"config {name!r}: shards hold {rows} rows but "
                         f"{counts['accepted']} were accepted")
    return totals


def finalize_release(
    config: BuildConfig, plan: BuildPlan, results: list[ShardResult]
) -> ReleaseSummary:
    """Write manifest, rejections and card into the staging folder, then move it into place."""
    staging = plan.staging_dir
    releases = plan.configs
    outcomes = list(plan.selection) + [o for r in results for o in r.outcomes]
    by_config: dict[str, list[Outcome]] = {name: [] for name in plan.configs}
    for o in outcomes:
        by_config[o.config].append(o)
    files = [f for r in results for f in r.files]

    with open(staging / "rejections.jsonl", "w", encoding="utf-8") as out:
        for o in outcomes:
            if o.status != "accepted":
                out.write(json.dumps(o.to_dict()) + "\n")

    summaries: dict[str, ConfigSummary] = {}
    for name in plan.configs:
        derived = releases[name].derived
        expected = (sum(r.planned.get(name, 0) for r in results) if derived else plan.inputs)
        rows = sum(f.rows for f in files if f.config == name)
        counts = _reconcile(name, derived, by_config[name], expected, rows)
        summaries[name] = ConfigSummary(name, derived, counts, _reason_table(by_config[name]),
                                        {})
    clean = summaries[CLEAN]
    if clean.counts["accepted"] == 0:
        top = "; ".join(f"{r['reason']}: {r['count']}" for r in clean.reasons[:5]) or "no inputs"
        raise BuildError(
            f"nothing was accepted from {clean.counts['inputs']} inputs ({top}); "
            f"every input and its reason is listed in {staging / 'rejections.jsonl'}"
        )

    files = _compact(staging, files)
    card_configs = []
    for name, summary in summaries.items():
        mine = [f for f in files if f.config == name]
        present = [s for s in SPLITS if any(f.split == s for f in mine)]
        summary.splits = {s: sum(f.rows for f in mine if f.split == s) for s in present}
        summary.tables = _tables(releases[name], [staging / f.path for f in mine])
        card_configs.append({
            "name": name,
            "derived": summary.derived,
            "description": releases[name].description,
            "template": releases[name].card_template(),
            "counts": summary.counts,
            "reasons": summary.reasons,
            "splits": summary.splits,
            "bytes": {s: sum(f.bytes for f in mine if f.split == s) for s in present},
            "features": releases[name].features(),
            "tables": summary.tables,
        })

    credentialed = any(s["credentialed"] for s in plan.sources)
    created = dt.datetime.fromtimestamp(plan.started, dt.UTC).isoformat(timespec="seconds")
    manifest = {
        "name": config.name,
        "version": config.version,
        "created": created,
        "package": {"name": "advbench", "version": __version__},
        "config": config.to_json(),
        "counts": clean.counts,
        "reasons": clean.reasons,
        "sources": [
            {**s, "counts": {k: sum(1 for o in by_config[CLEAN] if o.source_index == i
                                    and o.status == k)
                             for k in ("accepted", "rejected", "failed")}}
            for i, s in enumerate(plan.sources)
        ],
        "configs": {
            name: {"derived": s.derived, "counts": s.counts, "reasons": s.reasons,
                   "splits": s.splits, "tables": [t.to_dict() for t in s.tables]}
            for name, s in summaries.items()
        },
        "shards": [
            {"config": f.config, "split": f.split, "path": f.path, "rows": f.rows,
             "bytes": f.bytes, "sha256": f.sha256}
            for f in sorted(files, key=lambda f: f.path)
        ],
        "credentialed": credentialed,
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")

    release = config.release_dir()
    context = {
        "name": config.name,
        "version": config.version,
        "description": config.description,
        "credentialed": credentialed,
        "credentialed_licenses": sorted({s["license"] for s in manifest["sources"]
                                         if s["credentialed"]}),
        "load_path": str(release),
        "package_version": __version__,
        "created": created,
        "seed": config.seed,
        "sources": manifest["sources"],
    }
    license_id = "other" if credentialed or len(plan.sources) > 1 else "cc0-1.0"
    (staging / "README.md").write_text(render_card(context, card_configs, license_id), "utf-8")

    if release.exists():  # only reached with overwrite: plan_build refused otherwise
        shutil.rmtree(release)
    os.replace(staging, release)
    return ReleaseSummary(path=release, configs=summaries, seconds=0.0,
                          credentialed=credentialed)
