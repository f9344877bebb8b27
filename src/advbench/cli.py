"""The ``advbench`` command line. Heavy libraries are imported inside the commands that use
them, so ``advbench --help`` and ``advbench concepts`` start quickly.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="advbench",
    help="Build versioned adversarial medical-imaging benchmark datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    from rich.markup import escape

    _console().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="Build config (YAML).")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing release version.")] = False,
    prefect: Annotated[
        bool, typer.Option(help="Run through the Prefect flow (off: plain in-process run).")
    ] = True,
) -> None:
    """Build a release from a config: ingest, concepts, Parquet shards, card, manifest."""
    from advbench.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc), code=2)
    summary = _run_build(cfg, overwrite=overwrite, prefect=prefect)
    _print_summary(summary)


def _run_build(cfg, *, overwrite: bool, prefect: bool):
    """Build with a progress bar; turn expected failures into a clear message and exit 1."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from advbench.errors import BuildError
    from advbench.sources.base import SourceError

    console = _console()
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        bar = progress.add_task(f"building {cfg.name} {cfg.version} (shards)", total=None)

        def on_shard(result) -> None:
            progress.advance(bar)

        try:
            if prefect:
                from advbench.orchestration import run_build

                summary = run_build(cfg, overwrite=overwrite, on_shard=on_shard)
            else:
                from advbench.pipeline import build_release

                summary = build_release(cfg, overwrite=overwrite, on_shard=on_shard)
        except (BuildError, SourceError) as exc:
            progress.stop()
            _fail(str(exc))
    return summary


