"""Benchmark of a whole build at scale: studies/s and peak memory, in-process and through Prefect.

Writes a folder in the exact MIMIC-CXR-JPG layout (gzipped CSVs, one small PA JPEG per study
under ``files/pNN/p<subject>/s<study>/``, ``mimic-cxr-reports.zip``) of N studies whose reports
zip also holds 220,000 other studies' reports, as the real zip does (227,835 reports; the
CheXpert CSV lists every one of those studies too, like the real one, unless
``--chexpert selected``). Then builds it with the real pipeline, each build in a fresh child
process so that its peak memory is its own:

- in-process: ``advbench.pipeline.build_release`` on ``workers: 2`` (runner ``processes``);
- through Prefect: ``advbench.orchestration.run_build``, with its temporary local server
  (PREFECT_HOME and ADVBENCH_CACHE under the work folder; an unmeasured warm-up first compiles
  the lexicon into that cache and starts the server once, so the first-ever SQLite migration is
  not counted),

at two shard sizes and two sizes of N, and checks the targets on the largest N.

    .venv/bin/python bench/build_scale.py [--studies 1000 5000] [--shard-sizes 50 2000]
        [--extra-reports 220000] [--chexpert all|selected] [--image-size 128]
        [--modes in-process prefect] [--workdir DIR] [--repeat R] [--profile] [--quick]

``--workdir`` keeps the generated folders (reused while their parameters match) and Prefect's
home between runs; without it everything goes to a temporary folder removed at the end.
``--quick`` is a smoke run (N = 200 and 400, 5,000 extra reports, Prefect at the smallest shard
size only): under a minute on two cores. ``--profile`` adds a cProfile of one in-process build.
"""

from __future__ import annotations

# Only the standard library at the top: the build's spawned workers import this module again
# (as ``__mp_main__``), so anything heavy here would be paid, and held, by every worker.
import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# bench's own modules (bench/ is not a package; sys.path[0] already when run as a script),
# advbench, and the ``flows`` package of the Prefect build.
for _p in (HERE, REPO / "src", REPO):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from mimic_layout import ensure_dataset  # noqa: E402  (after sys.path; standard library only)
from proc_memory import MB, ProcSampler, hwm_kib  # noqa: E402

EXTRA_REPORTS = 220_000  # other studies' reports in the zip: the real one holds 227,835 in all
TARGET_INPROCESS = 500.0  # studies/s, in-process, 2 workers
TARGET_SHARD_RATIO = 1.2  # in-process wall, smallest shard size / largest
TARGET_PREFECT = 250.0  # studies/s through Prefect, temporary server included
TARGET_PEAK_MB = 1500.0  # peak RSS of the main process and of each worker
TARGET_FLAT = 1.25  # peak at the largest N / peak at the smallest N
WORKERS = 2


# --- one build, in a fresh child process ------------------------------------------------------


