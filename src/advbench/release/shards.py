"""Parquet shards named as the Hub expects, written as rows come, atomically, with checksums."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def shard_name(split: str, index: int, count: int) -> str:
    """``test-00000-of-00003.parquet``."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


class RowError(Exception):
    """A row that does not fit the config's schema: it fails its input, not the shard."""


@dataclass(frozen=True)
class WrittenShard:
    path: Path
    rows: int
    sha256: str
    bytes: int


class ShardWriter:
    """Write one Parquet shard a row group at a time, so memory stays flat in the shard size.

    Each row is converted on ``add``: one that does not fit the schema raises ``RowError`` and
    is not written. The file is written under a temporary name and renamed on ``close``; a
    shard with no rows writes no file (readers refuse zero-row Parquet files).
    """

    def __init__(self, path: Path, schema: pa.Schema, *, row_group_size: int = 100):
        self.path = path
        self.schema = schema
        self.row_group_size = row_group_size
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def add(self, row: dict[str, Any]) -> None:
        try:
            batch = pa.RecordBatch.from_pylist([row], schema=self.schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            raise RowError(f"row {row.get('id')!r} does not fit the schema: {exc}") from None
        self._pending.append(batch)
        self.rows += 1
        if len(self._pending) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_table(pa.Table.from_batches(self._pending),
                                 row_group_size=self.row_group_size)
        self._pending = []

    def close(self) -> WrittenShard | None:
        """Finish the file and move it into place; ``None`` when no row was written."""
        try:
            self._flush()
            if self._writer is None:
                return None
            self._writer.close()
            self._writer = None
            digest = sha256_file(self._tmp)
            size = self._tmp.stat().st_size
            os.replace(self._tmp, self.path)
            return WrittenShard(self.path, self.rows, digest, size)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop what was written (an error ended the shard)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