def _cell(value: object) -> str:
    """A summary table cell: rates and means to 3 decimals, the rest as written."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    out.print(f"[bold green]release[/] {summary.path}  ({summary.seconds:.1f} s)")
    for name, config in summary.configs.items():
        c = config.counts
        total = "planned" if config.derived else "inputs"
        split_rows = ", ".join(f"{s} {n}" for s, n in config.splits.items()) or "no rows"
        out.print(
            f"[bold]{name}[/]: {total} {c[total]}: accepted {c['accepted']}, "
            f"rejected {c['rejected']}, failed {c['failed']}  ({split_rows})"
        )
        if config.reasons:
            t = Table("status", "stage", "reason", "count", title=f"{name}: not accepted")
            for r in config.reasons:
                t.add_row(r["status"], r["stage"], str(r["reason"]), str(r["count"]))
            out.print(t)
        for table in config.tables:
            t = Table(title=f"{name}: {table.title}")
            cells = [[_cell(v) for v in row] for row in table.rows]
            for i, column in enumerate(table.columns):
                # headers may wrap; cells (a victim's name, a rate) are never cut short
                widest = max([len(r[i]) for r in cells] or [1])
                t.add_column(column, min_width=max(widest, min(len(column), 8)))
            for row in cells:
                t.add_row(*row)
            out.print(t, width=max(out.width, sum(c.min_width + 3 for c in t.columns) + 1),
                      crop=False)
    if summary.credentialed:
        out.print("[yellow]credentialed source data: share this release only in a private or "
                  "gated place[/]")


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option(help="Folder for the demo release (default: the cache).")
    ] = None,
    studies: Annotated[int, typer.Option(min=1, help="Phantom studies to make.")] = 200,
    prefect: Annotated[bool, typer.Option(help="Run through the Prefect flow.")] = True,
) -> None:
    """Make phantom chest X-rays (MIMIC-CXR-JPG layout) and the other modalities' demo data,
    train the demo models at first use, and build the demo release from them."""
    from advbench.demo import demo_config, ensure_modalities, ensure_phantoms, train_demo_models
    from advbench.paths import cache_dir

    console = _console()
    root = out if out is not None else cache_dir() / "demo"
    if out is None:
        console.print(f"writing under the cache folder {root} (use --out DIR to choose)")
    phantoms = ensure_phantoms(root / "phantoms", studies, console=console)
    modalities = ensure_modalities(root / "modalities", console=console)
    cfg = demo_config(phantoms, root / "releases", modalities=modalities)
    for line in train_demo_models(cfg, console):
        console.print(line, highlight=False)
    summary = _run_build(cfg, overwrite=True, prefect=prefect)
    _print_summary(summary)
    print(f"load it: datasets.load_dataset({str(summary.path)!r}, 'clean', split='train')")


@app.command()
def phantoms(
    out: Annotated[Path, typer.Option(help="Folder to write (MIMIC-CXR-JPG layout).")],
    studies: Annotated[int, typer.Option(min=1, help="Number of studies.")] = 200,
    seed: Annotated[int, typer.Option(min=0)] = 0,
    size: Annotated[int, typer.Option(min=64, max=4096, help="Image side in pixels.")] = 512,
    reports: Annotated[str, typer.Option(help="Reports as 'txt' files or one 'zip'.")] = "zip",
    lateral: Annotated[bool, typer.Option(help="Also write a lateral image per study.")] = True,
    gzip_csv: Annotated[bool, typer.Option(help="Write .csv.gz (off: plain .csv).")] = True,
) -> None:
    """Write synthetic chest X-ray phantoms in the exact MIMIC-CXR-JPG layout."""
    from advbench.demo import write_phantoms

    if reports not in ("txt", "zip"):
        _fail(f"--reports must be 'txt' or 'zip', not {reports!r}", code=2)
    summary = write_phantoms(out, studies, seed=seed, size=size, reports=reports,
                             lateral=lateral, compress_csv=gzip_csv, console=_console())
    print(f"wrote {summary.studies} studies ({summary.images} images) to {summary.root}")


@app.command()
def concepts(
    input: Annotated[
        Path, typer.Argument(help="JSONL of {id, text}, a .txt report, or a reports folder/zip.")
    ],
    out: Annotated[Path | None, typer.Option(help="Output JSONL (default: stdout).")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes to extract on (default: the cores).")
    ] = None,
) -> None:
    """Extract the 17 clinical concepts from reports: one JSON line per report, in order."""
    from advbench.concepts.inputs import ReportInputError, iter_report_inputs
    from advbench.concepts.parallel import extract_in_order
    from advbench.errors import BuildError
    from advbench.workers import default_workers

    sink = open(out, "w", encoding="utf-8") if out else sys.stdout
    n = 0
    try:
        for line in extract_in_order(iter_report_inputs(input), workers or default_workers()):
            sink.write(line + "\n")
            n += 1
    except ReportInputError as exc:
        _fail(str(exc), code=2)
    except BuildError as exc:  # a worker process died
        _fail(str(exc))
    finally:
        if out:
            sink.close()
    if out:
        _console().print(f"{n} reports → {out}")


@app.command("perturb-reports")
def perturb_reports(
    input: Annotated[
        Path, typer.Argument(help="JSONL of {id, text}, a .txt report, or a reports folder/zip.")
    ],
    out: Annotated[Path | None, typer.Option(help="Output JSONL (default: stdout).")] = None,
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kinds", help="Perturbation kinds (repeat or comma-separate; default: all "
                     "five)."),
    ] = None,
    per_study: Annotated[int, typer.Option(min=1, help="Perturbations per kind and report.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the perturbation draws.")] = 0,
    removal: Annotated[
        str, typer.Option(help="State of a removed concept: negative or absent.")
    ] = "negative",
    skipped: Annotated[
        Path | None, typer.Option(help="Also write the kinds that could not apply, as JSONL.")
    ] = None,
) -> None:
    """CoRPA adversarial reports: one JSON line per planned perturbation, each re-extracted
    and marked verified only when all 17 concept states equal its target."""
    import json

    from advbench.attacks.corpa.planner import KINDS, REMOVAL_STATES
    from advbench.attacks.corpa.report_set import ReportSetSummary, perturb_report_set
    from advbench.concepts.inputs import ReportInputError, iter_report_inputs

    chosen = [k.strip() for item in (kinds or list(KINDS)) for k in item.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(KINDS))
    if unknown:
        _fail(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", code=2)
    if removal not in REMOVAL_STATES:
        _fail(f"--removal must be one of {', '.join(REMOVAL_STATES)}, not {removal!r}", code=2)
    summary = ReportSetSummary()
    sink = open(out, "w", encoding="utf-8") if out else sys.stdout
    skip_sink = open(skipped, "w", encoding="utf-8") if skipped else None

    def on_skip(skip) -> None:
        if skip_sink is not None:
            skip_sink.write(json.dumps({"parent_id": skip.parent_id, "kind": skip.kind,
                                        "reason": skip.reason}) + "\n")

    try:
        for rec in perturb_report_set(lambda: iter_report_inputs(input), kinds=chosen,
                                      per_study=per_study, seed=seed, removal=removal,
                                      summary=summary, on_skip=on_skip):
            sink.write(json.dumps(rec) + "\n")
    except ReportInputError as exc:
        _fail(str(exc), code=2)
    finally:
        if out:
            sink.close()
        if skip_sink is not None:
            skip_sink.close()
    planned = sum(summary.planned.values())
    lines = [f"{summary.reports} reports, {planned} perturbations planned: "
             f"{sum(summary.verified.values())} verified ({summary.verified_share:.1%}), "
             f"{sum(summary.failed.values())} failed"]
    for kind in chosen:
        lines.append(f"  {kind}: {summary.verified[kind]}/{summary.planned[kind]} verified")
    by_kind = Counter()
    for (kind, _), n in summary.skipped.items():
        by_kind[kind] += n
    if by_kind:
        lines.append("  not applicable: " + ", ".join(f"{k} {n}" for k, n in by_kind.items()))
    _console().print("\n".join(lines), highlight=False)


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Folder for the JSON Schema files.")] = Path("schemas"),
) -> None:
    """Write the JSON Schemas (build config, concepts output) into a folder."""
    from advbench.schemas import write_schemas

    for path in write_schemas(out):
        print(path)


if __name__ == "__main__":
    app()
