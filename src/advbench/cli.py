"""The ``advbench`` command line. Heavy libraries are imported inside the commands that use
them, so ``advbench --help`` and ``advbench concepts`` start quickly.
"""

from __future__ import annotations

import sys
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
            t = Table(*table.columns, title=f"{name}: {table.title}")
            for row in table.rows:
                t.add_row(*(str(v) for v in row))
            out.print(t)
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
    """Make a phantom MIMIC-CXR-JPG folder and build the demo release from it."""
    from advbench.demo import demo_config, ensure_phantoms
    from advbench.paths import cache_dir

    console = _console()
    root = out if out is not None else cache_dir() / "demo"
    if out is None:
        console.print(f"writing under the cache folder {root} (use --out DIR to choose)")
    phantoms = ensure_phantoms(root / "phantoms", studies, console=console)
    cfg = demo_config(phantoms, root / "releases")
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
