"""Demo CLIP surrogates: small open_clip models trained on phantom image–findings pairs of all
eight demo modalities at first use, then cached.

MedFocusLeak transfers its perturbation from an ensemble of CLIP surrogates and scores
imperceptibility with an independent CLIP. The demo has no internet and no real weights, so it
trains its own from scratch, on generated pairs only (the few bundled real images are attacked,
never trained on): chest X-ray phantoms with their report's findings and impression, and the
CT, MR, ultrasound, dermoscopy, mammography, fundus and histology phantoms with their findings.
Recipes are data (``demo_clip_recipes.yaml``): an open_clip model config, epochs, learning
rate. A trained model lives in the cache under the hash of its recipe, the data spec, the
prompt templates and ``TRAINING_VERSION``, as an open_clip config JSON (``<name>.json``) and a
state dict, so it loads like any open_clip model (``TrainedClip.load``); its held-out figures
are written next to it (``metrics.json``): an untrained surrogate would make every attack
figure meaningless.

Captions are the findings text alone (``clip_text``), as the attack's target texts, the
zero-shot victim's candidates and the retrieval gallery are, so all speak the same language.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from advbench.models.cache import file_lock, spec_hash, train_once
from advbench.paths import cache_dir

TRAINING_VERSION = 3  # bump when the code changes what a recipe produces (data or training)
MODALITIES = ("XR", "CT", "MR", "US", "DMS", "MG", "OP", "SM")
WEIGHTS = "open_clip_model.pt"
# modality -> (phantom module, generator name, the kind without a finding or None: no pairs)
_GENERATORS = {
    "CT": ("cross_section", "ct", "none"), "MR": ("cross_section", "mr", "none"),
    "US": ("modalities", "ultrasound", None), "DMS": ("modalities", "dermoscopy", None),
    "MG": ("modalities", "mammography", None), "OP": ("photographs", "fundus", "none"),
    "SM": ("photographs", "histology", "normal"),
}


@cache
def recipes() -> dict[str, Any]:
    """``demo_clip_recipes.yaml``: prompts, data spec and model recipes, read once."""
    text = resources.files("advbench.models").joinpath("demo_clip_recipes.yaml").read_text(
        "utf-8")
    return yaml.safe_load(text)


# -- texts ----------------------------------------------------------------------------------

def modality_name(modality: str) -> str:
    """The words a prompt uses for a modality code (``XR`` -> ``chest X-ray``); an unknown
    code is used as given."""
    return recipes()["prompts"]["names"].get(modality.strip().upper(), modality.strip())


def clip_text(modality: str, findings: str) -> str:
    """The text a demo CLIP pairs with an image of ``modality`` (a code such as ``CT``) whose
    findings are ``findings``, by the recipes' template (the findings, whitespace collapsed;
    ``{modality}`` in the template is the modality's name). Training uses it for every
    caption and hard negative."""
    template = recipes()["prompts"]["text"]
    return template.format(modality=modality_name(modality), findings=" ".join(findings.split()))


def modality_prompt(modality: str) -> str:
    """The zero-shot prompt naming a modality (``"a CT image"``)."""
    return recipes()["prompts"]["modality"].format(modality=modality_name(modality))


# -- data -----------------------------------------------------------------------------------

def fit_image(image: np.ndarray, size: int) -> np.ndarray:
    """``size`` × ``size`` × 3 uint8 as open_clip's preprocessing sees an image: the shorter
    side resized to ``size`` (bicubic), the centre cropped; grey repeated to three channels."""
    from PIL import Image

    pil = Image.fromarray(image).convert("RGB")
    w, h = pil.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    pil = pil.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)), np.uint8)


def report_text(report: Any) -> str:
    """A chest phantom report's findings and impression as one text, as the attack reads a
    chest radiograph report (``attacks.medfocusleak.texts.findings_of``)."""
    return " ".join(f"{report.findings} {report.impression}".split())


def render_cases(modality: str, seed: int, start: int, stop: int, size: int,
                 render_size: int, pairs: bool = False) -> dict[str, Any]:
    """Phantoms ``start``..``stop`` of ``modality``: images (uint8, n × size × size × 3) and
    findings; with ``pairs``, for each case with a finding where the generator can, the same
    case without it (``pair_of``: the case's position, ``pair_images``, ``pair_findings``).
    Case ``i`` is a pure function of (modality, seed, i), so processes render chunks alike."""
    images, findings, pair_of, pair_images, pair_findings = [], [], [], [], []
    for j, i in enumerate(range(start, stop)):
        if modality == "XR":
            from advbench.phantoms.rendering import render
            from advbench.phantoms.report import write_report
            from advbench.phantoms.study import generate_study

            study = generate_study(i, seed=seed, size=size)
            images.append(fit_image(study.image, size))
            findings.append(report_text(study.report))
            if pairs and study.scene.findings:
                clear = study.scene.with_findings(())
                pair_of.append(j)
                pair_images.append(fit_image(render(clear, size), size))
                pair_findings.append(report_text(
                    write_report(clear, np.random.default_rng([seed, i, 1]))))
            continue
        module, name, normal = _GENERATORS[modality]
        gen = _generator(module)
        extra = {} if module == "modalities" else {"size": render_size}
        case = gen(name, i, seed=seed, **extra)
        images.append(fit_image(case.image, size))
        findings.append(case.findings)
        if pairs and normal and case.attributes["present"]:
            other = gen(name, i, seed=seed, kind=normal, **extra)
            pair_of.append(j)
            pair_images.append(fit_image(other.image, size))
            pair_findings.append(other.findings)
    empty = np.zeros((0, size, size, 3), np.uint8)
    return {"images": np.stack(images) if images else empty, "findings": findings,
            "pair_of": pair_of, "pair_images": np.stack(pair_images) if pair_images else empty,
            "pair_findings": pair_findings}


def _generator(module: str) -> Callable[..., Any]:
    from importlib import import_module

    return import_module(f"advbench.phantoms.{module}").generate_case


def _render_chunk(args: tuple) -> tuple[str, dict[str, Any]]:
    return args[0], render_cases(*args)


@dataclass
class PairSet:
    """Image–findings pairs of several modalities; ``pairs`` (held-out only): with/without
    finding pairs as (index into this set, image without, findings without)."""

    images: np.ndarray
    findings: list[str]
    modalities: list[str]
    pair_of: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    pair_images: np.ndarray | None = None
    pair_findings: list[str] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [clip_text(m, f) for m, f in zip(self.modalities, self.findings, strict=True)]


def make_pairs(n: int, seed: int, size: int, render_size: int, *, pairs: bool = False,
               executor: Executor | None = None) -> PairSet:
    """``n`` pairs of every modality (seeded), rendered in chunks by ``executor`` (a process
    pool) or here."""
    chunk = max(8, -(-n // 4))
    jobs = [(m, seed, a, min(a + chunk, n), size, render_size, pairs)
            for m in MODALITIES for a in range(0, n, chunk)]
    parts = list(executor.map(_render_chunk, jobs)) if executor else map(_render_chunk, jobs)
    images, findings, modalities, pair_of, pair_images, pair_findings = [], [], [], [], [], []
    for modality, part in parts:
        offset = sum(len(x) for x in images)
        pair_of += [offset + j for j in part["pair_of"]]
        images.append(part["images"])
        findings += part["findings"]
        modalities += [modality] * len(part["images"])
        pair_images.append(part["pair_images"])
        pair_findings += part["pair_findings"]
    return PairSet(np.concatenate(images), findings, modalities, np.asarray(pair_of, int),
                   np.concatenate(pair_images), pair_findings)


def _data(data: dict[str, Any]) -> tuple[PairSet, PairSet]:
    """Training and held-out pairs, cached once for every recipe with the same data spec."""
    key = spec_hash({"data": data, "version": TRAINING_VERSION})
    path = cache_dir() / "models" / "demo-clip" / f"clip-data-{key}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        if not path.is_file():
            from advbench.workers import default_workers, process_pool

            workers = min(default_workers(), 8)
            small = data["per_modality"] * len(MODALITIES) < 64
            args = (data["size"], data["render_size"])
            with (nullcontext() if workers <= 1 or small else process_pool(workers)) as ex:
                train = make_pairs(data["per_modality"], data["seed"], *args, executor=ex)
                held = make_pairs(data["heldout"], data["seed"] + 1, *args, pairs=True,
                                  executor=ex)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez_compressed(
                tmp, xtr=train.images, ftr=np.asarray(train.findings),
                mtr=np.asarray(train.modalities), xte=held.images, fte=np.asarray(held.findings),
                mte=np.asarray(held.modalities), pof=held.pair_of, pim=held.pair_images,
                pft=np.asarray(held.pair_findings, dtype=str))
            tmp.replace(path)
    with np.load(path) as z:
        train = PairSet(z["xtr"], z["ftr"].tolist(), z["mtr"].tolist())
        held = PairSet(z["xte"], z["fte"].tolist(), z["mte"].tolist(), z["pof"], z["pim"],
                       z["pft"].tolist())
    return train, held


# -- the models -----------------------------------------------------------------------------

@dataclass
class TrainedClip:
    """A trained demo CLIP: its open_clip config JSON, weights and held-out figures."""

    name: str
    folder: Path
    config_json: Path
    weights: Path
    metrics: dict[str, Any]

    def load(self, device: str = "cpu") -> tuple[Any, Any, Any]:
        """(model in eval mode, preprocessing transform, tokenizer), through open_clip as a
        real CLIP is loaded: the config registered, the weights file as ``pretrained``."""
        from advbench.models.clip import load_open_clip

        return load_open_clip(self.name, str(self.weights), self.config_json, device)


def recipe_key(name: str) -> tuple[dict[str, Any], str]:
    """A model's full spec (recipe, data, prompts, version) and its 12-digit hash."""
    book = recipes()
    if name not in book["models"]:
        raise KeyError(f"unknown demo CLIP {name!r}; known: {', '.join(sorted(book['models']))}")
    spec = {"model": book["models"][name], "data": book["data"], "prompts": book["prompts"],
            "training_version": TRAINING_VERSION}
    return spec, spec_hash(spec)


def clip_folder(name: str) -> Path:
    """Where the demo CLIP ``name`` is (or will be) cached: known before it is trained."""
    _, digest = recipe_key(name)
    return cache_dir() / "models" / "demo-clip" / f"{name}-{digest}"


def open_clip_fields(name: str) -> dict[str, str]:
    """The ``model``, ``pretrained`` and ``model_config_file`` fields that load the demo CLIP
    ``name`` through open_clip (a ``ClipSpec`` or encoder config), trained or not yet."""
    folder = clip_folder(name)
    return {"model": name, "pretrained": str(folder / WEIGHTS),
            "model_config_file": str(folder / f"{name}.json")}


def ensure_clip(name: str, *, log: Callable[[str], None] | None = None) -> TrainedClip:
    """The demo CLIP ``name``, trained now if its recipe has no cached model."""
    spec, _ = recipe_key(name)
    folder = clip_folder(name)
    metrics = train_once(folder, lambda: _train(name, spec, folder),
                         what=f"demo CLIP {name}", log=log)
    return TrainedClip(name, folder, folder / f"{name}.json", folder / WEIGHTS, metrics)


def gallery_folder(name: str) -> Path:
    """Where the retrieval gallery embedded by the demo CLIP ``name`` is cached."""
    folder = clip_folder(name)
    return folder.with_name(f"gallery-{folder.name}")


def ensure_gallery(name: str, *, log: Callable[[str], None] | None = None) -> Path:
    """A retrieval gallery of the demo CLIP ``name``: its training pairs (every modality's
    phantoms with their findings) embedded by it, so a retrieval victim answers with the
    findings of the nearest training image. Built once after the model."""
    from advbench.models.retrieval import OpenClipEncoderSpec, build_gallery

    ensure_clip(name, log=log)
    out = gallery_folder(name)
    if (out / "gallery.json").is_file():
        return out
    with file_lock(out.with_name(out.name + ".lock")):
        if not (out / "gallery.json").is_file():
            if log:
                log(f"embedding the retrieval gallery of {name} (first use; cached in {out})")
            train, _ = _data(recipe_key(name)[0]["data"])
            spec = OpenClipEncoderSpec(**open_clip_fields(name), device="cpu", batch_size=256)
            build_gallery(spec, list(zip(train.images, train.findings, strict=True)), out)
    return out


def normalise(x_uint8: Any) -> Any:
    """uint8 N × H × W × 3 -> float N × 3 × H × W, normalised as open_clip's preprocessing."""
    import torch
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = x_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _augment(x: Any, gen: Any) -> Any:
    """Random zoom (crops of 80–100 % of the side, anywhere) and exposure: the attack feeds
    crops. Never a flip: laterality is in the text."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    scale = torch.empty(n).uniform_(0.8, 1.0, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gain = torch.empty(n, 1, 1, 1).uniform_(0.9, 1.1, generator=gen)
    return x * gain


def _train(name: str, spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    import open_clip
    import torch
    import torch.nn.functional as F

    recipe = spec["model"]
    t0 = time.perf_counter()
    train, held = _data(spec["data"])
    data_seconds = time.perf_counter() - t0
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config_json = tmp / f"{name}.json"
    config_json.write_text(json.dumps(recipe["config"], indent=1), "utf-8")
    open_clip.add_model_config(config_json)
    started = time.perf_counter()
    torch.manual_seed(recipe["seed"])
    gen = torch.Generator().manual_seed(recipe["seed"])
    model = open_clip.create_model(name)  # random initialisation, nothing downloaded
    tokenizer = open_clip.get_tokenizer(name)
    # captions: every distinct text once, then the modality prompts, then the hard negatives
    captions, caption_of = np.unique(np.asarray(train.texts), return_inverse=True)
    prompts = [modality_prompt(m) for m in MODALITIES]
    prompt_of = np.asarray([len(captions) + MODALITIES.index(m) for m in train.modalities])
    negatives, negative_of = hard_negatives(train, recipe.get("hard_negatives", 0),
                                            recipe["seed"])
    negative_of = np.where(negative_of >= 0, negative_of + len(captions) + len(prompts), -1)
    tokens = tokenizer(captions.tolist() + prompts + negatives)
    caption_of, prompt_of = torch.from_numpy(caption_of), torch.from_numpy(prompt_of)
    if not negative_of.shape[1]:  # no hard negatives: one column of "none"
        negative_of = np.full((len(negative_of), 1), -1)
    negative_of = torch.from_numpy(negative_of)
    negative_count = (negative_of >= 0).sum(1)
    images = normalise(torch.from_numpy(train.images))
    if recipe.get("channels_last", True):  # oneDNN convolutions are faster channels-last on CPU
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["weight_decay"]},
                             {"params": other, "weight_decay": 0.0}],
                            lr=recipe["lr"], betas=(0.9, 0.98), eps=1e-6)
    batch = recipe["batch_size"]
    steps = recipe["epochs"] * -(-len(images) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps,
                                                pct_start=0.1)
    model.train()
    losses = []
    for _ in range(recipe["epochs"]):
        for idx in torch.randperm(len(images), generator=gen).split(batch):
            x = _augment(images[idx], gen)
            use_prompt = torch.rand(len(idx), generator=gen) < recipe["prompt_rate"]
            cid = torch.where(use_prompt, prompt_of[idx], caption_of[idx])
            unique, col = torch.unique(cid, return_inverse=True)  # each text encoded once
            # one of each image's hard negatives, at random (none for a prompt caption)
            pick = (torch.rand(len(idx), generator=gen) * negative_count[idx]).long()
            neg = negative_of[idx, pick]  # pick < count; count 0: column 0, which is -1
            neg = torch.unique(neg[(neg >= 0) & ~use_prompt])
            neg = neg[~torch.isin(neg, unique)]
            img = model.encode_image(x, normalize=True)
            txt = model.encode_text(tokens[torch.cat([unique, neg])], normalize=True)
            # images × (distinct texts, then hard negatives): a negative is a wrong answer for
            # every image, so only the image→text side sees it
            logits = model.logit_scale.exp() * img @ txt.T
            hits = F.one_hot(col, len(unique)).float()  # a text may be several images' caption
            positive = logits[:, :len(unique)].T
            loss = (F.cross_entropy(logits, col)
                    + F.cross_entropy(positive, hits.T / hits.sum(0)[:, None])) / 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, np.log(100))
            losses.append(loss.item())
    train_seconds = time.perf_counter() - started
    model = model.eval().to(memory_format=torch.contiguous_format)
    from advbench.models.demo_clip_eval import evaluate

    metrics = evaluate(model, tokenizer, held)
    metrics.update({
        "model": name, "open_clip_config": recipe["config"], "epochs": recipe["epochs"],
        "train_pairs": len(images), "heldout_pairs": len(held.images),
        "final_loss": round(float(np.mean(losses[-max(1, len(losses) // 10):])), 4),
        "data_seconds": round(data_seconds, 1), "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - started - train_seconds, 1)})
    torch.save(model.state_dict(), tmp / WEIGHTS)
    (tmp / "recipe.json").write_text(json.dumps(spec, indent=1), "utf-8")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1), "utf-8")
    tmp.replace(folder)
    open_clip.add_model_config(folder / f"{name}.json")  # the registered path must outlive tmp
    return metrics


def hard_negatives(pairs: PairSet, per_text: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Up to ``per_text`` rule-edited findings per training pair (MedFocusLeak's target rules,
    one edit each: laterality, size, severity, presence, ...) as extra wrong texts in the
    contrastive loss (NegCLIP's hard negatives), so the model learns to tell a finding from
    its edits, which phantom captions alone teach weakly. Returns the negative texts and a
    pairs × ``per_text`` table of indices into them (-1 pads)."""
    from advbench.attacks.medfocusleak.targets import rule_targets

    table = np.full((len(pairs.findings), max(per_text, 0)), -1)
    if per_text <= 0:
        return [], table
    texts: dict[str, int] = {}
    by_caption: dict[tuple[str, str], list[int]] = {}
    for i, (m, f) in enumerate(zip(pairs.modalities, pairs.findings, strict=True)):
        if (m, f) not in by_caption:
            edited = rule_targets(f, m, per_text, seed=seed, max_edits=1)
            by_caption[m, f] = [texts.setdefault(clip_text(m, t.text), len(texts))
                                for t in edited]
        found = by_caption[m, f]
        table[i, :len(found)] = found
    return list(texts), table
