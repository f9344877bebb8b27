"""Finalise a release: reconcile the counts, write manifest, rejections and card, then move the
staging folder into place as ``<output>/<name>/<version>/`` in one rename.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advbench import __version__
from advbench.concepts.vocabulary import CLASSES, CONCEPTS
from advbench.records import SPLITS, Outcome
from advbench.release import clean
from advbench.release.card import render_card

if TYPE_CHECKING:
    from advbench.config import BuildConfig
    from advbench.pipeline import BuildPlan, ShardResult


@dataclass
class ReleaseSummary:
    path: Path
    counts: dict[str, int]
    reasons: list[dict[str, Any]]
    splits: dict[str, int]
    class_counts: dict[str, int]
    concept_states: dict[str, dict[str, int]]
    seconds: float
    credentialed: bool = False
    notes: list[str] = field(default_factory=list)


def _reason_table(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    tally = Counter((o.status, o.stage, o.reason) for o in outcomes if o.status != "accepted")
    return [
        {"status": s, "stage": st, "reason": r, "count": n}
        for (s, st, r), n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _content_counts(data_dir: Path) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Studies per class and concept-state counts, read back from the shards with DuckDB."""
    import duckdb

    files = sorted(str(p) for p in data_dir.glob("*.parquet"))
    if not files:
        return {c: 0 for c in CLASSES}, {c: {} for c in CONCEPTS}
    con = duckdb.connect()
    source = "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "])"
    labels = ", ".join(f"count(*) FILTER (WHERE label_{c} = 'positive')" for c in CLASSES)
    (counts,) = con.sql(f"SELECT {labels} FROM {source}").fetchall()
    class_counts = dict(zip(CLASSES, counts, strict=True))
    states: dict[str, dict[str, int]] = {}
    for c in CONCEPTS:
        pairs = con.sql(f"SELECT concept_{c}, count(*) FROM {source} GROUP BY 1").fetchall()
        states[c] = {s: n for s, n in sorted(pairs)}
    con.close()
    return class_counts, states


def _compact_shards(staging: Path, results: list[ShardResult]) -> list[ShardResult]:
    """Drop shards left empty by rejections and renumber the rest ``-NNNNN-of-NNNNN``.

    Readers (``datasets`` among them) refuse zero-row Parquet files. Renaming keeps content
    and sha256.
    """
    from dataclasses import replace

    from advbench.release.shards import shard_name

    kept: list[ShardResult] = []
    groups: dict[tuple[str, str], list[ShardResult]] = {}
    for r in sorted(results, key=lambda r: r.spec_path):
        groups.setdefault((str(Path(r.spec_path).parent), r.split), []).append(r)
    for (folder, split), group in groups.items():
        for r in group:
            if r.rows == 0:
                (staging / r.spec_path).unlink()
        full = [r for r in group if r.rows > 0]
        for i, r in enumerate(full):
            new = f"{folder}/{shard_name(split, i, len(full))}"
            if new != r.spec_path:
                os.replace(staging / r.spec_path, staging / new)
            kept.append(replace(r, spec_path=new))
    return kept


def finalize_release(
    config: BuildConfig, plan: BuildPlan, results: list[ShardResult]
) -> ReleaseSummary:
    """Write manifest, rejections and card into the staging folder, then move it into place."""
    from advbench.pipeline import BuildError, make_source

    staging = plan.staging_dir
    outcomes = list(plan.selection) + [o for r in results for o in r.outcomes]
    counts = Counter(o.status for o in outcomes)
    totals = {
        "inputs": plan.inputs,
        "accepted": counts["accepted"],
        "rejected": counts["rejected"],
        "failed": counts["failed"],
    }
    if totals["accepted"] + totals["rejected"] + totals["failed"] != totals["inputs"]:
        raise BuildError(f"counts do not reconcile: {totals}")  # a bug, never bad input
    rows = sum(r.rows for r in results)
    if rows != totals["accepted"]:
        raise BuildError(f"shards hold {rows} rows but {totals['accepted']} inputs were accepted")

    reasons = _reason_table(outcomes)
    with open(staging / "rejections.jsonl", "w", encoding="utf-8") as f:
        for o in outcomes:
            if o.status != "accepted":
                f.write(json.dumps(o.to_dict()) + "\n")

    if totals["accepted"] == 0:
        top = "; ".join(f"{r['reason']}: {r['count']}" for r in reasons[:5]) or "no inputs"
        raise BuildError(
            f"nothing was accepted from {totals['inputs']} inputs ({top}); "
            f"every input and its reason is listed in {staging / 'rejections.jsonl'}"
        )

    results = _compact_shards(staging, results)
    splits = {s: 0 for s in SPLITS}
    split_bytes = {s: 0 for s in SPLITS}
    for r in results:
        splits[r.split] += r.rows
        split_bytes[r.split] += r.bytes
    present = [s for s in SPLITS if any(r.split == s for r in results)]
    splits = {s: splits[s] for s in present}
    split_bytes = {s: split_bytes[s] for s in present}

    sources = []
    for index, spec in enumerate(config.sources):
        lic = make_source(config, index).license_info()
        mine = Counter(o.status for o in outcomes if o.source_index == index)
        sources.append({
            "kind": spec.kind,
            "license": lic.name,
            "license_url": lic.url,
            "credentialed": lic.credentialed,
            "counts": {k: mine[k] for k in ("accepted", "rejected", "failed")},
        })
    credentialed = any(s["credentialed"] for s in sources)
    created = dt.datetime.fromtimestamp(plan.started, dt.UTC).isoformat(timespec="seconds")
    class_counts, concept_states = _content_counts(staging / "data" / clean.CONFIG_NAME)

    manifest = {
        "name": config.name,
        "version": config.version,
        "created": created,
        "package": {"name": "advbench", "version": __version__},
        "config": config.to_json(),
        "counts": totals,
        "reasons": reasons,
        "sources": sources,
        "configs": {clean.CONFIG_NAME: {"splits": splits}},
        "shards": [
            {"config": clean.CONFIG_NAME, "split": r.split, "path": r.spec_path, "rows": r.rows,
             "bytes": r.bytes, "sha256": r.sha256}
            for r in sorted(results, key=lambda r: r.spec_path)
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
        "credentialed_licenses": sorted({s["license"] for s in sources if s["credentialed"]}),
        "load_path": str(release),
        "first_split": present[0],
        "package_version": __version__,
        "created": created,
        "seed": config.seed,
        "counts": totals,
        "reasons": reasons,
        "sources": sources,
        "class_counts": class_counts,
    }
    configs = [{"name": clean.CONFIG_NAME, "splits": splits, "bytes": split_bytes,
                "features": clean.features()}]
    license_id = "other" if credentialed or len(sources) > 1 else "cc0-1.0"
    (staging / "README.md").write_text(render_card(context, configs, license_id), "utf-8")

    if release.exists():  # only reached with overwrite: plan_build refused otherwise
        shutil.rmtree(release)
    os.replace(staging, release)
    return ReleaseSummary(
        path=release,
        counts=totals,
        reasons=reasons,
        splits=splits,
        class_counts=class_counts,
        concept_states=concept_states,
        seconds=0.0,
        credentialed=credentialed,
    )