def _timed(modules: list[Any], name: str, times: dict[str, Any]) -> None:
    """Wrap ``name`` in each of ``modules`` that has it (its own, and those that imported it by
    name), so that its seconds (and a plan's shard count) are recorded."""
    for module in modules:
        inner = getattr(module, name, None)
        if inner is None:
            continue

        def wrapper(*args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = _inner(*args, **kwargs)
            times[name] = time.perf_counter() - t0
            if hasattr(out, "shards"):
                times["shards"] = len(out.shards)
            return out

        setattr(module, name, wrapper)


def build_config(spec: dict[str, Any]) -> Any:
    from advbench.config import parse_config

    data = {"name": "bench-scale", "version": "1.0.0", "seed": 0, "output": spec["output"],
            "shard_size": spec["shard_size"], "row_group_size": 100,
            "workers": spec.get("workers", WORKERS), "runner": "processes", "attacks": [],
            "sources": [{"kind": "mimic-cxr-jpg", "root": spec["root"], "views": ["PA"]}]}
    return parse_config(data, where="bench/build_scale.py", base_dir=Path(spec["output"]))


def one_build(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one build as ``spec`` says; its figures. Runs in a child of the benchmark."""
    sampler = ProcSampler()
    sampler.start()
    t0 = time.perf_counter()
    import advbench.pipeline as pipeline
    import advbench.release.assemble as assemble

    config = build_config(spec)
    times: dict[str, Any] = {}
    # Wrapped before flows.build imports them by name.
    _timed([pipeline], "plan_build", times)
    _timed([assemble, pipeline], "finalize_release", times)
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    if spec["mode"] == "prefect":
        from advbench.orchestration import run_build

        summary = run_build(config, overwrite=True)
    else:
        summary = pipeline.build_release(config, overwrite=True)
    wall = time.perf_counter() - t0
    sampler.stop()
    main_hwm = hwm_kib()
    return {
        "wall": wall, "import": imported, "plan": times.get("plan_build"),
        "finalize": times.get("finalize_release"), "shards": times.get("shards"),
        "counts": dict(summary.counts),
        "main_mb": None if main_hwm is None else main_hwm * 1024 / MB,
        "worker_mb": sampler.peak_mb("worker"), "workers_seen": sampler.count("worker"),
        "server_mb": sampler.peak_mb("server"),
        "ru_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
        "ru_children_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MB,
    }


def warm_up(spec: dict[str, Any]) -> dict[str, Any]:
    """What a first run pays once: the lexicon compiled into advbench's cache and, for Prefect,
    the first start of the server on an empty home (SQLite created and migrated)."""
    t0 = time.perf_counter()
    from advbench.concepts.extract import ConceptExtractor

    ConceptExtractor()
    out = {"lexicon": time.perf_counter() - t0}
    if spec["prefect"]:
        out["server"] = server_startup({"times": 1})["starts"][0]
    return out


def server_startup(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds until the temporary Prefect server's API answers, and to stop it, each time."""
    from advbench.orchestration import prepare_prefect_environment, server_timeout

    prepare_prefect_environment()
    home = Path(os.environ["PREFECT_HOME"])
    starts, stops = [], []
    try:
        from advbench.prefect_server import temporary_server

        what = "advbench.prefect_server.temporary_server (until GET /api/health is 200)"
        for _ in range(spec["times"]):
            t0 = time.perf_counter()
            server = temporary_server(home, timeout=server_timeout())
            server.__enter__()
            t1 = time.perf_counter()
            server.__exit__(None, None, None)
            starts.append(t1 - t0)
            stops.append(time.perf_counter() - t1)
    except ImportError:  # before advbench had its own server: Prefect's ephemeral one
        from prefect.server.api.server import SubprocessASGIServer

        what = "prefect SubprocessASGIServer.start (Prefect's ephemeral server)"
        for _ in range(spec["times"]):
            t0 = time.perf_counter()
            server = SubprocessASGIServer()
            server.start(timeout=server_timeout())
            t1 = time.perf_counter()
            server.stop()
            starts.append(t1 - t0)
            stops.append(time.perf_counter() - t1)
            SubprocessASGIServer._instances = {}  # a fresh one each time, not the running one
    return {"what": what, "starts": starts, "stops": stops}


def child_main(spec: dict[str, Any]) -> int:
    mode = spec["mode"]
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(one_build, spec)
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(spec["profile"])
        stats.sort_stats("tottime").print_stats(spec["profile"])
    elif mode == "data":
        result = {}
        for n, root in spec["roots"].items():
            secs, reused = ensure_dataset(Path(root), int(n), spec["extra"], spec["seed"],
                                          spec["chexpert_all"], spec["image_size"])
            result[n] = None if reused else secs
    elif mode == "warm-up":
        result = warm_up(spec)
    elif mode == "server":
        result = server_startup(spec)
    else:
        result = one_build(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# --- the benchmark --------------------------------------------------------------------------


class ChildFailed(Exception):
    pass


def run_child(spec: dict[str, Any], env: dict[str, str], workdir: Path, *,
              timeout: float = 3600, show: bool = False) -> dict[str, Any]:
    """Run one step in a fresh process of this script; its JSON result."""
    fd, result = tempfile.mkstemp(prefix="result-", suffix=".json", dir=workdir)
    os.close(fd)
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--one",
             json.dumps({**spec, "result": result})],
            env=env, cwd=REPO, timeout=timeout, text=True,
            stdout=None if show else subprocess.PIPE, stderr=subprocess.PIPE,
        )
        text = Path(result).read_text()
        if proc.returncode != 0 or not text:
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-25:])
            raise ChildFailed(f"{spec['mode']} step failed (exit {proc.returncode}):\n{tail}")
        return json.loads(text)
    finally:
        Path(result).unlink(missing_ok=True)


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def machine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    return (f"machine: {usable} usable cores of {os.cpu_count()} ({model or platform.machine()}),"
            f" {platform.system()} {platform.release()}; Python {platform.python_version()}, "
            f"pyarrow {ver('pyarrow')}, pandas {ver('pandas')}, prefect {ver('prefect')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, nargs="+", default=None,
                    help="sizes of N (default 1000 5000; --quick: 200 400)")
    ap.add_argument("--shard-sizes", type=int, nargs="+", default=[50, 2000])
    ap.add_argument("--extra-reports", type=int, default=None,
                    help=f"other studies' reports in the zip (default {EXTRA_REPORTS:,}; "
                         "--quick: 5,000)")
    ap.add_argument("--chexpert", choices=["all", "selected"], default="all",
                    help="CheXpert CSV rows: every study of the reports zip, as in the real data "
                         "(default), or only the N studies with images")
    ap.add_argument("--image-size", type=int, default=128,
                    help="side of the square grayscale JPEGs (real MIMIC-CXR-JPG: ~2,500 x "
                         "3,000; every image is decoded fully while loading)")
    ap.add_argument("--modes", nargs="+", choices=["in-process", "prefect"],
                    default=["in-process", "prefect"])
    ap.add_argument("--workdir", type=Path, default=None,
                    help="kept and reused between runs (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=1, help="builds per row; the median is shown")
    ap.add_argument("--server-starts", type=int, default=None,
                    help="times the server start is timed (default 3; --quick: 1)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one in-process build (smallest shard size, largest N, "
                         "1 worker so that the work runs in the profiled process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: N = 200 400, 5,000 extra reports, one server start, "
                         "Prefect at the smallest shard size only")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a child: one step from a JSON spec
    args = ap.parse_args(argv)
    if args.one:
        return child_main(json.loads(args.one))

    args.studies = sorted(set(args.studies or ([200, 400] if args.quick else [1000, 5000])))
    if args.extra_reports is None:
        args.extra_reports = 5_000 if args.quick else EXTRA_REPORTS
    if args.server_starts is None:
        args.server_starts = 1 if args.quick else 3
    args.shard_sizes = sorted(set(args.shard_sizes))
    temporary = args.workdir is None
    workdir = (Path(tempfile.mkdtemp(prefix="advbench-bench-scale-")) if temporary
               else args.workdir.resolve())
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(workdir / "prefect-home"),
           "ADVBENCH_CACHE": str(workdir / "advbench-cache"), "PYTHONUNBUFFERED": "1"}
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH"):
        env.pop(name, None)  # always the temporary server, never a developer's own
    try:
        return _bench(args, workdir, env)
    except ChildFailed as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> int:
    ns, sizes, extra = args.studies, args.shard_sizes, args.extra_reports
    print(machine())
    print(f"work folder: {workdir}{' (temporary)' if args.workdir is None else ''}")
    roots = {n: workdir / (f"mimic-n{n}-extra{extra}-chexpert{args.chexpert}"
                           f"-img{args.image_size}-seed{args.seed}") for n in ns}
    made = run_child({"mode": "data", "roots": {str(n): str(r) for n, r in roots.items()},
                      "extra": extra, "seed": args.seed, "chexpert_all": args.chexpert == "all",
                      "image_size": args.image_size},
                     env, workdir)
    for n, root in roots.items():
        zip_mb = (root / "mimic-cxr-reports.zip").stat().st_size / MB
        chexpert = n + extra if args.chexpert == "all" else n
        secs = made[str(n)]
        print(f"data: {n:,} studies (one {args.image_size}x{args.image_size} grayscale PA "
              f"JPEG each); reports zip of {n + extra:,} "
              f"reports ({zip_mb:.0f} MB); CheXpert CSV of {chexpert:,} studies: "
              f"{'reused' if secs is None else f'written in {secs:.1f} s'}", flush=True)
    out_root = workdir / "releases"

    def spec(mode: str, n: int, size: int, **more: Any) -> dict[str, Any]:
        out = out_root / f"{mode}-n{n}-s{size}"
        if out.exists():
            shutil.rmtree(out)
        return {"mode": mode, "root": str(roots[n]), "n": n, "shard_size": size,
                "output": str(out), **more}

    warm = run_child({"mode": "warm-up", "prefect": "prefect" in args.modes}, env, workdir)
    print(f"warm-up, not counted: lexicon regex into advbench's cache {warm['lexicon']:.1f} s"
          + (f"; first server start on the fresh Prefect home (SQLite created and migrated, "
             f"or found migrated) {warm['server']:.1f} s" if "server" in warm else ""),
          flush=True)
    server = None
    if "prefect" in args.modes:
        if args.quick:
            print(f"--quick: through Prefect at shard size {sizes[0]} only")
        server = run_child({"mode": "server", "times": args.server_starts}, env, workdir)
        print(f"server start-up, {args.server_starts}x: "
              f"{', '.join(f'{s:.2f}' for s in server['starts'])} s", flush=True)

    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    for n in ns:
        for mode in args.modes:
            for size in sizes[:1] if args.quick and mode == "prefect" else sizes:
                runs = []
                for _ in range(max(1, args.repeat)):
                    runs.append(run_child(spec(mode, n, size), env, workdir))
                    shutil.rmtree(out_root / f"{mode}-n{n}-s{size}", ignore_errors=True)
                runs.sort(key=lambda r: r["wall"])
                row = dict(runs[len(runs) // 2])
                row["walls"] = [r["wall"] for r in runs]
                for key in ("main_mb", "worker_mb", "server_mb", "ru_self_mb", "ru_children_mb"):
                    values = [r[key] for r in runs if r[key] is not None]
                    row[key] = max(values) if values else None
                accepted = row["counts"].get("accepted")
                if accepted != n:
                    print(f"WARNING: {mode} N={n} shard {size}: {accepted} of {n} accepted: "
                          f"{row['counts']}")
                results[mode, n, size] = row
                print(f"  {mode:<10} N={n:>6,} shard {size:>5,}: {row['wall']:6.1f} s "
                      f"({n / row['wall']:,.0f} studies/s)", flush=True)

    print_table(results, server, args)
    print_targets(results, args)
    if "in-process" in args.modes and not args.quick:
        print_worker_speedup(results, spec, env, workdir, ns[-1], sizes[0])
    if args.profile:
        print(f"\nprofile: in-process, N={ns[-1]:,}, shard size {sizes[0]}, 1 worker "
              "(the work in this process), top 30 by cumulative then own time", flush=True)
        run_child(spec("in-process", ns[-1], sizes[0], workers=1, profile=30), env, workdir,
                  show=True)
    return 0


def print_worker_speedup(results: dict[tuple[str, int, int], dict[str, Any]], spec: Any,
                         env: dict[str, str], workdir: Path, n: int, size: int) -> None:
    """Processes, not threads, for CPU-bound Python: what the second worker buys."""
    one = run_child(spec("in-process", n, size, workers=1), env, workdir)
    two = results["in-process", n, size]

    def shards(r: dict[str, Any]) -> float:  # the pool's part: wall less plan and finalise
        return r["wall"] - r["plan"] - r["finalize"]

    print(f"\nin-process, N={n:,}, shard size {size:,}, 1 worker vs {WORKERS}: whole build "
          f"{one['wall']:.1f} s vs {two['wall']:.1f} s ({one['wall'] / two['wall']:.2f}x); "
          f"shard phase (less plan and finalise, which run in the main process) "
          f"{shards(one):.1f} s vs {shards(two):.1f} s ({shards(one) / shards(two):.2f}x)")


def _table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
    for x in [head, *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(x, widths, strict=True))))


