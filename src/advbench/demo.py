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


def ensure_phantoms(root: Path, studies: int, *, console: Console | None = None) -> Path:
    """Reuse the cached demo phantoms when they match; otherwise write them afresh."""
    want = {"studies": studies, "seed": DEMO_SEED, "size": DEMO_SIZE, "reports": "zip",
            "lateral": True, "advbench": __version__}
    marker = root / PHANTOM_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text("utf-8")) == want:
                if console:
                    console.print(f"using cached phantoms in {root}")
                return root
        except json.JSONDecodeError:
            pass
    if root.exists():
        shutil.rmtree(root)
    write_phantoms(root, studies, seed=DEMO_SEED, size=DEMO_SIZE, console=console)
    return root


def demo_config_data() -> dict[str, Any]:
    text = resources.files("advbench.data").joinpath("demo.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def demo_config(phantoms: Path, output: Path, *, models: bool = True) -> BuildConfig:
    """The bundled demo config, pointed at a phantom folder and an output folder.

    ``models=False`` leaves out the attacks' victims, image checks and PGD baseline: the demo
    models take minutes to train at first use, which a test must not spend."""
    data = demo_config_data()
    data["output"] = str(Path(output).resolve())
    data["sources"][0]["root"] = str(Path(phantoms).resolve())
    if not models:
        for attack in data.get("attacks") or []:
            for key in ("victims", "image_check", "pgd"):
                attack.pop(key, None)
    return parse_config(data, where="advbench/data/demo.yaml")


def train_demo_models(config: BuildConfig, console: Console | None = None) -> list[dict]:
    """Train (or find cached) every demo model the config names, before the build's workers
    start, so the first run says what it is doing; their held-out figures, one per model."""
    from advbench.models.demo import ensure_trained

    specs = []
    for attack in config.attacks:
        specs += list(getattr(attack, "victims", []) or [])
        check = getattr(attack, "image_check", None)
        if check is not None:
            specs.append(check.model)
    figures = []
    for spec in specs:
        if spec.kind == "demo":
            trained = ensure_trained(spec.recipe, log=console.print if console else None)
            figures.append(trained.metrics)
    return figures
