"""The ``medfocusleak`` attack: per accepted study, target findings with a few medically
significant edits, then a bounded perturbation of the image's background towards each target
(and, as a baseline, the same ensemble, ε and steps unmasked: M-Attack), each result judged on
every victim's answer.

Plan (cheap, no pixels): ``make_targets`` per study, one case per target and method; a study
no target can be made for is one case rejected ``no_target`` with the reason. Run (per batch):
decode each study once, find its diagnostic mask in the configured order (the source's mask,
the first ViT surrogate's attention, the phantom's ground truth), attack all cases of a method
at once (same-size images batched), then measure fidelity against the exact pixels the attack
started from, AvgSim on an encoder that is not a surrogate, and ask the victims (the clean
image once per study and victim). A case that raises fails alone, naming itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advbench.attacks.base import ATTACKS, Attack, Case
from advbench.attacks.corpa.planner import stable_seed
from advbench.attacks.medfocusleak.config import MedFocusLeakConfig, Method
from advbench.attacks.medfocusleak.objective import run_attack_groups
from advbench.attacks.medfocusleak.regions import background_squares, choose_mask
from advbench.attacks.medfocusleak.release import MedFocusLeakRelease
from advbench.attacks.medfocusleak.targets import TargetFindings, make_targets
from advbench.attacks.medfocusleak.texts import aim_texts, findings_of
from advbench.models.vlm import DEFAULT_PROMPT
from advbench.records import Outcome, Sample

if TYPE_CHECKING:
    from advbench.models.clip import ClipSpec, Surrogate
    from advbench.release.clean import AcceptedStudy
    from advbench.workers import WorkerCache

@dataclass
class _Prepared:
    """One study's pixels (uint8, as attacked) and its diagnostic mask."""

    pixels: np.ndarray
    mask: np.ndarray
    which: str


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """uint8 H×W or H×W×3: RGBA drops alpha, 16-bit gray is scaled by its maximum."""
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.uint16:
        a = np.round(a.astype(np.float64) * (255.0 / max(int(a.max()), 1))).astype(np.uint8)
    if a.dtype != np.uint8:
        raise ValueError(f"unsupported pixels {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


def _modality_name(code: str) -> str:
    from advbench.attacks.medfocusleak.target_rules import canonical_modality, load_rules

    return load_rules().names.get(canonical_modality(code), code)


def saliency_map(surrogate: Surrogate, pixels: np.ndarray) -> np.ndarray:
    """CLS→patch attention of a ViT surrogate, upsampled to the image (H×W float)."""
    import torch
    import torch.nn.functional as F

    from advbench.attacks.medfocusleak.crops import resize

    x = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    with torch.no_grad():
        a = surrogate.attention(resize(x.to(surrogate.device), surrogate.input_size))
        a = F.interpolate(a[:, None].float(), size=pixels.shape[:2], mode="bilinear",
                          align_corners=False)
    return a[0, 0].cpu().numpy().astype(np.float64)


def ground_truth_mask(study: Any) -> np.ndarray | None:
    """Where a phantom chest X-ray's findings are drawn: its density with and without them
    differ (None without a scene, for a non-square image or a normal scene)."""
    if not study.scene or study.width != study.height:
        return None
    from advbench.phantoms.rendering import density
    from advbench.phantoms.scene import Scene

    scene = Scene.from_dict(study.scene)
    if scene.is_normal:
        return None
    diff = np.abs(density(scene, study.width) - density(scene.with_findings([]), study.width))
    m = diff > 1e-3
    return m if m.any() else None


@ATTACKS.register("medfocusleak")
class MedFocusLeak(Attack):
    kind = "medfocusleak"
    Config = MedFocusLeakConfig
    release_config = MedFocusLeakRelease
    config: MedFocusLeakConfig

    def __init__(self, config: MedFocusLeakConfig, *, seed: int):
        super().__init__(config, seed=seed)
        self._rewriter: Any = None

    @property
    def methods(self) -> list[Method]:
        return ["medfocusleak", "m_attack"] if self.config.baseline else ["medfocusleak"]

    def _wanted(self, s: AcceptedStudy) -> bool:
        mods = self.config.modalities
        modality = s.study.modality.upper()
        if s.study.split not in self.config.splits or (
                mods is not None and modality not in {m.upper() for m in mods}):
            return False
        share = self.config.fraction
        share = share.get(modality, 1.0) if isinstance(share, dict) else share
        return share >= 1.0 or stable_seed(self.seed, s.study.id, "fraction") / 2**64 < share

    def plan(self, studies: list[AcceptedStudy]) -> list[Case]:
        cases: list[Case] = []
        name = self.config_name
        for s in studies:
            if not self._wanted(s):
                continue
            sid = s.study.id
            truth = findings_of(s.study)
            targets = make_targets(truth, s.study.modality,
                                   self.config.targets_per_sample,
                                   stable_seed(self.seed, sid, "targets") >> 1,
                                   rewriter=self._llm_rewriter(), max_edits=self.config.max_edits)
            if not targets:
                cases.append(Case(f"{sid}.{name}.no_target", s, "medfocusleak",
                                  {"reason": targets.reason or "no target"}))
                continue
            for n, t in enumerate(targets):
                for method in self.methods:
                    cases.append(Case(f"{sid}.{name}.{method}.{n}", s, method,
                                      {"target": t, "n": n, "all": list(targets),
                                       "truth": truth}))
        return cases

    def _llm_rewriter(self) -> Any:
        if self.config.rewriter is None:
            return None
        if self._rewriter is None:
            from advbench.attacks.medfocusleak.targets import LlmRewriter
            from advbench.models.endpoint import ChatClient

            rw = self.config.rewriter
            self._rewriter = LlmRewriter(ChatClient(rw.endpoint), rw.prompt)
        return self._rewriter

    def _fail(self, case: Case, stage: str, exc: BaseException) -> Outcome:
        return Outcome(case.id, "failed", stage, type(exc).__name__, f"{case.id}: {exc}",
                       case.study.source_index, self.config_name)

    # -- run ----------------------------------------------------------------------------

    def run(self, cases: list[Case], cache: WorkerCache) -> Iterator[Sample | Outcome]:
        todo: list[Case] = []
        for case in cases:
            if "reason" in case.target:
                yield self.reject(case, "plan", "no_target", f"{case.id}: {case.target['reason']}")
            else:
                todo.append(case)
        if not todo:
            return
        cfg = self.config
        surrogates = [cache.get(("clip-surrogate", s.model_dump_json()),
                                lambda s=s: _load_surrogate(s)) for s in self._surrogate_specs()]
        prepared: dict[str, _Prepared] = {}
        ready: list[Case] = []
        for case in todo:
            sid = case.parent_id
            if sid not in prepared:
                try:
                    prepared[sid] = self._prepare(case.study, surrogates)
                except Exception as exc:  # noqa: BLE001 (one study's failure, not the batch's)
                    prepared[sid] = exc  # type: ignore[assignment]  (_NoMask: rejected)
            p = prepared[sid]
            if isinstance(p, _NoMask):
                yield self.reject(case, "mask", p.reason, f"{case.id}: {p}")
            elif isinstance(p, Exception):
                yield self._fail(case, "image", p)
            else:
                ready.append(case)
        aims: dict[str, tuple[str, str]] = {}
        for case in list(ready):
            aim = aim_texts(case.target["truth"], case.target["target"].text, surrogates)
            if aim is None:
                ready.remove(case)
                yield self.reject(case, "plan", "edit_beyond_context",
                                  f"{case.id}: no surrogate's tokenizer sees the edit (it lies "
                                  "past their context length, even from its own sentence)")
            else:
                aims[case.id] = aim
        adversarial: dict[str, Any] = {}
        for method in self.methods:
            group = [c for c in ready if c.kind == method]
            if not group:
                continue
            settings = cfg.attack.model_copy(update={"masked": method == "medfocusleak",
                                                     "seed": self.seed})
            items = [(prepared[c.parent_id].pixels, prepared[c.parent_id].mask, aims[c.id][0])
                     for c in group]
            truths = [aims[c.id][1] for c in group]
            try:
                done = run_attack_groups(items, surrogates, settings, device=cfg.device,
                                         batch_size=cfg.batch_size, truths=truths)
            except Exception:  # noqa: BLE001 (retry alone: only the bad case fails)
                done = []
                for item, truth in zip(items, truths, strict=True):
                    try:
                        done.append(run_attack_groups([item], surrogates, settings,
                                                      device=cfg.device, truths=[truth])[0])
                    except Exception as exc:  # noqa: BLE001
                        done.append(exc)
            adversarial.update({c.id: d for c, d in zip(group, done, strict=True)})
        judged = self._evaluate(ready, prepared, adversarial, cache)
        for case in ready:
            result = adversarial.get(case.id)
            if isinstance(result, Exception):
                yield self._fail(case, "attack", result)
                continue
            try:
                yield self._sample(case, prepared[case.parent_id], result, judged)
            except Exception as exc:  # noqa: BLE001
                yield self._fail(case, "evaluate", exc)

    def _surrogate_specs(self) -> list[ClipSpec]:
        dev = self.config.device
        return [s if dev == "auto" or s.device != "auto" else s.model_copy(update={"device": dev})
                for s in self.config.surrogates]

    def _prepare(self, accepted: AcceptedStudy, surrogates: list[Surrogate]) -> _Prepared:
        from advbench.images import decode_pixels

        study = accepted.study
        pixels = _as_uint8(decode_pixels(study.image_bytes))
        shape = pixels.shape[:2]
        tried: list[str] = []
        for which in self.config.mask_from:
            source = saliency = scene = None
            if which == "source":
                if study.mask_bytes is None:
                    tried.append("the source gives no mask")
                    continue
                m = np.asarray(decode_pixels(study.mask_bytes))
                m = (m.max(axis=2) if m.ndim == 3 else m) > 0
                if m.shape != shape or not m.any():
                    tried.append("the source mask is empty or of another size")
                    continue
                source = m
            elif which == "saliency":
                vit = next((s for s in surrogates if s.has_attention), None)
                if vit is None:
                    tried.append("no ViT surrogate for saliency")
                    continue
                saliency = saliency_map(vit, pixels)
            else:
                scene = ground_truth_mask(study)
                if scene is None:
                    tried.append("no phantom ground truth")
                    continue
            try:
                mask, _ = choose_mask(source, saliency, scene)
            except ValueError as exc:
                tried.append(str(exc))
                continue
            s = self.config.attack
            if not len(background_squares(mask, 1, min_side=s.min_square)):
                tried.append(f"the {which} mask leaves no background square of "
                             f"{s.min_square} px")
                continue
            return _Prepared(pixels, mask, which)
        raise _NoMask("no_mask", "; ".join(tried) or "no mask source configured")

    def _evaluate(self, ready: list[Case], prepared: dict[str, _Prepared],
                  adversarial: dict[str, Any], cache: WorkerCache) -> dict[str, Any]:
        """AvgSim and victim answers for every attacked case (batched per model)."""
        from advbench.attacks.medfocusleak.judge import LlmJudge, RuleJudge
        from advbench.metrics.fidelity import cosine_similarity
        from advbench.models.retrieval import OpenClipEncoder
        from advbench.models.vlm import load_vlm

        cfg = self.config
        ok = [c for c in ready if not isinstance(adversarial.get(c.id), Exception)]
        studies = list(dict.fromkeys(c.parent_id for c in ok))
        out: dict[str, Any] = {"avg_sim": {}, "victims": {c.id: [] for c in ok}}
        if not ok:
            return out
        first = {c.parent_id: c for c in reversed(ok)}
        if cfg.similarity_model is not None:
            spec = cfg.similarity_model
            enc = cache.get(("similarity", spec.model_dump_json()),
                            lambda: OpenClipEncoder(spec))
            clean = dict(zip(studies, enc.encode_images([prepared[s].pixels for s in studies]),
                             strict=True))
            adv = enc.encode_images([adversarial[c.id].adversarial for c in ok])
            for c, z in zip(ok, adv, strict=True):
                out["avg_sim"][c.id] = float(cosine_similarity(clean[c.parent_id], z))
        judge: Any = RuleJudge()
        if cfg.judge.kind == "llm":
            from advbench.models.endpoint import ChatClient

            client = ChatClient(cfg.judge.endpoint)
            judge = (LlmJudge(client, cfg.judge.prompt) if cfg.judge.prompt
                     else LlmJudge(client))
        for spec in cfg.victims:
            victim = cache.get(("vlm", spec.kind, spec.identity()), lambda s=spec: load_vlm(s))
            template = (spec.prompt_template if spec.prompt_template != DEFAULT_PROMPT
                        else cfg.prompt)

            def ask(images: list[np.ndarray], cs: list[Case], v: Any = victim,
                    t: str = template) -> list[Any]:
                prompts = [t.replace("{modality}", _modality_name(c.study.study.modality))
                           for c in cs]
                cands = [_candidates(c) for c in cs]
                return v.respond(images, prompts, candidates=cands)

            clean_answers = dict(zip(studies, ask([prepared[s].pixels for s in studies],
                                                  [first[s] for s in studies]), strict=True))
            answers = ask([adversarial[c.id].adversarial for c in ok], ok)
            for c, a in zip(ok, answers, strict=True):
                t: TargetFindings = c.target["target"]
                study = c.study.study
                verdict = judge.judge(a.text, c.target["truth"], t.text,
                                      [e.to_dict() for e in t.edits], modality=study.modality)
                clean_a = clean_answers[c.parent_id]
                # the same question of the clean image: how often the victim already states
                # the target without any attack (the floor under MTR)
                before = judge.judge(clean_a.text, c.target["truth"], t.text,
                                     [e.to_dict() for e in t.edits], modality=study.modality)
                out["victims"][c.id].append({
                    "name": victim.name, "answer": a.text, "misdirected": verdict.misdirected,
                    "error": a.error or clean_a.error, "clean_answer": clean_a.text,
                    "clean_misdirected": before.misdirected})
        return out

    def _sample(self, case: Case, p: _Prepared, result: Any,
                judged: dict[str, Any]) -> Sample:
        from advbench.metrics.fidelity import fidelity

        study = case.study.study
        t: TargetFindings = case.target["target"]
        s = self.config.attack
        metrics = fidelity(p.pixels, result.adversarial, p.mask)
        return Sample(
            id=case.id, parent_id=case.parent_id, config=self.config_name, kind=case.kind,
            split=study.split, modality=study.modality, body_part=study.body_part,
            image=result.adversarial, mask=(p.mask * 255).astype(np.uint8),
            text={"true_findings": case.target["truth"], "target_findings": t.text},
            fields={
                "split": study.split,
                "method": case.kind,
                "original_image": p.pixels,
                "mask_source": p.which,
                "edits": [e.to_dict() for e in t.edits],
                "epsilon": float(s.epsilon),
                "steps": int(s.steps),
                "surrogates": [sp.model for sp in self.config.surrogates],
                **{k: metrics[k] for k in ("linf", "l2", "ssim", "psnr", "mask_change")},
                "avg_sim": judged["avg_sim"].get(case.id),
                "victims": judged["victims"].get(case.id, []),
                "seed": int(result.seed),
            },
        )


class _NoMask(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _candidates(case: Case) -> list[str]:
    """What a choosing victim (open-clip) picks from: the truth, this target, the others."""
    texts = [case.target["truth"], case.target["target"].text,
             *(t.text for t in case.target["all"])]
    return list(dict.fromkeys(x for x in texts if x))


def _load_surrogate(spec: ClipSpec) -> Surrogate:
    from advbench.models.clip import load_surrogate

    return load_surrogate(spec)
