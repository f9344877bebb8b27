"""Accuracy of the concept extractor on the hand-labelled report sets.

``dev.jsonl`` was labelled while building the extractor; ``gold.jsonl`` was labelled
independently from the guide; ``heldout.jsonl``, ``heldout2.jsonl`` (ICU reports with lines and
tubes, comparisons, hedges), ``heldout3.jsonl`` (oncology follow-up, heart failure,
pneumothorax follow-up), ``heldout4.jsonl`` (the most frequent MIMIC-CXR wording),
``heldout5_short.jsonl`` (600 short findings, as many phrasings of each concept as possible),
``heldout6.jsonl`` (cue scope in long sentences; reports without headers, WET READs, mixed
case), ``heldout7_short.jsonl`` (500 short reports on the rarer concepts and states) and
``heldout8.jsonl`` (terse, abbreviated and very long reports) were written and labelled from the
guide alone, by someone who never saw the extractor or its lexicon.

Text written elsewhere (issue 8), each set by its own blind writer from the guide alone (the
writers' notes on ambiguous cases are in ``data/concepts/README.md``):
``sentences_a.jsonl`` (400 short items: other hospitals' chest x-ray sentences, impressions,
negation and hedge test sentences, imaging sentences quoted in discharge notes, all-caps and
telegraphic reports) and ``ct_reports_a.jsonl`` (150 chest CT reports: organ-header templates,
prose translated from other languages, CT pulmonary angiograms, oncology staging, screening and
HRCT) were tuned on; ``sentences_b.jsonl`` (300 items) and ``ct_reports_b.jsonl`` (120 CT
reports from other hospitals) were first scored as held-out sets, then tuned on;
``sentences_c.jsonl`` (250 items, a third writer), ``ct_reports_c.jsonl`` (80 CT reports,
a third writer) ``sentences_d.jsonl`` (200 single sentences and dictation, a fourth writer) and
``ct_reports_d.jsonl`` (80 CT reports from European and Asian hospitals, teleradiology and a
normalised research corpus, a fourth writer) likewise. ``ct_reports_e.jsonl`` (80 CT reports in
the layouts of public CT report collections, a fifth writer) was scored held out after all
other changes and has not been tuned on.

The metric: 63-91% of the (report, concept) cells are ``absent``, so a per-cell accuracy is
mostly a count of concepts nobody mentioned (answering ``absent`` everywhere scores 0.63-0.91).
The gate is therefore the accuracy over the cells that matter: those that are not ``absent`` in
the label or in the extractor's answer. A missed mention and a spurious one both count.

``frozen.jsonl`` (300 reports, labelled blind, with a ``style`` field) is the frozen set: no
lexicon change is ever tuned on it. Its bytes are pinned by sha256, and its floor is a
regression floor measured when it was first run, not a target to tune towards. Every data file
must be present: a missing set fails, it does not skip.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from advbench.concepts.extract import ConceptExtractor
from advbench.concepts.vocabulary import CONCEPTS, STATES

DATA = Path(__file__).parent / "data" / "concepts"
FROZEN = "frozen.jsonl"

# sha256 of frozen.jsonl as the blind labeller delivered it. Pinned once; never updated to
# follow an edit of the file (an edited file is no longer the frozen set).
FROZEN_SHA256 = "71ad7944277b3081f6d05f802b28ddca14c53fe995a6bfeb001346b90d629ea0"

# REGRESSION floor, measured on the frozen set at first sight and never raised by tuning on it.
# First sight (2026-12-02, 300 reports by a blind labeller, 1,436 cells that matter): 0.9714;
# per style: mimic 0.988, ct 0.982, structured 0.945, discharge 0.970, telegraphic 0.971.
FROZEN_FLOOR = 0.96

# Floors on the accuracy over the cells that matter (not absent in label or answer).
# Measured with ConceptExtractor when the gate was introduced (right / cells):
#   dev 890/890 = 1.0000           gold 1116/1116 = 1.0000      heldout 1079/1079 = 1.0000
#   heldout2 1073/1074 = 0.9991    heldout3 1218/1218 = 1.0000  heldout4 1391/1391 = 1.0000
#   heldout5_short 905/906 = 0.9989  heldout6 1436/1436 = 1.0000
#   heldout7_short 1242/1242 = 1.0000  heldout8 1165/1172 = 0.9940
# Each floor leaves a small margin (a handful of cells) under the measured figure.
FLOORS = {
    "dev.jsonl": 0.995,
    "gold.jsonl": 0.995,
    "heldout.jsonl": 0.995,
    "heldout2.jsonl": 0.995,
    "heldout3.jsonl": 0.995,
    "heldout4.jsonl": 0.995,
    "heldout5_short.jsonl": 0.995,
    "heldout6.jsonl": 0.995,
    "heldout7_short.jsonl": 0.995,
    "heldout8.jsonl": 0.99,
    # first sight (lexicon before issue 8) -> held out (changes tuned on the "a" sets only)
    # -> after tuning on it too:
    #   sentences_a 0.861 -> (tuned) -> 1.000     ct_reports_a 0.824 -> (tuned) -> 0.997
    #   sentences_b 0.907 -> 0.971 -> 0.991       ct_reports_b 0.857 -> 0.963 -> 0.994
    #   sentences_c 0.862 -> 0.958 -> 0.992     sentences_d 0.868 -> 0.963 -> 0.979
    "sentences_a.jsonl": 0.99,
    "sentences_d.jsonl": 0.97,
    "sentences_b.jsonl": 0.98,
    "sentences_c.jsonl": 0.985,
    "ct_reports_a.jsonl": 0.99,
    #   ct_reports_c 0.694 -> 0.792 -> 0.992 (its held-out misses were mostly one section bug:
    #   a dropped "Comparison:" line swallowing the organ-header lines after it)
    "ct_reports_b.jsonl": 0.985,
    "ct_reports_c.jsonl": 0.985,
    #   ct_reports_d 0.722 -> 0.849 -> 0.968 (held-out misses: headers of other layouts, such as
    #   "Findings." alone on a line or "Imaging findings:", and translated organ normals)
    "ct_reports_d.jsonl": 0.955,
    #   ct_reports_e 0.806 -> 0.969, held out and never tuned on (the last round's check)
    "ct_reports_e.jsonl": 0.955,
    FROZEN: FROZEN_FLOOR,
}
LABELLED = [name for name in FLOORS if name != FROZEN]


def _load(name: str) -> list[dict]:
    path = DATA / name
    if not path.exists():
        pytest.fail(f"{path} is missing: every labelled set must be present")
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
    if not rows:
        pytest.fail(f"{path} is empty")
    return rows


@cache
def _extractor() -> ConceptExtractor:
    return ConceptExtractor()


def _extract(text: str) -> dict[str, str]:
    return _extractor().extract(text).concepts


@dataclass
class Score:
    """Cell counts overall and over the cells that matter, per concept."""

    cells: int = 0
    right: int = 0
    matter: Counter = field(default_factory=Counter)
    matter_right: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def all_cells(self) -> float:
        return self.right / self.cells

    @property
    def accuracy(self) -> float:
        """Accuracy over the cells not ``absent`` in the label or the answer (0 when none)."""
        total = sum(self.matter.values())
        return sum(self.matter_right.values()) / total if total else 0.0

    def per_concept(self) -> str:
        return ", ".join(f"{c} {self.matter_right[c]}/{self.matter[c]}"
                         for c in CONCEPTS if self.matter[c])


def _score(rows: list[dict], answer: Callable[[str], dict[str, str]] = _extract) -> Score:
    score = Score()
    for row in rows:
        got = answer(row["text"])
        for concept in CONCEPTS:
            want, said = row["concepts"][concept], got[concept]
            score.cells += 1
            score.right += said == want
            if want == "absent" and said == "absent":
                continue
            score.matter[concept] += 1
            if said == want:
                score.matter_right[concept] += 1
            else:
                score.errors.append(f"{row['id']} {concept}: want {want}, got {said}")
    return score


@pytest.mark.parametrize("name", list(FLOORS))
def test_labelled_set_has_unique_ids_and_every_concept_in_a_known_state(name):
    rows = _load(name)
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        assert row["text"].strip(), row["id"]
        assert list(row["concepts"]) == list(CONCEPTS), row["id"]
        assert set(row["concepts"].values()) <= set(STATES), row["id"]


def test_dev_set_is_well_formed():
    rows = _load("dev.jsonl")
    assert len(rows) >= 150
    assert len({r["id"] for r in rows}) == len(rows)
    seen = Counter()
    for row in rows:
        assert list(row["concepts"]) == list(CONCEPTS)
        assert set(row["concepts"].values()) <= set(STATES)
        seen.update(row["concepts"].items())
    # every concept appears in every state somewhere (a normal statement is never hedged)
    missing = [(c, s) for c in CONCEPTS for s in STATES
               if not seen[(c, s)] and (c, s) != ("unremarkable", "uncertain")]
    assert not missing, missing


@pytest.mark.parametrize("name", list(FLOORS))
def test_accuracy_on_cells_that_are_not_absent(name):
    score = _score(_load(name))
    floor = FLOORS[name]
    assert score.accuracy >= floor, (
        f"{name}: accuracy {score.accuracy:.4f} < {floor} over "
        f"{sum(score.matter.values())} cells not absent in label or answer "
        f"(all cells {score.all_cells:.4f}); right/cells per concept: {score.per_concept()}; "
        + "; ".join(score.errors[:20])
    )


@pytest.mark.parametrize("name", LABELLED)
def test_always_absent_scores_high_per_cell_but_zero_on_the_gate(name):
    score = _score(_load(name), lambda text: dict.fromkeys(CONCEPTS, "absent"))
    assert score.all_cells >= 0.6  # what the old per-cell gate would have seen
    assert score.accuracy == 0.0 < FLOORS[name]


def test_spurious_mentions_count_against_the_gate():
    """One invented state per report, on a concept the label leaves absent, fails the gate
    although it barely moves the per-cell accuracy."""
    rows = _load("dev.jsonl")
    labels = {row["text"]: row["concepts"] for row in rows}

    def one_spurious(text: str) -> dict[str, str]:
        got = dict(labels[text])
        concept = next(c for c in CONCEPTS if got[c] == "absent")
        got[concept] = "positive"
        return got

    assert _score(rows, lambda text: labels[text]).accuracy == 1.0
    score = _score(rows, one_spurious)
    assert score.all_cells >= 0.9
    assert score.accuracy < min(FLOORS[name] for name in LABELLED)


def test_frozen_set_is_unchanged():
    path = DATA / FROZEN
    if not path.exists():
        pytest.fail(f"{path} is missing: the frozen set must be present")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if FROZEN_SHA256 == "PENDING":
        pytest.fail(f"FROZEN_SHA256 is still 'PENDING': pin the sha256 of {FROZEN} as the "
                    f"labeller delivered it (the file now hashes to {digest})")
    assert digest == FROZEN_SHA256, (
        f"{FROZEN} changed (sha256 {digest}, pinned {FROZEN_SHA256}): the frozen set is never "
        "edited; put new or corrected reports in another set"
    )
