"""CoRPA perturbation planning and adversarial reports: each kind keeps its promise, every
accepted report re-extracts to its target, and ``advbench perturb-reports`` reads the same
inputs as ``advbench concepts``."""

from __future__ import annotations

import json
import zipfile
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advbench.attacks.corpa.planner import KINDS, Perturbation, Planner, present_classes
from advbench.attacks.corpa.report_set import perturb_report_set
from advbench.attacks.corpa.reports import ReportWriter
from advbench.attacks.corpa.sentences import SentenceBank
from advbench.cli import app
from advbench.concepts.extract import ConceptExtractor, derive_labels
from advbench.concepts.vocabulary import CONCEPTS

DATA = Path(__file__).parent / "data" / "concepts"
runner = CliRunner()

SICK = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough and fever  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 There is a small left pleural effusion.  Patchy right lower lobe opacity is concerning
 for pneumonia.  The heart is mildly enlarged.  No pneumothorax.

 IMPRESSION:

 1.  Right lower lobe pneumonia.
 2.  Small left pleural effusion.
"""
NORMAL = """ FINDINGS:  The lungs are clear.  There is no pleural effusion or pneumothorax.  Heart
 size is normal.

 IMPRESSION:  No acute cardiopulmonary process.
"""


@cache
def _extractor() -> ConceptExtractor:
    return ConceptExtractor()


def _writer(*reports: str) -> ReportWriter:
    bank = SentenceBank(_extractor())
    bank.add_reports(reports)
    return ReportWriter(_extractor(), bank)


def _concepts(text: str) -> dict[str, str]:
    return _extractor().extract(text).concepts


def _plan(text: str, seed: int = 0, **kw) -> tuple[list[Perturbation], list]:
    return Planner(dict.fromkeys(KINDS, 2), seed=seed, **kw).plan("s1", _concepts(text))


# -- planner --------------------------------------------------------------------------------

def test_each_kind_keeps_its_promise_on_the_class_labels():
    for text in (SICK, NORMAL):
        source = _concepts(text)
        before = set(present_classes(source))
        for p in _plan(text)[0]:
            after = set(present_classes(p.target_concepts))
            assert p.target_labels == derive_labels(p.target_concepts)
            if p.kind == "inner_class":
                assert after == before and (p.added or p.removed)
            elif p.kind == "over_diagnosis":
                assert after > before and all(source[c] == p.target_concepts[c]
                                              for c in CONCEPTS if c not in p.added
                                              and c != "unremarkable")
            elif p.kind == "under_diagnosis":
                assert after < before and len(before - after) == 1
            elif p.kind == "normal_to_disease":
                assert not before and len(after) == 1
                assert p.target_concepts["unremarkable"] == "absent"
            else:
                assert not after and p.target_concepts["unremarkable"] == "positive"


def test_plan_is_seeded_has_no_duplicates_and_gives_reasons_for_kinds_that_cannot_apply():
    first, skipped = _plan(SICK, seed=3)
    again, _ = _plan(SICK, seed=3)
    assert [p.target_concepts for p in first] == [p.target_concepts for p in again]
    targets = [tuple(p.target_concepts.values()) for p in first]
    assert len(set(targets)) == len(targets)
    assert tuple(_concepts(SICK).values()) not in targets
    reasons = {s.kind: s.reason for s in skipped}
    assert "not a normal study" in reasons["normal_to_disease"]
    _, normal_skips = _plan(NORMAL)
    assert {s.kind for s in normal_skips} >= {"inner_class", "over_diagnosis", "under_diagnosis",
                                              "disease_to_normal"}


def test_removal_state_comes_from_the_config():
    for removal in ("negative", "absent"):
        planned, _ = _plan(SICK, removal=removal)
        removed = [(p, c) for p in planned for c in p.removed]
        assert removed and all(p.target_concepts[c] == removal for p, c in removed)
    with pytest.raises(ValueError, match="removal"):
        Planner({"inner_class": 1}, removal="gone")
    with pytest.raises(ValueError, match="unknown perturbation kinds"):
        Planner({"outer_class": 1})


# -- reports --------------------------------------------------------------------------------

def test_every_written_report_re_extracts_to_its_target_and_keeps_other_sections():
    writer = _writer(SICK, NORMAL)
    for text in (SICK, NORMAL):
        for p in _plan(text)[0]:
            out = writer.write(text, p)
            assert out.status == "verified", (p.kind, out.reason)
            assert _concepts(out.report) == p.target_concepts
            head = text[: text.index("FINDINGS")]
            assert out.report.startswith(head)  # header sections byte for byte


def test_removal_takes_one_list_item_and_keeps_the_rest_of_the_sentence():
    text = " FINDINGS:  No pleural effusion or pneumothorax.  Mild cardiomegaly.\n"
    source = _concepts(text)
    target = dict(source, effusion="absent")
    p = Perturbation("s1.x.0", "s1", "under_diagnosis", source, target, (), ("effusion",),
                     derive_labels(target))
    out = _writer(text).write(text, p)
    assert out.status == "verified"
    assert "No pneumothorax." in out.report and "effusion" not in out.report
    assert "Mild cardiomegaly." in out.report


def test_additions_go_into_findings_and_impression_with_the_same_side():
    planned, _ = Planner({"normal_to_disease": 3}, seed=1).plan("s1", _concepts(NORMAL))
    writer = _writer(NORMAL)
    for p in planned:
        out = writer.write(NORMAL, p)
        assert out.status == "verified", out.reason
        findings, impression = out.report.split("IMPRESSION:")
        for concept in p.added:
            f = [m for m in _extractor().extract(findings).mentions if m.concept == concept]
            i = [m for m in _extractor().extract(impression).mentions if m.concept == concept]
            assert f and i, (concept, out.report)
        sides = {s for s in ("right", "left") if s in out.report.split("FINDINGS:")[1].lower()}
        assert len(sides) <= 1, out.report


def test_a_target_no_report_can_say_fails_with_its_reason():
    """A normal statement with a disease present reads as `unremarkable` negative, so a target
    asking for both positive cannot be written: the case fails and says why."""
    source = _concepts(NORMAL)
    target = dict(source, mass="positive", unremarkable="positive")
    p = Perturbation("s1.x.1", "s1", "over_diagnosis", source, target, ("mass",), (),
                     derive_labels(target))
    out = _writer(NORMAL).write(NORMAL, p)
    assert out.status == "failed" and out.report is None
    assert "unremarkable wanted positive, got negative" in out.reason


def test_uncertain_states_can_be_restated_when_their_sentence_goes():
    source = _concepts(NORMAL)
    target = dict(source, unremarkable="absent", mass="uncertain", meniscus_sign="uncertain")
    p = Perturbation("s1.x.2", "s1", "normal_to_disease", source, target, (), (),
                     derive_labels(target))
    out = _writer(NORMAL).write(NORMAL, p)
    assert out.status == "verified" and _concepts(out.report) == target


def test_at_least_95_percent_of_perturbations_are_verified_on_held_out_report_sets():
    for name in ("heldout4.jsonl", "heldout6.jsonl", "ct_reports_b.jsonl"):
        rows = [json.loads(line) for line in (DATA / name).read_text("utf-8").splitlines()]
        records = list(perturb_report_set(lambda rows=rows: ((r["id"], r["text"]) for r in rows)))
        verified = [r for r in records if r["status"] == "verified"]
        assert len(records) > len(rows)
        assert len(verified) / len(records) >= 0.95, name
        for r in verified[:200]:
            assert _concepts(r["report"]) == r["target_concepts"]


# -- command line ---------------------------------------------------------------------------

def _inputs(tmp_path: Path) -> dict[str, Path]:
    reports = {("10000032", "50414267"): SICK, ("10000032", "53189527"): NORMAL}
    folder = tmp_path / "files"
    zpath = tmp_path / "reports.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for (subject, study), text in reports.items():
            rel = f"files/p{subject[:2]}/p{subject}/s{study}.txt"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text(text, encoding="utf-8")
            z.writestr(rel, text)
    jsonl = tmp_path / "reports.jsonl"
    jsonl.write_text("".join(json.dumps({"id": f"s{study}", "text": text}) + "\n"
                             for (_, study), text in reports.items()), encoding="utf-8")
    return {"folder": folder, "zip": zpath, "jsonl": jsonl}


@pytest.mark.parametrize("form", ["folder", "zip", "jsonl"])
def test_perturb_reports_reads_a_folder_a_zip_and_jsonl(tmp_path, form):
    src = _inputs(tmp_path)[form]
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["perturb-reports", str(src), "--out", str(out), "--seed", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert {r["parent_id"] for r in lines} == {"s50414267", "s53189527"}
    for r in lines:
        assert set(r) == {"id", "parent_id", "kind", "status", "reason", "report",
                          "source_concepts", "target_concepts", "target_labels"}
        assert r["status"] == "verified" and r["reason"] is None
        assert _concepts(r["report"]) == r["target_concepts"]
    assert "verified" in result.output


def test_perturb_reports_kinds_and_per_study_options(tmp_path):
    src = _inputs(tmp_path)["jsonl"]
    result = runner.invoke(app, ["perturb-reports", str(src), "--kinds", "over_diagnosis,"
                                 "normal_to_disease", "--per-study", "2"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(r["kind"] for r in lines) == ["normal_to_disease"] * 2 + ["over_diagnosis"] * 2


def test_perturb_reports_bad_kind_and_missing_input_exit_2(tmp_path):
    src = _inputs(tmp_path)["jsonl"]
    result = runner.invoke(app, ["perturb-reports", str(src), "--kinds", "outer_class"])
    assert result.exit_code == 2 and "outer_class" in result.output
    result = runner.invoke(app, ["perturb-reports", str(tmp_path / "none.jsonl")])
    assert result.exit_code == 2 and "none.jsonl" in result.output
