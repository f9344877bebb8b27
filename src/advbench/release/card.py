"""The dataset card: YAML header for the Hub (configs, dataset_info) + a body from templates.

Templates live in the repository's ``data_cards/`` folder (and are shipped in the wheel):
``release.md.j2`` for the card, ``configs/<config>.md.j2`` for each config's section.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE = "release.md.j2"


def template_text(name: str = TEMPLATE) -> str:
    """The repository's ``data_cards/`` (a checkout) first, else the copy in the wheel."""
    repo = Path(__file__).resolve().parents[3] / "data_cards" / name
    if repo.is_file():
        return repo.read_text("utf-8")
    return resources.files("advbench").joinpath("data_cards", name).read_text("utf-8")


def card_header(configs: list[dict[str, Any]], license_id: str) -> str:
    """YAML front matter: ``configs`` (data files per split) and ``dataset_info`` per config.

    A config without rows has no data files and is left out: ``load_dataset`` cannot read it.
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card = DatasetCardData(license=license_id, task_categories=["image-classification"],
                           tags=["medical", "adversarial", "chest-x-ray", "advbench"])
    meta, infos = {}, {}
    for c in (c for c in configs if c["splits"]):
        meta[c["name"]] = {
            "data_files": [
                {"split": s, "path": f"data/{c['name']}/{s}-*"} for s in c["splits"]
            ],
            **({"default": True} if not meta else {}),
        }
        splits = SplitDict()
        for s, rows in c["splits"].items():
            splits.add(SplitInfo(name=s, num_examples=rows, num_bytes=c["bytes"][s]))
        infos[c["name"]] = DatasetInfo(
            features=c["features"], splits=splits, config_name=c["name"],
            dataset_size=sum(c["bytes"].values()),
        )
    MetadataConfigs(meta).to_dataset_card_data(card)
    DatasetInfosDict(infos).to_dataset_card_data(card)
    return f"---\n{card.to_yaml()}\n---\n"


def render_card(context: dict[str, Any], configs: list[dict[str, Any]], license_id: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(template_text),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )
    body = env.get_template(TEMPLATE).render(**context, configs=configs)
    return card_header(configs, license_id) + "\n" + body
