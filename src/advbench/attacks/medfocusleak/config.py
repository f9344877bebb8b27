"""The ``medfocusleak`` attack's config block: which studies, how many targets, the surrogate
ensemble and the attack's knobs, where the mask comes from, the victims, the AvgSim encoder
and the judge. Checked when the build config is read, before anything loads."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from advbench.attacks.base import AttackConfig, distinct_names
from advbench.attacks.medfocusleak.objective import AttackSettings
from advbench.attacks.medfocusleak.regions import MaskSource
from advbench.attacks.medfocusleak.targets import DEFAULT_PROMPT as REWRITE_PROMPT
from advbench.models.clip import ClipSpec
from advbench.models.endpoint import EndpointConfig
from advbench.models.retrieval import OpenClipEncoderSpec
from advbench.models.vlm import DEFAULT_PROMPT, VLM_VICTIMS

VlmSpec = VLM_VICTIMS.config_spec()
Method = Literal["medfocusleak", "m_attack"]


class RewriterConfig(BaseModel):
    """An LLM that writes the target findings (the rules take over on any failure)."""

    model_config = ConfigDict(extra="forbid")
    endpoint: EndpointConfig
    prompt: str = Field(default=REWRITE_PROMPT, description="Template with {findings}, "
                        "{modality} and {k}.")


class JudgeConfig(BaseModel):
    """Who decides whether an answer is misdirected: the rules, or an LLM (rules on failure)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["rule", "llm"] = "rule"
    endpoint: EndpointConfig | None = None
    prompt: str | None = Field(default=None, description="LLM judge template (default: the "
                               "built-in one); needs {answer} and {target}.")

    @model_validator(mode="after")
    def _endpoint_for_llm(self) -> JudgeConfig:
        if self.kind == "llm" and self.endpoint is None:
            raise ValueError("judge kind 'llm' needs an endpoint")
        return self


class MedFocusLeakConfig(AttackConfig):
    kind: Literal["medfocusleak"] = "medfocusleak"
    splits: list[str] = Field(default_factory=lambda: ["test"], min_length=1,
                              description="Splits whose studies are attacked.")
    modalities: list[str] | None = Field(
        default=None, description="Only studies of these modality codes (none: all).")
    fraction: float | dict[str, float] = Field(
        default=1.0, description="Share of the wanted studies attacked, chosen by a stable "
        "hash of the study id (the same in every shard and run): one number, or one per "
        "modality code (codes not named: all).")
    targets_per_sample: int = Field(default=1, ge=1, le=20,
                                    description="Target findings per study (the paper: 5).")
    max_edits: int = Field(default=2, ge=1, le=4, description="Edits per target at most.")
    rewriter: RewriterConfig | None = Field(
        default=None, description="An LLM writes the targets (none: the rules).")
    surrogates: list[ClipSpec] = Field(min_length=1, description="The open_clip ensemble.")
    attack: AttackSettings = Field(default_factory=AttackSettings,
                                   description="ε, step size, steps, optimiser, λ_attn, ...")
    baseline: bool = Field(default=True, description="Also make m_attack rows: the same "
                           "ensemble, ε and steps, unmasked (M-Attack).")
    mask_from: list[MaskSource] = Field(
        default_factory=lambda: ["source", "saliency", "ground_truth"], min_length=1,
        description="Where the diagnostic mask comes from, in order of preference.")
    victims: list[VlmSpec] = Field(default_factory=list, description="Models that answer.")
    prompt: str = Field(default=DEFAULT_PROMPT, description="The question per image "
                        "({modality} is filled in); a victim's own prompt_template, when not "
                        "the default, wins.")
    similarity_model: OpenClipEncoderSpec | None = Field(
        default=None, description="AvgSim's image encoder; must not be a surrogate (none: "
        "no AvgSim).")
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    batch_size: int = Field(default=8, ge=1, le=1024, description="Images per attack batch.")
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("mask_from")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"mask_from lists a source twice: {v}")
        return v

    @field_validator("fraction")
    @classmethod
    def _share(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        for key, share in (v.items() if isinstance(v, dict) else [("fraction", v)]):
            if not 0.0 < share <= 1.0:
                raise ValueError(f"{key}: a share must be in (0, 1], got {share}")
        return {k.upper(): x for k, x in v.items()} if isinstance(v, dict) else v

    @field_validator("victims")
    @classmethod
    def _distinct_victims(cls, v: list) -> list:
        return distinct_names(v)

    @model_validator(mode="after")
    def _check(self) -> MedFocusLeakConfig:
        if not self.attack.masked:
            raise ValueError("attack.masked must stay true: the unmasked M-Attack rows are "
                             "`baseline: true`")
        sim = self.similarity_model
        if sim is not None and any(_same_model(sim, s) for s in self.surrogates):
            raise ValueError(f"similarity_model {sim.model} ({sim.pretrained}) is one of the "
                             "surrogates: AvgSim must come from an independent encoder")
        return self


def _weights(pretrained: str | None) -> str | None:
    from pathlib import Path

    if pretrained is None or pretrained.startswith("local-dir:"):
        return pretrained
    return str(Path(pretrained).expanduser().resolve())


def _same_model(sim: OpenClipEncoderSpec, surrogate: ClipSpec) -> bool:
    """The same architecture and the same weights file (paths resolved)."""
    return sim.model == surrogate.model and _weights(sim.pretrained) == _weights(
        surrogate.pretrained)
