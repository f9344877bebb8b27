"""Release configs: each is one ``data/<name>/`` folder of a release, a registry entry.

A config says what its rows look like (``features``), how a record becomes a row (``row``),
and what its summary shows (``summary``: DuckDB over its own shards, for the CLI and the card).
``clean`` holds the source studies; a *derived* config (``identity`` and the attack families)
holds samples made from the accepted studies of each shard.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from advbench.registry import Registry

if TYPE_CHECKING:
    import datasets
    import duckdb
    import pyarrow as pa


@dataclass
class SummaryTable:
    """A small table shown by the CLI and written into the card."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows}


class ReleaseConfig(ABC):
    """One config of a release. Subclasses set ``default_name``, ``derived`` and
    ``description``; a build may give a derived config another name (``attacks[].name``)."""

    default_name: ClassVar[str]
    derived: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, name: str | None = None):
        self.name = name or self.default_name
        self._schema: pa.Schema | None = None

    @abstractmethod
    def features(self) -> datasets.Features:
        """The Hugging Face features: the Parquet schema and the card's ``dataset_info``."""

    @abstractmethod
    def row(self, record: Any) -> dict[str, Any]:
        """One release row from one record (a loaded study, or a derived sample)."""

    def arrow_schema(self) -> pa.Schema:
        """The Parquet schema, carrying the features in its ``huggingface`` metadata (made
        once: it takes tens of milliseconds, which a shard of 50 studies would feel)."""
        if self._schema is None:
            self._schema = self.features().arrow_schema
        return self._schema

    def summary(self, con: duckdb.DuckDBPyConnection, rows: str) -> list[SummaryTable]:
        """Tables read back from the written shards; ``rows`` is a DuckDB relation (SQL)."""
        return []

    def card_template(self) -> str:
        """The card section's template, under ``data_cards/configs/``."""
        return f"configs/{self.default_name}.md.j2"


RELEASE_CONFIGS: Registry[type[ReleaseConfig]] = Registry("release config")
