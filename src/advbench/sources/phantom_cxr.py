"""Synthetic chest radiograph phantoms, generated in memory (no folder needed).

The same studies as ``advbench phantoms`` writes to disk for a given seed: a study is a pure
function of (index, seed), so any shard task can make its own studies. A phantom is first
encoded as the JPEG ``advbench phantoms`` would write (``jpeg_quality``); the ``image`` option
then applies to it as to any source's file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from advbench.records import Outcome, Study, StudyRef
from advbench.sources.base import (
    SOURCES,
    SPLIT_NAMES,
    SYNTHETIC_LICENSE,
    Source,
    SourceLicense,
    SourcePlan,
    SplitSelection,
)


class PhantomCxrConfig(SplitSelection):
    kind: Literal["phantom-cxr"] = "phantom-cxr"
    studies: int = Field(gt=0, le=1_000_000, description="Number of phantom studies.")
    seed: int | None = Field(
        default=None, ge=0, description="Phantom seed; default: the build's seed."
    )
    size: int = Field(default=512, ge=64, le=4096, description="Image side in pixels.")
    jpeg_quality: int = Field(default=95, ge=50, le=100, description="JPEG quality of images.")


@SOURCES.register("phantom-cxr")
class PhantomCxr(Source):
    kind = "phantom-cxr"
    Config = PhantomCxrConfig
    config: PhantomCxrConfig

    @property
    def phantom_seed(self) -> int:
        return self.seed if self.config.seed is None else self.config.seed

    def license_info(self) -> SourceLicense:
        return SYNTHETIC_LICENSE

    def plan(self) -> SourcePlan:
        from advbench.phantoms import study_ids, study_split

        wanted = self.config.wanted_splits()
        plan = SourcePlan()
        for index in range(self.config.studies):
            split = SPLIT_NAMES[study_split(index, seed=self.phantom_seed)]
            ids = study_ids(index, seed=self.phantom_seed)
            ref = StudyRef(id=ids["dicom_id"], split=split, source_index=self.index,
                           fields={"index": index})
            if split in wanted:
                plan.refs.append(ref)
            else:
                plan.rejected.append(Outcome(ref.id, "rejected", "select", "split_not_selected",
                                             f"split {split!r} not selected", self.index))
        return plan

    def load(self, ref: StudyRef) -> Study:
        from advbench.phantoms import generate_study

        index = ref.fields["index"]
        made = generate_study(index, seed=self.phantom_seed, size=self.config.size)
        image = self.prepare_image(made.jpeg_bytes(quality=self.config.jpeg_quality),
                                   f"phantom {ref.id}")
        subject, study = made.subject_id, made.study_id
        scene = made.scene.to_dict()
        scene["report_concepts"] = dict(made.report.concepts)
        return Study(
            id=ref.id,
            source=self.kind,
            split=ref.split,
            subject_id=subject,
            study_id=study,
            image_id=made.dicom_id,
            view_position=made.view_position,
            image_bytes=image.data,
            image_path=f"files/p{subject[:2]}/p{subject}/s{study}/{made.dicom_id}.jpg",
            width=image.width,
            height=image.height,
            report=made.report.text,
            report_path=f"files/p{subject[:2]}/p{subject}/s{study}.txt",
            chexpert=made.chexpert,
            scene=scene,
            extra={"image_format": image.format},
            modality="XR",
            body_part="chest",
        )
