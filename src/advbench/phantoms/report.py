"""MIMIC-style free-text reports written from a phantom scene, with their exact concept states.

Every sentence comes from ``phrases.yaml`` together with the concept states it expresses under
the labelling guide (``docs/concept-labelling.md``), so a report's concept vector is known by
construction instead of being re-extracted: it is the ground truth that the extractor and the
adversarial-report checks are measured against.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import yaml

from advbench.concepts.vocabulary import CONCEPTS, DISEASE_CONCEPTS, STATE_PRIORITY
from advbench.phantoms.scene import Finding, Scene
from advbench.sources.base import CHEXPERT_COLUMNS

_WIDTH = 78  # MIMIC reports wrap at about this column


@cache
def phrases() -> dict[str, Any]:
    """The phrase bank (``phrases.yaml``), read once."""
    text = resources.files("advbench.phantoms").joinpath("phrases.yaml").read_text("utf-8")
    return yaml.safe_load(text)


@dataclass(frozen=True)
class PhantomReport:
    """A report and what it says: all 17 concept states and extra CheXpert labels."""

    text: str
    concepts: dict[str, str]
    labels: dict[str, float] = field(default_factory=dict)  # CheXpert columns no concept covers
    findings: str = ""
    impression: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "concepts": dict(self.concepts), "labels": dict(self.labels),
                "findings": self.findings, "impression": self.impression}


class _Writer:
    """Collects sentences and the states they express for one report."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.states: dict[str, str] = dict.fromkeys(CONCEPTS, "absent")
        self.labels: dict[str, float] = {}

    def pick(self, options: list[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def take(self, entry: dict[str, Any], values: dict[str, str]) -> str:
        for concept, state in (entry.get("concepts") or {}).items():
            if concept not in self.states:
                raise KeyError(f"phrases.yaml names unknown concept {concept!r}")
            if STATE_PRIORITY[state] > STATE_PRIORITY[self.states[concept]]:
                self.states[concept] = state
        for column, value in (entry.get("labels") or {}).items():
            old = self.labels.get(column)
            if old is None or _LABEL_RANK[value] > _LABEL_RANK[old]:
                self.labels[column] = float(value)
        return _fill(entry["text"], values)


_LABEL_RANK = {1.0: 3, -1.0: 2, 0.0: 1}


def _fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{key}``; ``{Key}`` gives the value with a capital first letter."""

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        value = values[key.lower()]
        return value[:1].upper() + value[1:] if key[:1].isupper() else value

    return re.sub(r"\{(\w+)\}", sub, template)


def _fits(entry: dict[str, Any], f: Finding, count: int) -> bool:
    sides = entry.get("sides")
    if sides == "one" and f.side == "bilateral":
        return False
    if sides == "both" and f.side != "bilateral":
        return False
    if "sizes" in entry and f.size not in entry["sizes"]:
        return False
    return "counts" not in entry or count in entry["counts"]


def _values(f: Finding, w: _Writer) -> dict[str, str]:
    bank = phrases()
    count = int(f.params.get("count", 1))
    severity = bank["severity"][f.size]
    mm = f.params.get("diameter_mm", f.params.get("max_mm", 10))
    return {
        "side": f.side,
        "size": f.size,
        "severity": severity,
        "severity_ly": {"mild": "mildly", "moderate": "moderately", "severe": "severely"}[
            severity],
        "loc": w.pick(bank["locations"][f.side][f.zone]),
        "mm": str(int(mm)),
        "cm": f"{float(f.params.get('diameter_cm', 4.0)):.1f}",
        "count_word": bank["count_words"].get(count, str(count)),
        "count_lower": bank["count_words"].get(count, str(count)).lower(),
    }


def _choose(w: _Writer, f: Finding, group: str, fallback: str) -> dict[str, Any]:
    entries = phrases()["findings"][f.kind]
    count = int(f.params.get("count", 1))
    options = [e for e in entries.get(group, []) if _fits(e, f, count)]
    if not options:
        options = [e for e in entries[fallback] if _fits(e, f, count)]
    if not options:
        raise ValueError(f"phrases.yaml has no {group!r} sentence for {f}")
    return w.pick(options)


def write_report(scene: Scene, rng: np.random.Generator) -> PhantomReport:
    """A varied MIMIC-style report of ``scene`` and the concept states it expresses."""
    bank = phrases()
    w = _Writer(rng)
    sex = scene.anatomy.sex
    indication = _fill(w.pick(bank["indications"]),
                       {"sex": sex, "sexword": "woman" if sex == "F" else "man"})

    findings: list[str] = []
    impression: list[str] = []
    opener = w.pick(bank["openers"])
    if opener:
        findings.append(opener)

    if scene.is_normal:
        lungs = w.pick(bank["normal"]["findings"])
        findings.append(w.take(lungs, {}))
        findings.append(w.take(w.pick(bank["normal"]["heart"]), {}))
        _negations(w, findings, touched=set(), count=int(rng.integers(1, 3)),
                   said=set(lungs.get("concepts") or {}))
        impression.append(w.take(w.pick(bank["normal"]["impression"]), {}))
    else:
        hedge_rate = bank["hedge_rate"]
        for f in scene.findings:
            hedged = rng.random() < hedge_rate.get(f.kind, 0.0)
            values = _values(f, w)
            group = "hedged" if hedged else "positive"
            findings.append(w.take(_choose(w, f, group, "positive"), values))
            igroup = "impression_hedged" if hedged else "impression"
            impression.append(w.take(_choose(w, f, igroup, "impression"), values))
        touched = {c for f in scene.findings for c in bank["touches"][f.kind]}
        if "cardiomegaly" not in scene.kinds and rng.random() < 0.7:
            findings.append(w.take(w.pick(bank["normal"]["heart"]), {}))
        _negations(w, findings, touched=touched, count=int(rng.integers(1, 3)))
        # Findings that are not acute: radiologists still call the study otherwise normal.
        if set(scene.kinds) <= {"nodule", "cardiomegaly", "diaphragm_flattening"} and (
                rng.random() < 0.35):
            options = [e for e in bank["normal"]["impression"] if not e.get("normal_only")]
            impression.append(w.take(w.pick(options), {}))
    closer = w.pick(bank["closers"])
    if closer:
        findings.append(closer)

    if len(impression) > 1 and rng.random() < 0.6:
        impression = [f"{i}. {s}" for i, s in enumerate(impression, 1)]
        impression_text = "\n".join(_wrap(s) for s in impression)
    else:
        impression_text = _wrap("  ".join(impression))
    findings_text = _wrap("  ".join(findings))
    text = "\n".join([
        bank["header"],
        f" EXAMINATION:  {w.pick(bank['examination'])}",
        "",
        _wrap(f"INDICATION:  {indication}"),
        "",
        f" TECHNIQUE:  {w.pick(bank['techniques'])}",
        "",
        f" COMPARISON:  {w.pick(bank['comparisons'])}",
        "",
        " FINDINGS:",
        "",
        findings_text,
        "",
        " IMPRESSION:",
        "",
        impression_text,
        "",
    ])
    concepts = _unremarkable(w.states)
    return PhantomReport(text=text, concepts=concepts, labels=dict(w.labels),
                         findings=findings_text, impression=impression_text)


def _negations(w: _Writer, out: list[str], *, touched: set[str], count: int,
               said: set[str] | None = None) -> None:
    """Explicit negatives for findings the scene does not have (never one that it has)."""
    options = [e for e in phrases()["negations"]
               if not set(e.get("concepts") or {}) & touched]
    order = w.rng.permutation(len(options))
    said = set(said or ())
    for i in order:
        if count <= 0:
            break
        entry = options[int(i)]
        names = set(entry.get("concepts") or {}) | set(entry.get("labels") or {})
        if names & said:
            continue  # do not negate the same thing twice
        said |= names
        out.append(w.take(entry, {}))
        count -= 1


def _unremarkable(states: dict[str, str]) -> dict[str, str]:
    """Guide rule: a normal statement is negative when a disease concept is positive/uncertain."""
    out = dict(states)
    if out["unremarkable"] != "absent":
        sick = any(out[c] in ("positive", "uncertain") for c in DISEASE_CONCEPTS)
        out["unremarkable"] = "negative" if sick else "positive"
    return out


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, width=_WIDTH, initial_indent=" ",
                                   subsequent_indent=" ", break_on_hyphens=False,
                                   break_long_words=False))


_VALUE = {"positive": 1.0, "uncertain": -1.0, "negative": 0.0, "absent": None}


def _strongest(concepts: dict[str, str], names: tuple[str, ...]) -> float | None:
    best = max((concepts.get(n, "absent") for n in names), key=STATE_PRIORITY.__getitem__)
    return _VALUE[best]


def chexpert_labels(
    scene: Scene,
    concepts: dict[str, str],
    extra: dict[str, float] | None = None,
) -> dict[str, float | None]:
    """CheXpert-style labels (1.0 / 0.0 / -1.0 / None) from what the report says.

    ``extra`` holds columns set by sentences outside the 17 concepts (e.g. "No pulmonary
    edema." → Edema 0.0). "No Finding" is 1.0 only for a normal scene whose report says so.
    """
    labels: dict[str, float | None] = dict.fromkeys(CHEXPERT_COLUMNS)
    labels["Cardiomegaly"] = _strongest(concepts, ("enlarged_heart",))
    labels["Consolidation"] = _strongest(concepts, ("consolidation",))
    labels["Lung Opacity"] = _strongest(concepts, ("opacity",))
    labels["Lung Lesion"] = _strongest(concepts, ("mass", "nodule", "irregular_parenchyma"))
    labels["Pleural Effusion"] = _strongest(
        concepts, ("effusion", "fluid", "meniscus_sign", "costophrenic_blunting"))
    labels["Pneumonia"] = _strongest(concepts, ("pneumonitis", "infection"))
    labels["Pneumothorax"] = _strongest(concepts, ("absent_lung_markings",))
    for column, value in (extra or {}).items():
        if column not in labels:
            raise KeyError(f"unknown CheXpert column {column!r}")
        old = labels[column]
        if old is None or _LABEL_RANK[float(value)] > _LABEL_RANK[old]:
            labels[column] = float(value)
    if scene.is_normal and concepts.get("unremarkable") == "positive":
        labels["No Finding"] = 1.0
    return labels
