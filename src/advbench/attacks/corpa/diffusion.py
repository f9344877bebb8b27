"""The ``diffusers`` generator: a Stable-Diffusion-family pipeline edits the study's image.

Any image-to-image or inpainting pipeline that ``diffusers`` loads (a hub id in the local
Hugging Face cache, or a local folder; nothing is downloaded): RoentGen- or RadEdit-style
checkpoints. The prompt comes from a template over the target labels (or the adversarial
report); the edit mask from the anatomical zones of the findings that change, or the whole
image. Outside the mask the pixels are the original's, exactly. ``candidates`` images are made
in one batched call, each with its own seed; on CUDA the pipeline runs in half precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from advbench.attacks.corpa.generators import (
    GENERATORS,
    Candidate,
    Generator,
    GeneratorConfig,
    _hints,
    finding_of,
)
from advbench.attacks.corpa.planner import Perturbation
from advbench.concepts.vocabulary import CLASSES
from advbench.images import decode_pixels
from advbench.models.victims import pick_device
from advbench.records import Study

LABEL_WORDS = {"cancer": "lung mass", "pneumonia": "pneumonia",
               "pleural_effusion": "pleural effusion", "cardiomegaly": "cardiomegaly",
               "pneumothorax": "pneumothorax"}

# Where a finding shows on a PA chest film, as (top, bottom) fractions of the image height and
# the lung it lies in ("center" for the heart); the patient's right is the image's left.
_ZONES: dict[str, tuple[float, float, str]] = {
    "pleural_effusion": (0.55, 0.85, "side"), "pneumothorax": (0.12, 0.55, "side"),
    "cardiomegaly": (0.40, 0.80, "center"), "consolidation": (0.35, 0.80, "side"),
    "patchy_opacity": (0.30, 0.80, "side"), "nodule": (0.20, 0.70, "side"),
    "mass": (0.15, 0.70, "side"), "hilar_enlargement": (0.30, 0.55, "hilum"),
    "adenopathy": (0.20, 0.50, "center"), "metastases": (0.15, 0.80, "side"),
    "diaphragm_flattening": (0.55, 0.85, "side"),
}


class DiffusersConfig(GeneratorConfig):
    kind: Literal["diffusers"] = "diffusers"
    model: str = Field(description="A hub id (read from the local cache) or a local folder.")
    mode: Literal["inpaint", "img2img"] = "inpaint"
    prompt: str = Field(default="Chest X-ray showing {findings}.",
                        description="Template; {findings} lists the target labels.")
    prompt_from: Literal["labels", "report"] = "labels"
    mask: Literal["zones", "full"] = Field(
        default="zones", description="Edit the zones of the changed findings, or everything.")
    strength: float = Field(default=0.75, gt=0, le=1)
    steps: int = Field(default=30, ge=1, le=500)
    guidance: float = Field(default=7.5, ge=0)
    resolution: int = Field(default=512, ge=8, multiple_of=8,
                            description="Side the pipeline works at (the result is resized "
                            "back to the image's size).")
    device: Literal["auto", "cpu", "cuda"] = "auto"


@GENERATORS.register("diffusers")
class DiffusersGenerator(Generator):
    kind = "diffusers"
    Config = DiffusersConfig

    def __init__(self, config: DiffusersConfig):
        super().__init__(config)
        self._pipe = None

    def pipeline(self):
        """The pipeline, loaded at first use (once per worker)."""
        if self._pipe is None:
            import torch
            from diffusers import (
                AutoPipelineForImage2Image,
                AutoPipelineForInpainting,
            )

            c = self.config
            device = pick_device(c.device)
            dtype = torch.float16 if device == "cuda" else torch.float32
            auto = AutoPipelineForInpainting if c.mode == "inpaint" else AutoPipelineForImage2Image
            try:
                pipe = auto.from_pretrained(c.model, torch_dtype=dtype, local_files_only=True,
                                            safety_checker=None, requires_safety_checker=False)
            except OSError as exc:
                raise ValueError(f"diffusers model {c.model!r} is neither a local folder nor in "
                                 f"the local Hugging Face cache: {exc}") from None
            pipe.set_progress_bar_config(disable=True)
            self._pipe = pipe.to(device)
            self._device = device
        return self._pipe

    def prompt(self, perturbation: Perturbation, report: str) -> str:
        if self.config.prompt_from == "report":
            return " ".join(report.split())[:300]
        labels = [LABEL_WORDS[c] for c in CLASSES if c in perturbation.positive_labels
                  and c in LABEL_WORDS]
        if not labels:
            return "Normal chest radiograph."
        return self.config.prompt.format(findings=", ".join(labels))

    def edit_mask(self, perturbation: Perturbation, report: str, height: int, width: int
                  ) -> np.ndarray:
        """255 where the image may change: the zones of the findings the target adds or
        removes (on the side the report names), or the whole image."""
        mask = np.zeros((height, width), np.uint8)
        if self.config.mask == "full":
            mask[:] = 255
            return mask
        kinds = finding_of()
        changed = {kinds[c] for c in (*perturbation.added, *perturbation.removed) if c in kinds}
        hints = _hints(report, perturbation)
        for kind in sorted(changed):
            top, bottom, where = _ZONES.get(kind, (0.15, 0.85, "side"))
            side = (hints.get(kind) or (None, None))[0] or "bilateral"
            y0, y1 = int(top * height), int(bottom * height)
            if where == "center":
                spans = [(0.35, 0.70)]
            elif where == "hilum":
                spans = {"right": [(0.30, 0.50)], "left": [(0.50, 0.70)]}.get(
                    side, [(0.30, 0.70)])
            else:  # the patient's right lung is on the image's left
                spans = {"right": [(0.08, 0.52)], "left": [(0.48, 0.92)]}.get(
                    side, [(0.08, 0.92)])
            for x0, x1 in spans:
                mask[y0:y1, int(x0 * width):int(x1 * width)] = 255
        if not mask.any():  # a change no zone covers (the healthy statement): the lungs
            mask[int(0.12 * height):int(0.85 * height), int(0.08 * width):int(0.92 * width)] = 255
        return mask

    def candidates(self, study: Study, perturbation: Perturbation, report: str,
                   seed: int) -> Iterator[Candidate]:
        import torch
        from PIL import Image

        c = self.config
        original = decode_pixels(study.image_bytes)
        if original.ndim == 3:
            original = original.mean(axis=2).astype(original.dtype)
        h, w = original.shape
        mask = self.edit_mask(perturbation, report, h, w)
        pipe = self.pipeline()
        size = (c.resolution, c.resolution)
        image = Image.fromarray(_to_uint8(original)).convert("RGB").resize(size, Image.BICUBIC)
        kwargs: dict[str, Any] = {
            "prompt": [self.prompt(perturbation, report)] * c.candidates,
            "image": [image] * c.candidates, "strength": c.strength,
            "num_inference_steps": c.steps, "guidance_scale": c.guidance,
            "generator": [torch.Generator(device="cpu").manual_seed((seed + n) % 2**63)
                          for n in range(c.candidates)],
            "output_type": "np",
        }
        if c.mode == "inpaint":
            kwargs["mask_image"] = [Image.fromarray(mask).resize(size, Image.NEAREST)] * \
                c.candidates
            kwargs["height"], kwargs["width"] = c.resolution, c.resolution
        out = pipe(**kwargs).images  # N × H × W × 3 in [0, 1]
        inside = mask > 0
        for n, rgb in enumerate(out):
            gray = (np.asarray(rgb, np.float32).mean(axis=2) * 255.0).round().clip(0, 255)
            edited = np.asarray(Image.fromarray(gray.astype(np.uint8)).resize((w, h),
                                                                               Image.BICUBIC))
            pixels = _to_uint8(original).copy()
            pixels[inside] = edited[inside]  # outside the mask: the original, exactly
            yield Candidate(pixels, mask, {
                "variant": n, "model": c.model, "mode": c.mode, "strength": c.strength,
                "steps": c.steps, "guidance": c.guidance, "seed": (seed + n) % 2**63,
                "prompt": kwargs["prompt"][0], "resolution": c.resolution})


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:
        return (a.astype(np.float32) / 257.0).round().astype(np.uint8)
    return a.astype(np.uint8)
