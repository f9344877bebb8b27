"""The ``corpa`` attack and its release config: plan perturbations of each study's concept
vector, write a verified adversarial report, and make its image with the configured generator.

Per batch of accepted studies (a shard's row group, so the result does not depend on which
worker runs it): the sentence bank is made from the batch's own reports (plus the written
fallback), each planned perturbation becomes one case, and a kind that cannot apply to a
study becomes a case rejected with its reason, so the manifest counts every one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from advbench.attacks.base import ATTACKS, Attack, AttackConfig, Case, distinct_names
from advbench.attacks.corpa import diffusion  # noqa: F401  (registers `diffusers`)
from advbench.attacks.corpa.generators import GENERATORS
from advbench.attacks.corpa.image_check import (
    ClassifierCheckConfig,
    ClipCheckConfig,
    make_checker,
)
from advbench.attacks.corpa.pgd import PgdConfig, pgd_answers
from advbench.attacks.corpa.planner import (
    KINDS,
    Perturbation,
    Planner,
    Skip,
    present_labels,
    stable_seed,
)
from advbench.attacks.corpa.reports import ReportWriter
from advbench.attacks.corpa.sentences import SentenceBank
from advbench.concepts.vocabulary import CONCEPTS
from advbench.images import decode_pixels
from advbench.models.victims import DISEASES, VICTIMS, Victim, load_victim
from advbench.records import Outcome, Sample
from advbench.release.configs import RELEASE_CONFIGS, SummaryTable
from advbench.release.derived import DerivedConfig

if TYPE_CHECKING:
    import duckdb

    from advbench.release.clean import AcceptedStudy
    from advbench.workers import WorkerCache

GeneratorSpec = GENERATORS.config_spec()
VictimSpec = VICTIMS.config_spec()
ImageCheckSpec = Annotated[ClassifierCheckConfig | ClipCheckConfig, Field(discriminator="kind")]


class CorpaConfig(AttackConfig):
    kind: Literal["corpa"] = "corpa"
    kinds: dict[str, int] = Field(
        default_factory=lambda: dict.fromkeys(KINDS, 1),
        description="Perturbations per kind and study (kinds: " + ", ".join(KINDS) + ").")
    splits: list[str] = Field(default_factory=lambda: ["test"], min_length=1,
                              description="Splits whose studies are perturbed.")
    removal: Literal["negative", "absent"] = Field(
        default="negative", description="Target state of a removed concept.")
    generator: GeneratorSpec = Field(default_factory=lambda: GENERATORS.get("phantom").Config(),
                                     description="How the image is made.")
    image_check: ImageCheckSpec | None = Field(
        default=None, description="A model that is not a victim must find the target in a "
        "candidate image before it is kept (none: every candidate is kept).")
    victims: list[VictimSpec] = Field(
        default_factory=list, description="Classifiers queried as black boxes (none: no query).")
    queries: int = Field(default=3, ge=1, le=64,
                         description="Query budget per victim and case: candidates tried.")
    pgd: PgdConfig | None = Field(
        default=None, description="White-box L∞ PGD baseline on each victim, on the same clean "
        "studies (none: no baseline).")

    @field_validator("victims")
    @classmethod
    def _distinct_victims(cls, v: list) -> list:
        return distinct_names(v)

    @model_validator(mode="after")
    def _checker_is_not_a_victim(self) -> CorpaConfig:
        if self.image_check is not None and self.image_check.kind == "classifier":
            checker = self.image_check.model.model_dump_json()
            if any(v.model_dump_json() == checker for v in self.victims):
                raise ValueError("image_check.model must not be one of the victims")
        return self

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(v) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {', '.join(KINDS)}")
        if any(n < 0 or n > 20 for n in v.values()):
            raise ValueError("a count per kind is between 0 and 20")
        return v



@RELEASE_CONFIGS.register("corpa")
class CorpaRelease(DerivedConfig):
    default_name = "corpa"
    description = ("CoRPA adversarial cases: a perturbed concept vector, a report re-extracted "
                   "to exactly that target, and an image made to show it")

    def text_features(self) -> dict[str, Any]:
        from datasets import Value

        return {"report": Value("string"), "original_report": Value("string")}

    def own_features(self) -> dict[str, Any]:
        from datasets import Image, List, Value

        states = {c: Value("string") for c in CONCEPTS}
        return {
            "split": Value("string"),
            "variant": Value("int32"),
            "original_image": Image(),
            "source_concepts": states,
            "target_concepts": dict(states),
            "achieved_concepts": dict(states),
            "source_labels": List(Value("string")),
            "target_labels": List(Value("string")),
            "generator": Value("string"),
            "generator_settings": Value("string"),
            "image_check": {"model": Value("string"), "target_score": Value("float32"),
                            "source_score": Value("float32"), "passed": Value("bool")},
            "ssim_outside_edit": Value("float32"),
            "scene": Value("string"),
            "victims": List({"name": Value("string"), "clean_labels": List(Value("string")),
                             "adversarial_labels": List(Value("string")),
                             "success": Value("bool"), "queries": Value("int32"),
                             "pgd": List({"epsilon": Value("float32"),
                                          "labels": List(Value("string"))})}),
            "seed": Value("int64"),
        }

    def features(self):
        from datasets import Features

        # the base's mask is what the generator edited: named for it here
        return Features({("edit_mask" if k == "mask" else k): v
                         for k, v in super().features().items()})

    def row(self, record: Sample) -> dict[str, Any]:
        from advbench.images import encode_png

        out = super().row(record)
        out = {("edit_mask" if k == "mask" else k): v for k, v in out.items()}
        original = out.get("original_image")
        if original is not None and not isinstance(original, dict):
            out["original_image"] = {"bytes": encode_png(original),
                                     "path": f"{record.id}-original.png"}
        return out

    def summary(self, con: duckdb.DuckDBPyConnection, rows: str) -> list[SummaryTable]:
        kinds = con.sql(f"SELECT kind, count(*), round(avg(ssim_outside_edit), 4) FROM {rows} "
                        "GROUP BY 1 ORDER BY 1").fetchall()
        tables = [SummaryTable("adversarial cases per kind",
                               ["kind", "cases", "mean SSIM outside the edit"],
                               [list(k) for k in kinds])]
        queried = (f"(SELECT parent_id, kind, source_labels, target_labels, "
                   f"unnest(victims) AS v FROM {rows})")
        exact = "(CASE WHEN list_sort({a}) = list_sort({b}) THEN 1.0 ELSE 0.0 END)"
        # per-label accuracy: the share of the five disease classes the answer gets right
        diseases = "[" + ", ".join(f"'{c}'" for c in DISEASES) + "]"
        per_label = (f"(1.0 - len(list_filter({diseases}, lambda c: list_contains({{a}}, c) "
                     f"!= list_contains({{b}}, c))) / {len(DISEASES)})")
        clean = con.sql(f"""
            SELECT name, count(*), round(avg({exact.format(a="labels", b="source_labels")}), 3),
                   round(avg({per_label.format(a="labels", b="source_labels")}), 3)
            FROM (SELECT DISTINCT parent_id, v.name AS name, v.clean_labels AS labels,
                         source_labels FROM {queried})
            GROUP BY 1""").fetchall()
        clean_of = {r[0]: r[1:] for r in clean}
        victims = con.sql(f"""
            SELECT v.name, count(*),
                   round(avg({exact.format(a="v.adversarial_labels", b="target_labels")}), 3),
                   round(avg(CASE WHEN v.success THEN 1.0 ELSE 0.0 END), 3),
                   round(avg(v.queries), 2)
            FROM {queried} GROUP BY 1 ORDER BY 1""").fetchall()
        if victims:
            tables.append(SummaryTable(
                "victims (black box)",
                ["victim", "clean studies", "clean accuracy (exact)", "clean label accuracy",
                 "CoRPA cases", "accuracy on CoRPA (target labels)", "success rate",
                 "mean queries"],
                [[r[0], *clean_of.get(r[0], (None, None, None)), *r[1:]] for r in victims]))
            per_kind = con.sql(f"""
                SELECT v.name, kind,
                       round(avg({exact.format(a="v.adversarial_labels", b="target_labels")}),
                             3), count(*)
                FROM {queried} GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
            tables.append(SummaryTable("victim accuracy on CoRPA cases per kind",
                                       ["victim", "kind", "accuracy", "cases"],
                                       [list(r) for r in per_kind]))
            studies = (f"(SELECT DISTINCT parent_id, v.name AS name, source_labels, "
                       f"unnest(v.pgd) AS p FROM {queried})")
            pgd = con.sql(f"""
                SELECT name, round(p.epsilon * 255, 1),
                       round(avg({exact.format(a="p.labels", b="source_labels")}), 3),
                       round(avg({per_label.format(a="p.labels", b="source_labels")}), 3),
                       count(*)
                FROM {studies} GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
            if pgd:
                tables.append(SummaryTable(
                    "victim accuracy under white-box PGD (same clean studies)",
                    ["victim", "epsilon (/255)", "accuracy (exact)", "label accuracy",
                     "studies"],
                    [list(r) for r in pgd]))
        return tables


@ATTACKS.register("corpa")
class Corpa(Attack):
    kind = "corpa"
    Config = CorpaConfig
    release_config = CorpaRelease

    def __init__(self, config: CorpaConfig, *, seed: int):
        super().__init__(config, seed=seed)
        self.planner = Planner(config.kinds, seed=seed, removal=config.removal)
        self.generator = GENERATORS.get(config.generator.kind)(config.generator)

    def plan(self, studies: list[AcceptedStudy]) -> list[Case]:
        cases: list[Case] = []
        name = self.config_name
        for s in studies:
            if s.study.split not in self.config.splits or not s.study.is_chest_radiograph:
                continue  # CoRPA perturbs chest radiograph concepts only
            planned, skipped = self.planner.plan(s.study.id, s.concepts.concepts)
            for p in planned:
                cases.append(Case(f"{s.study.id}.{name}.{p.kind}.{p.id.rsplit('.', 1)[1]}", s,
                                  p.kind, {"perturbation": p}))
            for skip in skipped:
                cases.append(Case(f"{s.study.id}.{name}.{skip.kind}.skipped", s, skip.kind,
                                  {"skip": skip}))
        return cases

    def run(self, cases: list[Case], cache: WorkerCache) -> Iterator[Sample | Outcome]:
        from advbench.concepts.extract import default_extractor

        extractor = default_extractor()  # the one the generators' hints use too
        bank = SentenceBank(extractor)
        seen: set[str] = set()
        for case in cases:  # the batch's own reports, in plan order: the same on any worker
            if case.parent_id not in seen:
                seen.add(case.parent_id)
                bank.add_report(case.study.study.report)
        writer = ReportWriter(extractor, bank)
        victims = [cache.get(("victim", spec.model_dump_json()), lambda s=spec: load_victim(s))
                   for spec in self.config.victims]
        check = self.config.image_check
        checker = None if check is None else cache.get(
            ("image-check", check.identity()), lambda: make_checker(check))
        clean: dict[tuple[str, str], dict[str, Any]] = {}  # (victim, study) → answers
        for case in cases:
            skip: Skip | None = case.target.get("skip")
            if skip is not None:
                yield self.reject(case, "plan", "not_applicable", f"{case.id}: {skip.reason}")
                continue
            yield self._make(case, case.target["perturbation"], writer, victims, checker, clean)

    def _make(self, case: Case, p: Perturbation, writer: ReportWriter,
              victims: list[Victim], checker: Any,
              clean: dict[tuple[str, str], dict[str, Any]]) -> Sample | Outcome:
        study = case.study.study
        written = writer.write(study.report, p)
        if written.status != "verified":
            return self.reject(case, "report", "report_not_verified",
                               f"{case.id}: {written.reason}")
        seed = stable_seed(self.seed, case.id) >> 1  # fits int64
        source = present_labels(case.study.concepts.labels)
        made = self.generator.candidates(study, p, written.report, seed)
        checks: list[dict[str, Any]] = []
        if checker is not None:
            made = _checked(made, checker, p.positive_labels, source, checks)
        candidates = _Lazy(made)
        try:
            candidate = candidates[0]
        except ValueError as exc:
            return self.reject(case, "image", "no_image", f"{case.id}: {exc}")
        except IndexError:
            reason = "no candidate" if not checks else (
                f"the image check ({checks[-1]['model']}) passed none of {len(checks)} "
                f"candidates (last: target score {checks[-1]['target_score']:.2f})")
            return self.reject(case, "image", "image_check_failed", f"{case.id}: {reason}")
        image_check = candidate.settings.pop("image_check", None)
        original = decode_pixels(study.image_bytes)
        queried = []
        for v in victims:
            key = (v.name, case.parent_id)
            if key not in clean:  # once per study and victim, whatever its cases
                clean[key] = {"clean_labels": v.predict([original])[0], "pgd": (
                    [] if self.config.pgd is None
                    else pgd_answers(v, original, source, self.config.pgd))}
            queried.append(query_victim(v, clean[key], candidates, p.positive_labels,
                                        self.config.queries))
        return Sample(
            id=case.id, parent_id=case.parent_id, config=self.config_name, kind=case.kind,
            split=study.split, modality=study.modality, body_part=study.body_part,
            image=candidate.pixels, mask=candidate.mask,
            text={"report": written.report, "original_report": study.report},
            fields={
                "split": study.split,
                "variant": int(candidate.settings.get("variant", 0)),
                "original_image": original,
                "source_concepts": dict(p.source_concepts),
                "target_concepts": dict(p.target_concepts),
                "achieved_concepts": dict(written.achieved),
                "source_labels": source,
                "target_labels": p.positive_labels,
                "generator": self.generator.kind,
                "generator_settings": json.dumps(candidate.settings, sort_keys=True),
                "image_check": image_check,
                "ssim_outside_edit": ssim_outside(original, candidate.pixels, candidate.mask),
                "scene": None if candidate.scene is None else json.dumps(candidate.scene),
                "victims": queried,
                "seed": seed,
            },
        )


class _Lazy:
    """The candidates of a generator, made only as far as they are asked for."""

    def __init__(self, made):
        self._it, self._done = iter(made), []

    def __getitem__(self, i: int):
        while len(self._done) <= i:
            try:
                self._done.append(next(self._it))
            except StopIteration:
                raise IndexError(i) from None
        return self._done[i]


def _checked(made, checker, target: list[str], source: list[str],
             log: list[dict[str, Any]]):
    """The candidates the checker finds the target in, each with its verdict recorded. A
    candidate the generator left unedited (no edit mask: the target's findings look like the
    source's, e.g. consolidation for pneumonitis) has no edit to verify and is not checked;
    its ``image_check`` stays null."""
    target = sorted(target or ["healthy"])
    for candidate in made:
        if candidate.mask is None:
            yield candidate
            continue
        verdict = checker.verdict(candidate.pixels, target, source)
        log.append(verdict)
        if verdict["passed"]:
            candidate.settings["image_check"] = verdict
            yield candidate


def query_victim(victim: Victim, clean: dict[str, Any], candidates: _Lazy,
                 target: list[str], budget: int) -> dict[str, Any]:
    """The black-box loop: candidates in order until the victim's labels differ from the
    target labels (it is fooled) or the budget ends. One query per candidate. ``clean``
    holds the victim's answers on the original image (and under PGD)."""
    answer: list[str] = clean["clean_labels"]
    queries = 0
    success = False
    for i in range(budget):
        try:
            image = candidates[i].pixels
        except IndexError:
            break
        answer = victim.predict([image])[0]
        queries += 1
        if sorted(answer) != sorted(target or ["healthy"]):
            success = True
            break
    return {"name": victim.name, "clean_labels": clean["clean_labels"],
            "adversarial_labels": answer, "success": success, "queries": queries,
            "pgd": clean["pgd"]}


def ssim_outside(original: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> float:
    """SSIM of the image to the original where its window lies outside the edit mask (1.0
    when the image kept every pixel there; NaN when the edit covers the whole image)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(image, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"image {b.shape} and original {a.shape} differ in shape")
    outside = np.ones(a.shape[:2], bool) if mask is None else np.asarray(mask) == 0
    if mask is not None:  # only windows wholly outside the edit (SSIM's window is 7 × 7)
        from scipy.ndimage import binary_erosion

        outside = binary_erosion(outside, structure=np.ones((7, 7), bool), border_value=1)
    if not outside.any():
        return float("nan")
    _, full = structural_similarity(a, b, data_range=255.0, full=True,
                                    channel_axis=-1 if a.ndim == 3 else None)
    if full.ndim == 3:
        full = full.mean(axis=-1)
    return float(full[outside].mean())

