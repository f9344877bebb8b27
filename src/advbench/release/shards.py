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


@dataclass(frozen=True)
class RowFailure:
    """A row that does not fit the config's schema: it fails its input, not the shard."""

    id: str
    message: str


@dataclass(frozen=True)
class WrittenShard:
    path: Path
    rows: int
    sha256: str
    bytes: int


class ShardWriter:
    """Write one Parquet shard a row group at a time, so memory stays flat in the shard size.

    Rows wait in ``add`` until ``flush`` writes them as one row group (the caller flushes once
    per batch of studies). A batch converts to Arrow in one call, ten times faster than row by
    row; only when that fails are its rows converted one by one, and those that do not fit are
    left out and returned. The file is written under a temporary name and renamed on
    ``close``; a shard with no rows writes no file (readers refuse zero-row Parquet files).
    """

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.rows = 0
        self._pending: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def add(self, row: dict[str, Any]) -> None:
        self._pending.append(row)

    def flush(self) -> list[RowFailure]:
        """Write the waiting rows as one row group; return those that did not fit."""
        rows, self._pending = self._pending, []
        if not rows:
            return []
        failures: list[RowFailure] = []
        try:
            batch = pa.RecordBatch.from_pylist(rows, schema=self.schema)
        except _CONVERSION_ERRORS:
            good = []
            for row in rows:
                try:
                    good.append(pa.RecordBatch.from_pylist([row], schema=self.schema))
                except _CONVERSION_ERRORS as exc:
                    failures.append(RowFailure(str(row.get("id")), f"row {row.get('id')!r} "
                                               f"does not fit the schema: {exc}"))
            if not good:
                return failures
            batch = pa.Table.from_batches(good).combine_chunks().to_batches()[0]
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        self._writer.write_batch(batch, row_group_size=batch.num_rows)
        self.rows += batch.num_rows
        return failures

    def close(self) -> WrittenShard | None:
        """Finish the file and move it into place; ``None`` when no row was written.
        Rows still waiting must have been flushed (their failures would be lost here)."""
        if self._pending:
            raise RuntimeError(f"{len(self._pending)} rows of {self.path} were never flushed")
        try:
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
        self._pending = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._tmp.unlink(missing_ok=True)


_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