def print_table(results: dict[tuple[str, int, int], dict[str, Any]],
                server: dict[str, Any] | None, args: argparse.Namespace) -> None:
    repeat = f", median of {args.repeat}" if args.repeat > 1 else ""
    print(f"\nbuilds (each in a fresh process, {WORKERS} workers, runner processes{repeat}; "
          "wall = the build call; peak RSS in MB = 10^6 bytes)")
    head = ["mode", "N", "shard", "shards", "wall s", "studies/s", "plan s", "final s",
            "RSS main", "RSS worker", "RSS server", "ru_children"]
    if args.repeat > 1:
        head.insert(5, "min-max s")
    rows = [[mode, f"{n:,}", f"{size:,}", str(r["shards"]), f"{r['wall']:.1f}",
             *([f"{min(r['walls']):.1f}-{max(r['walls']):.1f}"] if args.repeat > 1 else []),
             f"{n / r['wall']:,.0f}", _fmt(r["plan"], ".2f"), _fmt(r["finalize"], ".2f"),
             _fmt(r["main_mb"]), _fmt(r["worker_mb"]), _fmt(r["server_mb"]),
             _fmt(r["ru_children_mb"])]
            for (mode, n, size), r in results.items()]
    _table(head, rows)
    print("plan s / final s: plan_build and finalize_release, inside the wall time. RSS main: "
          "VmHWM of the build's process (= its getrusage RUSAGE_SELF here); RSS worker: the "
          "largest pool worker's VmHWM, sampled from /proc every 0.1 s; RSS server: the "
          "temporary Prefect server's. ru_children is getrusage(RUSAGE_CHILDREN) after the "
          "build, NOT used: a fork+exec'd child's ru_maxrss starts at its parent's RSS at the "
          "fork (the main process's, here), and through Prefect it also covers the server.")
    if not server:
        return
    start, stop = statistics.median(server["starts"]), statistics.median(server["stops"])
    print(f"\nPrefect server start-up (until its API answers): median {start:.2f} s of "
          f"{len(server['starts'])}, stop {stop:.2f} s; timed: {server['what']}")
    sizes = args.shard_sizes
    for n in args.studies:
        pre = {s: results.get(("prefect", n, s)) for s in sizes}
        inp = {s: results.get(("in-process", n, s)) for s in sizes}
        lo, hi = sizes[0], sizes[-1]
        if not (pre[lo] and inp[lo]):
            continue
        over = pre[lo]["wall"] - start - stop - inp[lo]["wall"]
        print(f"per-task overhead of the flow, N={n:,}, shard size {lo}: "
              f"{over / pre[lo]['shards'] * 1000:.0f} ms a shard task = (prefect wall "
              f"{pre[lo]['wall']:.1f} - server start {start:.1f} - stop {stop:.1f} - in-process "
              f"wall {inp[lo]['wall']:.1f}) / {pre[lo]['shards']} shards")
        if lo != hi and pre[hi] and inp[hi] and pre[lo]["shards"] != pre[hi]["shards"]:
            fixed = pre[hi]["wall"] - start - stop - inp[hi]["wall"]
            marginal = (over - fixed) / (pre[lo]["shards"] - pre[hi]["shards"])
            print(f"  of which fixed (the same at shard size {hi:,}, {pre[hi]['shards']} "
                  f"shards: importing Prefect, starting the flow) {fixed:.1f} s; marginal "
                  f"{marginal * 1000:.0f} ms a task = difference of the two overheads / "
                  f"difference in shards")


