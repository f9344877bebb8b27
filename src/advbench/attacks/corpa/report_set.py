"""Adversarial reports for a set of report texts, without images: ``advbench perturb-reports``.

Two passes over the input: the first banks the corpus' sentences (the material adversarial
reports are written from), the second plans each report's perturbations and writes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from advbench.attacks.corpa.planner import KINDS, Perturbation, Planner, Skip
from advbench.attacks.corpa.reports import ReportWriter
from advbench.attacks.corpa.sentences import SentenceBank
from advbench.concepts.extract import ConceptExtractor


@dataclass
class ReportSetSummary:
    """What a run planned, verified, failed and skipped."""

    reports: int = 0
    planned: Counter = field(default_factory=Counter)  # per kind
    verified: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # per (kind, reason)

    @property
    def verified_share(self) -> float:
        total = sum(self.planned.values())
        return sum(self.verified.values()) / total if total else 0.0


def perturb_report_set(
    read: Callable[[], Iterable[tuple[str, str]]], *, kinds: Iterable[str] = KINDS,
    per_study: int = 1, seed: int = 0, removal: str = "negative",
    summary: ReportSetSummary | None = None, on_skip: Callable[[Skip], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One record per planned perturbation of every ``(id, text)`` that ``read()`` yields
    (called twice: once for the sentence bank, once to write)."""
    summary = summary if summary is not None else ReportSetSummary()
    extractor = ConceptExtractor()
    bank = SentenceBank(extractor)
    for _, text in read():
        bank.add_report(text)
    planner = Planner(dict.fromkeys(kinds, per_study), seed=seed, removal=removal)
    writer = ReportWriter(extractor, bank)
    for report_id, text in read():
        summary.reports += 1
        planned, skipped = planner.plan(report_id, extractor.extract(text).concepts)
        for skip in skipped:
            summary.skipped[(skip.kind, skip.reason)] += 1
            if on_skip is not None:
                on_skip(skip)
        for p in planned:
            written = writer.write(text, p)
            summary.planned[p.kind] += 1
            (summary.verified if written.status == "verified" else summary.failed)[p.kind] += 1
            yield record(p, written.status, written.reason, written.report)


def record(p: Perturbation, status: str, reason: str | None, report: str | None
           ) -> dict[str, Any]:
    """The JSON line of one perturbation."""
    return {
        "id": p.id, "parent_id": p.parent_id, "kind": p.kind, "status": status,
        "reason": reason, "report": report, "source_concepts": p.source_concepts,
        "target_concepts": p.target_concepts, "target_labels": p.positive_labels,
    }
