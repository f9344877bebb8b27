"""The embedded demo: phantoms in the MIMIC-CXR-JPG layout, built with a bundled config."""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from advbench import __version__
from advbench.config import BuildConfig, parse_config
from advbench.sources.base import PHANTOM_MARKER

if TYPE_CHECKING:
    from rich.console import Console

    from advbench.phantoms import LayoutSummary

DEMO_SEED = 0
DEMO_SIZE = 512
DEMO_PER_MODALITY = 16  # phantoms per synthetic modality (half test)


def write_phantoms(
    out: Path,
    studies: int,
    *,
    seed: int = 0,
    size: int = 512,
    reports: str = "zip",
    lateral: bool = True,
    compress_csv: bool = True,
    console: Console | None = None,
) -> LayoutSummary:
    """Write a phantom MIMIC-CXR-JPG folder with a progress bar and the synthetic-data marker."""
    from rich.progress import Progress

    from advbench.phantoms import write_mimic_layout

    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"phantoms → {out}", total=studies)
        summary = write_mimic_layout(
            out, studies, seed=seed, size=size, reports=reports, lateral=lateral,
            compress_csv=compress_csv, progress=lambda n: progress.update(bar, completed=n),
        )
    marker = {"studies": studies, "seed": seed, "size": size, "reports": reports,
              "lateral": lateral, "advbench": __version__}
    (Path(out) / PHANTOM_MARKER).write_text(json.dumps(marker, indent=2) + "\n", "utf-8")
    return summary


def _reuse(root: Path, want: dict[str, Any], what: str, console: Console | None) -> bool:
    """True when ``root`` holds the data ``want`` describes (its marker says so); else the
    folder is removed, to be written afresh."""
    marker = root / PHANTOM_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text("utf-8")) == want:
                if console:
                    console.print(f"using cached {what} in {root}")
                return True
        except json.JSONDecodeError:
            pass
    if root.exists():
        shutil.rmtree(root)
    return False


def ensure_phantoms(root: Path, studies: int, *, console: Console | None = None) -> Path:
    """Reuse the cached demo phantoms when they match; otherwise write them afresh."""
    want = {"studies": studies, "seed": DEMO_SEED, "size": DEMO_SIZE, "reports": "zip",
            "lateral": True, "advbench": __version__}
    if not _reuse(root, want, "phantoms", console):
        write_phantoms(root, studies, seed=DEMO_SEED, size=DEMO_SIZE, console=console)
    return root


def ensure_modalities(root: Path, *, console: Console | None = None) -> Path:
    """Reuse the cached demo data of the other modalities when it matches; else write it:
    ``root/dicom`` (pydicom's CT and MR files) and ``root/images`` (scikit-image's fundus and
    histology, ultrasound, dermoscopy and mammography phantoms), each with metadata and masks."""
    from advbench.phantoms.modalities import write_modality_demo

    want = {"seed": DEMO_SEED, "per_modality": DEMO_PER_MODALITY, "advbench": __version__}
    if not _reuse(root, want, "modality data", console):
        if console:
            console.print(f"writing the demo's CT, MR, fundus, histology, ultrasound, "
                          f"dermoscopy and mammography data to {root}")
        write_modality_demo(root, seed=DEMO_SEED, per_modality=DEMO_PER_MODALITY)
        (root / PHANTOM_MARKER).write_text(json.dumps(want, indent=2) + "\n", "utf-8")
    return root


