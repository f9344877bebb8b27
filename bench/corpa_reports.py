"""Benchmark of CoRPA's adversarial reports: perturbations planned, written and verified per
second on the synthetic MIMIC-like corpus of ``bench/concepts.py``, and the share verified
(the issue's target: at least 95% of planned perturbations), per kind.

    .venv/bin/python bench/corpa_reports.py [--reports N] [--per-study N] [--seed S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from concepts import corpus  # noqa: E402

from advbench.attacks.corpa.planner import KINDS  # noqa: E402
from advbench.attacks.corpa.report_set import ReportSetSummary, perturb_report_set  # noqa: E402

TARGET_VERIFIED = 0.95


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", type=int, default=20_000)
    ap.add_argument("--per-study", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    texts = corpus(args.reports, args.seed)
    pairs = [(str(i), t) for i, t in enumerate(texts)]
    summary = ReportSetSummary()
    t0 = time.perf_counter()
    n = sum(1 for _ in perturb_report_set(lambda: iter(pairs), per_study=args.per_study,
                                          seed=args.seed, summary=summary))
    secs = time.perf_counter() - t0
    planned = sum(summary.planned.values())
    rows = [
        (f"reports ({args.reports:,}), perturbations planned", f"{planned:,}", "", ""),
        ("seconds, one process (bank, plan, write, re-extract)", f"{secs:.1f}", "", ""),
        ("perturbations/s", f"{n / secs:,.0f}", "", ""),
        ("verified, all kinds", f"{summary.verified_share:.1%}", f">= {TARGET_VERIFIED:.0%}",
         "PASS" if summary.verified_share >= TARGET_VERIFIED else "FAIL"),
    ]
    for kind in KINDS:
        if summary.planned[kind]:
            share = summary.verified[kind] / summary.planned[kind]
            rows.append((f"  verified, {kind} ({summary.planned[kind]:,})", f"{share:.1%}", "",
                         ""))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>10}  {'target':>8}  result")
    for name, value, target, verdict in rows:
        print(f"{name:<{w}}  {value:>10}  {target:>8}  {verdict}")
    return 0 if summary.verified_share >= TARGET_VERIFIED else 1


if __name__ == "__main__":
    raise SystemExit(main())
