"""What every attack provides: a config block, a plan of cases, and a run that makes them.

An entry of the build config's ``attacks:`` list names a registered kind; its rows go to the
release config of the same name (or ``name:``). The pipeline hands an attack the accepted
studies of a shard in batches, so memory does not grow with the shard:

    cases = attack.plan(studies)         # what to make: targets and provenance, no pixels
    attack.run(cases, cache)             # yields one Sample (accepted) or Outcome per case

Every planned case ends as exactly one outcome, so the config's counts reconcile in the
manifest (planned = accepted + rejected + failed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from advbench.records import Outcome, Sample
from advbench.registry import Registry

if TYPE_CHECKING:
    from advbench.release.clean import AcceptedStudy
    from advbench.release.derived import DerivedConfig
    from advbench.workers import WorkerCache


class AttackConfig(BaseModel):
    """Base of every attack's config block; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_]*$",
        description="Release config name (data/<name>/); default: the kind.",
    )

    def config_name(self) -> str:
        return self.name or self.kind.replace("-", "_")


@dataclass
class Case:
    """One planned derived sample: its id, its parent study and what to make of it."""

    id: str
    study: AcceptedStudy
    kind: str
    target: dict[str, Any] = field(default_factory=dict)

    @property
    def parent_id(self) -> str:
        return self.study.study.id


class Attack(ABC):
    """A registered attack. Subclasses set ``kind``, ``Config`` and ``release_config``."""

    kind: ClassVar[str]
    Config: ClassVar[type[AttackConfig]]
    release_config: ClassVar[type[DerivedConfig]]

    def __init__(self, config: AttackConfig, *, seed: int):
        self.config = config
        self.seed = seed

    @property
    def config_name(self) -> str:
        return self.config.config_name()

    @abstractmethod
    def plan(self, studies: list[AcceptedStudy]) -> list[Case]:
        """The cases to make for these studies (cheap: no pixels, no models)."""

    @abstractmethod
    def run(self, cases: list[Case], cache: WorkerCache) -> Iterator[Sample | Outcome]:
        """Make the cases: one ``Sample`` or one not-accepted ``Outcome`` per case.

        Models come from ``cache`` (loaded once per worker, reused across shards)."""

    def reject(self, case: Case, stage: str, reason: str, message: str) -> Outcome:
        """A case turned away, with its reason; counted under this attack's config."""
        return Outcome(case.id, "rejected", stage, reason, message, case.study.source_index,
                       self.config_name)


ATTACKS: Registry[type[Attack]] = Registry("attack kind")


def distinct_names(specs: list) -> list:
    """A config validator: the victims (or any named specs) of one attack need distinct
    names, since rows and summary tables key their answers by name."""
    names = [s.display_name() for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"victim names must be distinct: {names}")
    return specs