def print_targets(results: dict[tuple[str, int, int], dict[str, Any]],
                  args: argparse.Namespace) -> None:
    ns, sizes = args.studies, args.shard_sizes
    big, small = ns[-1], ns[0]
    rows: list[list[str]] = []

    def check(name: str, value: str, target: str, ok: bool) -> None:
        rows.append([name, value, target, "PASS" if ok else "FAIL"])

    for size in sizes:
        if r := results.get(("in-process", big, size)):
            rate = big / r["wall"]
            check(f"in-process, {WORKERS} workers, studies/s (shard size {size:,})",
                  f"{rate:,.0f}", f">= {TARGET_INPROCESS:,.0f}", rate >= TARGET_INPROCESS)
    lo, hi = results.get(("in-process", big, sizes[0])), results.get(
        ("in-process", big, sizes[-1]))
    if lo and hi and sizes[0] != sizes[-1]:
        ratio = lo["wall"] / hi["wall"]
        check(f"in-process wall, shard size {sizes[0]:,} / shard size {sizes[-1]:,}",
              f"{ratio:.2f}x", f"<= {TARGET_SHARD_RATIO:.1f}x", ratio <= TARGET_SHARD_RATIO)
    for size in sizes:
        if r := results.get(("prefect", big, size)):
            rate = big / r["wall"]
            check(f"Prefect incl. temporary server, studies/s (shard size {size:,})",
                  f"{rate:,.0f}", f">= {TARGET_PREFECT:,.0f}", rate >= TARGET_PREFECT)
    for who in ("main", "worker"):
        values = [(r[f"{who}_mb"], m, s) for (m, n, s), r in results.items()
                  if n == big and r[f"{who}_mb"] is not None]
        if values:
            top = max(values)
            check(f"peak RSS {who}, the largest of all builds ({top[1]}, shard {top[2]:,})",
                  f"{top[0]:,.0f} MB", f"< {TARGET_PEAK_MB:,.0f} MB", top[0] < TARGET_PEAK_MB)
    if big != small:
        for (mode, n, size), r in results.items():
            base = results.get((mode, small, size))
            if n != big or base is None:
                continue
            for who in ("main", "worker"):
                a, b = r[f"{who}_mb"], base[f"{who}_mb"]
                if a is not None and b:
                    check(f"flat in N: peak {who}, {mode}, shard {size:,}: "
                          f"N={big:,} / N={small:,}", f"{a / b:.2f}x", f"<= {TARGET_FLAT:.2f}x",
                          a <= TARGET_FLAT * b)
    print(f"\ntargets, on N = {big:,}")
    _table(["measure", "value", "target", "result"], rows)


if __name__ == "__main__":
    raise SystemExit(main())
