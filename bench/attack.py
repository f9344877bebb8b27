"""Benchmark of the MedFocusLeak attack: images/s of the batched joint objective
(``run_attack``) against a reference shaped like the released code (``unbatched_reference``:
one image at a time, the square search redone in Python every iteration, one surrogate call
per crop), same settings, same steps, same per-image crop streams; the loss each reaches.

Surrogates: ``tiny`` (CPU) is a tiny random ViT and a tiny random ModifiedResNet open_clip
model; ``real`` is open_clip ViT-B-16 + ViT-B-32 with random weights (they time the same as
trained ones; nothing is downloaded) for a GPU run. Images are synthetic grayscale scans with
an elliptic diagnostic mask.

    .venv/bin/python bench/attack.py [--device auto] [--batch 32] [--steps 20] [--size 224]
                                     [--surrogates tiny|real] [--reference-images N]
                                     [--lambda-attn L] [--global-view] [--truth-weight W]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from advbench.attacks.medfocusleak import crops as C  # noqa: E402
from advbench.attacks.medfocusleak.objective import (  # noqa: E402
    AttackSettings,
    run_attack,
    unbatched_reference,
)
from advbench.models.clip import Surrogate  # noqa: E402
from advbench.models.victims import pick_device  # noqa: E402

TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
TINY = {
    "bench-tiny-vit": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": 2, "width": 64,
                                                       "patch_size": 8, "head_width": 32},
                       "text_cfg": TEXT},
    "bench-tiny-rn": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
                                                      "width": 16, "head_width": 32},
                      "text_cfg": TEXT},
}
REAL = ("ViT-B-16", "ViT-B-32")
TARGETS = ["large left pleural effusion with adjacent atelectasis",
           "moderate right apical pneumothorax", "marked cardiomegaly, stage II",
           "no focal consolidation, pleural effusion is absent"]


def build_surrogates(kind: str, device: str) -> list[Surrogate]:
    """Random-weight open_clip models (the config registered in memory for the tiny ones)."""
    import open_clip
    import torch

    out = []
    if kind == "tiny":
        for name, cfg in TINY.items():
            open_clip.factory._MODEL_CONFIGS[name] = cfg
    for i, name in enumerate(TINY if kind == "tiny" else REAL):
        torch.manual_seed(i)
        model = open_clip.create_model(name, pretrained=None)
        out.append(Surrogate(model, open_clip.get_tokenizer(name), name=name, device=device))
    return out


def synthetic_batch(b: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """b uint8 b×1×size×size scans (smooth body, noise) and their elliptic masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    imgs, masks = [], []
    for _ in range(b):
        cy, cx = rng.uniform(0.35, 0.65, 2)
        ry, rx = rng.uniform(0.12, 0.22, 2)
        body = np.exp(-((yy - 0.5) ** 2 / 0.18 + (xx - 0.5) ** 2 / 0.12))
        lesion = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        img = 0.2 + 0.6 * body + 0.15 * lesion + rng.normal(0, 0.03, (size, size))
        imgs.append(np.clip(img * 255, 0, 255).astype(np.uint8)[None])
        masks.append(lesion)
    return np.stack(imgs), np.stack(masks)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--surrogates", default="tiny", choices=["tiny", "real"])
    ap.add_argument("--reference-images", type=int, default=None,
                    help="images timed with the reference (default: the whole batch)")
    ap.add_argument("--crops", type=int, default=1, help="crops per step")
    ap.add_argument("--lambda-attn", type=float, default=1.0,
                    help="weight of the attention-distraction term")
    ap.add_argument("--global-view", action="store_true",
                    help="add the whole image to each step's crops (the demo's setting)")
    ap.add_argument("--truth-weight", type=float, default=0.0,
                    help="push away from a true-findings text by this weight (demo: 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 for tiny models, torch's otherwise)")
    args = ap.parse_args(argv)

    import torch

    device = pick_device(args.device)
    threads = args.threads or (1 if args.surrogates == "tiny" else torch.get_num_threads())
    torch.set_num_threads(threads)
    surrogates = build_surrogates(args.surrogates, device)
    u8, masks = synthetic_batch(args.batch, args.size)
    x = torch.from_numpy(u8.astype(np.float32) / 255.0)
    texts = [TARGETS[i % len(TARGETS)] for i in range(args.batch)]
    truths = [TARGETS[(i + 1) % len(TARGETS)] for i in range(args.batch)]
    settings = AttackSettings(steps=args.steps, crops_per_step=args.crops,
                              lambda_attn=args.lambda_attn, global_view=args.global_view,
                              truth_weight=args.truth_weight)
    n_ref = min(args.reference_images or args.batch, args.batch)
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "-"
    print(f"device: {device} ({gpu}); cpus: {os.cpu_count()}; torch threads: {threads}; "
          f"surrogates: {', '.join(f'{s.name} ({s.input_size} px)' for s in surrogates)}")
    print(f"images: {args.batch} × 1 × {args.size}²; steps: {args.steps}; crops/step: "
          f"{args.crops}; mask share: {masks.mean():.0%}; reference on {n_ref} image(s)")

    # warm-up (kernels, allocator, autotuning) on 2 images, 2 steps, both paths
    warm = AttackSettings(steps=2)
    run_attack(x[:2], masks[:2], texts[:2], surrogates, warm, device=device)
    unbatched_reference(x[:1], masks[:1], texts[:1], surrogates, warm, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    t0 = time.perf_counter()
    fast = run_attack(x, masks, texts, surrogates, settings, device=device, truth_texts=truths)
    fast_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    t0 = time.perf_counter()
    ref = unbatched_reference(x[:n_ref], masks[:n_ref], texts[:n_ref], surrogates, settings,
                              device=device, truth_texts=truths[:n_ref])
    ref_s = time.perf_counter() - t0

    adv = C.quantise(u8, fast.delta, settings.epsilon, masks[:, None])
    diff = np.abs(adv.astype(int) - u8.astype(int))
    assert diff.max() <= round(settings.epsilon * 255), "L∞ bound broken"
    assert not diff[:, 0][masks].any(), "diagnostic region changed"

    fast_rate, ref_rate = args.batch / fast_s, n_ref / ref_s
    aim = ("cosine to target" if not settings.truth_weight
           else f"cos(target) − {settings.truth_weight:g}·cos(truth)")
    same = slice(0, n_ref)
    rows = [
        ("batched run_attack, images/s", f"{fast_rate:,.2f}"),
        ("unbatched reference, images/s", f"{ref_rate:,.2f}"),
        ("speed-up (batched / reference)", f"{fast_rate / ref_rate:.1f}x"),
        ("batched seconds (whole batch)", f"{fast_s:.2f}"),
        ("reference seconds", f"{ref_s:.2f}"),
        (f"loss, clean → final, batched (first {n_ref})",
         f"{fast.loss_history[0, same].mean():+.4f} → {fast.final_loss[same].mean():+.4f}"),
        ("loss, clean → final, reference",
         f"{ref.loss_history[0].mean():+.4f} → {ref.final_loss.mean():+.4f}"),
        (f"{aim}, clean → final, batched (first {n_ref})",
         f"{fast.similarity_history[0, same].mean():+.4f} → "
         f"{fast.final_similarity[same].mean():+.4f}"),
        (f"{aim}, clean → final, reference",
         f"{ref.similarity_history[0].mean():+.4f} → {ref.final_similarity.mean():+.4f}"),
        ("uint8 L∞ (levels) / mask pixels changed", f"{diff.max()} / 0"),
    ]
    if peak is not None:
        rows.append(("peak GPU memory, batched (GiB)", f"{peak:.2f}"))
    w = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{w}}  value")
    for name, value in rows:
        print(f"{name:<{w}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
