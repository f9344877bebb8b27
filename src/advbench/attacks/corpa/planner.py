"""Perturbations of a study's concept vector: the five CoRPA kinds, seeded, without duplicates.

A concept is *present* when its state is positive or uncertain (the report raises it); a class
is present when one of its concepts is. Each perturbation carries the full target vector and
the class labels derived from it, so it is the ground truth of its adversarial case. A kind
that cannot apply to a study is not planned; the reason is recorded instead.

- ``inner_class``: re-sample the present concepts of one present disease class (another
  non-empty subset of that class); the class labels stay the same.
- ``over_diagnosis``: add 1-2 concepts of a disease class the study does not have; keep the rest.
- ``under_diagnosis``: remove every concept of one present class of a study with two or more.
- ``normal_to_disease``: a normal study (``unremarkable``, no disease) gets 1-2 concepts of one
  disease class, and its normal statement goes.
- ``disease_to_normal``: every present disease concept goes, a normal statement is added.

A removed concept's target state is ``removal`` (``negative``: the report then says it is not
there; ``absent``: the report no longer mentions it). An added concept is ``positive``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from advbench.concepts.extract import derive_labels
from advbench.concepts.vocabulary import CLASSES, CONCEPTS, concepts_of_class

KINDS: tuple[str, ...] = (
    "inner_class", "over_diagnosis", "under_diagnosis", "normal_to_disease", "disease_to_normal",
)
REMOVAL_STATES = ("negative", "absent")
PRESENT = ("positive", "uncertain")
DISEASE_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c != "healthy")
_TRIES = 64  # random draws per wanted perturbation before the kind gives up on a study


@dataclass(frozen=True)
class Perturbation:
    """One planned adversarial case: what its report must say."""

    id: str
    parent_id: str
    kind: str
    source_concepts: dict[str, str]
    target_concepts: dict[str, str]
    added: tuple[str, ...]  # concepts made positive
    removed: tuple[str, ...]  # concepts taken away (to the removal state)
    target_labels: dict[str, str] = field(default_factory=dict)

    @property
    def positive_labels(self) -> list[str]:
        """The class names whose label is positive or uncertain in the target."""
        return present_labels(self.target_labels)


@dataclass(frozen=True)
class Skip:
    """A kind that could not be planned for a study, and why."""

    parent_id: str
    kind: str
    reason: str


def present_labels(labels: dict[str, str]) -> list[str]:
    """The class names whose label is positive or uncertain, in class order."""
    return [c for c in CLASSES if labels.get(c) in PRESENT]


def present_concepts(concepts: dict[str, str]) -> set[str]:
    return {c for c in CONCEPTS if concepts.get(c, "absent") in PRESENT}


def present_classes(concepts: dict[str, str]) -> list[str]:
    """Disease classes with a present concept, in class order (opacity counts as derived)."""
    labels = derive_labels(concepts)
    return [c for c in DISEASE_CLASSES if labels[c] in PRESENT]


def is_normal(concepts: dict[str, str]) -> bool:
    return concepts.get("unremarkable") == "positive" and not (
        present_concepts(concepts) - {"unremarkable"})


class Planner:
    """Plans perturbations for studies; one instance per attack config.

    ``counts`` is the number of perturbations per kind and study; the random draws of a study
    depend only on the seed, the study id and the kind, so a study's plan does not change with
    the order or the company it is planned in.
    """

    def __init__(self, counts: dict[str, int], *, seed: int = 0, removal: str = "negative"):
        unknown = sorted(set(counts) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown perturbation kinds {unknown}; known: {', '.join(KINDS)}")
        if removal not in REMOVAL_STATES:
            raise ValueError(f"removal must be one of {REMOVAL_STATES}, not {removal!r}")
        self.counts = {k: n for k, n in counts.items() if n > 0}
        self.seed = seed
        self.removal = removal

    def plan(self, study_id: str, concepts: dict[str, str]
             ) -> tuple[list[Perturbation], list[Skip]]:
        planned: list[Perturbation] = []
        skipped: list[Skip] = []
        source = {c: concepts.get(c, "absent") for c in CONCEPTS}
        for kind in KINDS:
            want = self.counts.get(kind, 0)
            if not want:
                continue
            reason = self._cannot(kind, source)
            if reason:
                skipped.append(Skip(study_id, kind, reason))
                continue
            rng = random.Random(stable_seed(self.seed, study_id, kind))
            seen = {tuple(source.values())}
            made = 0
            for _ in range(want * _TRIES):
                if made == want:
                    break
                drawn = self._draw(kind, source, rng)
                if drawn is None:
                    continue
                target, added, removed = drawn
                key = tuple(target[c] for c in CONCEPTS)
                if key in seen:
                    continue
                seen.add(key)
                planned.append(Perturbation(
                    id=f"{study_id}.{kind}.{made}", parent_id=study_id, kind=kind,
                    source_concepts=dict(source), target_concepts=target,
                    added=tuple(added), removed=tuple(removed),
                    target_labels=derive_labels(target)))
                made += 1
            if made < want:
                skipped.append(Skip(study_id, kind, (
                    f"only {made} distinct {kind} perturbation(s) of {want} exist for this study")))
        return planned, skipped

    # -- kinds ----------------------------------------------------------------------------

    def _cannot(self, kind: str, source: dict[str, str]) -> str | None:
        """Why a kind does not apply to a study, or None."""
        classes = present_classes(source)
        if kind == "inner_class":
            if not classes:
                return "no disease class present: nothing to re-sample"
            if not any(len(concepts_of_class(c)) > 1 for c in classes):
                return "each present class has a single concept"
        elif kind == "over_diagnosis":
            if not classes:
                return "no disease class present (a normal study is normal_to_disease)"
            if len(classes) == len(DISEASE_CLASSES):
                return "every disease class is already present"
        elif kind == "under_diagnosis":
            if len(classes) < 2:
                return f"{len(classes)} disease class(es) present: under-diagnosis needs two"
        elif kind == "normal_to_disease":
            if not is_normal(source):
                return "not a normal study (unremarkable positive, no disease concept)"
        elif kind == "disease_to_normal":
            if not classes:
                return "no disease class present"
        return None

    def _draw(self, kind: str, source: dict[str, str], rng: random.Random
              ) -> tuple[dict[str, str], list[str], list[str]] | None:
        target = dict(source)
        present = present_concepts(source)
        classes = present_classes(source)
        added: list[str] = []
        removed: list[str] = []
        if kind == "inner_class":
            cls = rng.choice([c for c in classes if len(concepts_of_class(c)) > 1])
            members = _members(cls)
            have = sorted(present & set(members))
            k = rng.randint(1, min(len(members), max(2, len(have) + 1)))
            new = set(rng.sample(members, k))
            if new == set(have):
                return None
            added = sorted(new - set(have), key=CONCEPTS.index)
            removed = sorted(set(have) - new, key=CONCEPTS.index)
        elif kind == "over_diagnosis":
            cls = rng.choice([c for c in DISEASE_CLASSES if c not in classes])
            added = _pick(rng, _members(cls), rng.randint(1, 2))
        elif kind == "under_diagnosis":
            cls = rng.choice(classes)
            removed = [c for c in _members(cls) if c in present and c != "opacity"]
            if "opacity" in present and _opacity_class(source) == cls:
                removed.append("opacity")  # it counts for the class being taken away
        elif kind == "normal_to_disease":
            cls = rng.choice(DISEASE_CLASSES)
            added = _pick(rng, _members(cls), rng.randint(1, 2))
            target["unremarkable"] = "absent"
        elif kind == "disease_to_normal":
            removed = sorted(present - {"unremarkable"}, key=CONCEPTS.index)
            target["unremarkable"] = "positive"
        for c in added:
            target[c] = "positive"
        for c in removed:
            target[c] = self.removal
        if kind in ("over_diagnosis", "under_diagnosis", "inner_class") and (
                target["unremarkable"] in PRESENT):
            target["unremarkable"] = "negative"  # a normal statement next to disease
        if not _consistent(kind, source, target):
            return None
        return target, added, removed


def _members(cls: str) -> list[str]:
    """The concepts drawn for a class (opacity is drawn with pneumonia, its vocabulary class)."""
    return list(concepts_of_class(cls))


def _opacity_class(concepts: dict[str, str]) -> str:
    """The class an opacity counts towards (see ``derive_labels``)."""
    others = ("pneumonitis", "consolidation", "infection")
    return "pneumonia" if any(concepts.get(c) in PRESENT for c in others) else "pleural_effusion"


def _pick(rng: random.Random, members: list[str], k: int) -> list[str]:
    return sorted(rng.sample(members, min(k, len(members))), key=CONCEPTS.index)


def _consistent(kind: str, source: dict[str, str], target: dict[str, str]) -> bool:
    """The target's class labels say what the kind promises."""
    before = set(present_classes(source))
    after = set(present_classes(target))
    if kind == "inner_class":
        return before == after
    if kind == "over_diagnosis":
        return after > before
    if kind == "under_diagnosis":
        return after < before and len(after) == len(before) - 1
    if kind == "normal_to_disease":
        return len(after) == 1
    if kind == "disease_to_normal":
        return not after and target["unremarkable"] == "positive"
    return False


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from the parts' text, the same in every process and run (``hash()`` is
    salted per process)."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")
