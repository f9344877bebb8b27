"""What every derived config's rows share: provenance, lossless pixels, an optional mask.

A derived row points at its parent (a ``clean`` row, by id) and holds its own pixels as PNG.
Each config adds its own text and fields columns (``text_features``, ``own_features``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from advbench.images import encode_png, png_size
from advbench.records import Sample
from advbench.release.configs import ReleaseConfig, SummaryTable

if TYPE_CHECKING:
    import datasets
    import duckdb


class DerivedConfig(ReleaseConfig):
    """Base of configs whose rows are ``Sample``s made from accepted studies."""

    derived = True

    def text_features(self) -> dict[str, Any]:
        """Text columns (keys of ``Sample.text``); strings, may be null."""
        return {}

    def own_features(self) -> dict[str, Any]:
        """The config's own columns (keys of ``Sample.fields``)."""
        return {}

    def features(self) -> datasets.Features:
        from datasets import Features, Image, Value

        text = Value("string")
        return Features({
            "id": text,
            "parent_id": text,
            "config": text,
            "kind": text,
            "modality": text,
            "body_part": text,
            "image": Image(),
            "mask": Image(),
            "width": Value("int32"),
            "height": Value("int32"),
            **self.text_features(),
            **self.own_features(),
        })

    def row(self, record: Sample) -> dict[str, Any]:
        image = encode_png(record.image)
        width, height = png_size(image)
        mask = None if record.mask is None else {
            "bytes": encode_png(record.mask), "path": f"{record.id}-mask.png"}
        unknown = (set(record.text) - set(self.text_features())) | (
            set(record.fields) - set(self.own_features()))
        if unknown:
            raise ValueError(f"sample {record.id} has fields that config {self.name!r} does "
                             f"not declare: {', '.join(sorted(unknown))}")
        return {
            "id": record.id,
            "parent_id": record.parent_id,
            "config": record.config,
            "kind": record.kind,
            "modality": record.modality,
            "body_part": record.body_part,
            "image": {"bytes": image, "path": f"{record.id}.png"},
            "mask": mask,
            "width": width,
            "height": height,
            **{k: record.text.get(k) for k in self.text_features()},
            **{k: record.fields.get(k) for k in self.own_features()},
        }

    def summary(self, con: duckdb.DuckDBPyConnection, rows: str) -> list[SummaryTable]:
        pairs = con.sql(f"SELECT kind, modality, count(*) FROM {rows} GROUP BY 1, 2 "
                        "ORDER BY 1, 2").fetchall()
        return [SummaryTable("samples per kind and modality", ["kind", "modality", "samples"],
                             [list(p) for p in pairs])]