def demo_config_data() -> dict[str, Any]:
    text = resources.files("advbench.data").joinpath("demo.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _named(data: Any, key: str) -> list[str]:
    """Every value of ``key`` in nested dicts and lists (each once, in order)."""
    if isinstance(data, dict):
        found = [data[key]] if key in data else []
        return list(dict.fromkeys(found + [n for v in data.values() for n in _named(v, key)]))
    if isinstance(data, list):
        return list(dict.fromkeys(n for v in data for n in _named(v, key)))
    return []


def _fill_demo_clips(data: Any) -> Any:
    """Replace each ``demo_clip: NAME`` with the open_clip fields that load the cached demo
    CLIP and each ``gallery: {demo_gallery: NAME}`` with its gallery folder (paths are known
    before the models are trained; ``train_demo_models`` trains them)."""
    from advbench.models.demo_clip import gallery_folder, open_clip_fields

    if isinstance(data, list):
        return [_fill_demo_clips(v) for v in data]
    if not isinstance(data, dict):
        return data
    if set(data) == {"demo_gallery"}:
        return str(gallery_folder(data["demo_gallery"]))
    out = {k: _fill_demo_clips(v) for k, v in data.items() if k != "demo_clip"}
    if "demo_clip" in data:
        out.update(open_clip_fields(data["demo_clip"]))
    return out


def demo_config(phantoms: Path, output: Path, *, modalities: Path | None = None,
                models: bool = True) -> BuildConfig:
    """The bundled demo config, pointed at a phantom folder, the other modalities' folder
    (``ensure_modalities``) and an output folder.

    Without ``modalities`` the build reads the chest phantoms alone (no ``medfocusleak``).
    ``models=False`` leaves out the attacks' victims, image checks and PGD baseline, and the
    ``medfocusleak`` config (its surrogates are models): the demo models take minutes to train
    at first use, which a test must not spend."""
    data = demo_config_data()
    data["output"] = str(Path(output).resolve())
    sources = data["sources"]
    sources[0]["root"] = str(Path(phantoms).resolve())
    if modalities is None:
        data["sources"] = sources[:1]
    else:
        for source in sources[1:]:
            source["root"] = str((Path(modalities) / source["root"]).resolve())
    attacks = data.get("attacks") or []
    if modalities is None or not models:
        attacks = [a for a in attacks if a["kind"] != "medfocusleak"]
    if not models:
        for attack in attacks:
            for key in ("victims", "image_check", "pgd"):
                attack.pop(key, None)
    data["attacks"] = _fill_demo_clips(attacks)
    return parse_config(data, where="advbench/data/demo.yaml")


def train_demo_models(config: BuildConfig, console: Console | None = None) -> list[str]:
    """Train (or find cached) every demo model the config names, before the build's workers
    start, so the first run says what it is doing; a line of held-out figures per model."""
    from advbench.models.demo import ensure_trained
    from advbench.models.demo_clip import ensure_clip, ensure_gallery

    log = console.print if console else None
    specs = []
    for attack in config.attacks:
        specs += [v for v in getattr(attack, "victims", []) or [] if v.kind == "demo"]
        check = getattr(attack, "image_check", None)
        if check is not None and check.model.kind == "demo":
            specs.append(check.model)
    lines = []
    for spec in specs:
        m = ensure_trained(spec.recipe, log=log).metrics
        aurocs = ", ".join(f"{c} {v:.3f}" for c, v in m["auroc"].items() if v is not None)
        lines.append(f"demo victim {m['victim']}: held-out label accuracy "
                     f"{m['label_accuracy']:.3f}, mean AUROC {m['mean_auroc']:.3f} ({aurocs})")
    if any(a.kind == "medfocusleak" for a in config.attacks):
        attacks = demo_config_data().get("attacks")
        galleries = _named(attacks, "demo_gallery")
        for name in dict.fromkeys(_named(attacks, "demo_clip") + galleries):
            lines.append(describe_clip(ensure_clip(name, log=log).metrics))
        for name in galleries:
            ensure_gallery(name, log=log)
    return lines


def describe_clip(m: dict[str, Any]) -> str:
    """One line of a demo CLIP's held-out figures (chance in brackets)."""
    parts = [f"modality {m['zero_shot_modality']['accuracy']:.2f} (1/8)",
             f"retrieval top-5 {m['retrieval']['top5']:.2f}"]
    if "lesion_pairs" in m:
        parts.append(f"finding vs none {m['lesion_pairs']['accuracy']:.2f} (1/2)")
    if "edit_check" in m:
        parts.append(f"truth vs edited findings {m['edit_check']['accuracy']:.2f} (1/2)")
    return f"demo CLIP {m['model']}: held-out " + ", ".join(parts)
