"""``identity``: one sample per study, its pixels re-encoded losslessly, nothing changed.

The worked example of a derived config, and the test of the mechanism: it goes through the
same plan → run → rows → shards → manifest path as the attack families, and its pixels must
equal the source's decoded pixels exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

from advbench.attacks.base import ATTACKS, Attack, AttackConfig, Case
from advbench.images import decode_pixels
from advbench.records import Sample
from advbench.release.configs import RELEASE_CONFIGS
from advbench.release.derived import DerivedConfig

if TYPE_CHECKING:
    from advbench.release.clean import AcceptedStudy
    from advbench.workers import WorkerCache


class IdentityConfig(AttackConfig):
    kind: Literal["identity"] = "identity"


@RELEASE_CONFIGS.register("identity")
class IdentityRelease(DerivedConfig):
    default_name = "identity"
    description = "each accepted study once more, pixels re-encoded losslessly as PNG"

    def text_features(self) -> dict[str, Any]:
        from datasets import Value  # heavy (0.75 s): not at import, which every worker pays

        return {"report": Value("string")}


@ATTACKS.register("identity")
class Identity(Attack):
    kind = "identity"
    Config = IdentityConfig
    release_config = IdentityRelease

    def plan(self, studies: list[AcceptedStudy]) -> list[Case]:
        return [Case(f"{s.study.id}.{self.config_name}.0", s, "identity") for s in studies]

    def run(self, cases: list[Case], cache: WorkerCache) -> Iterator[Sample]:
        for case in cases:
            study = case.study.study
            yield Sample(
                id=case.id, parent_id=case.parent_id, config=self.config_name, kind=case.kind,
                split=study.split, modality=study.modality, body_part=study.body_part,
                image=decode_pixels(study.image_bytes), text={"report": study.report},
            )
