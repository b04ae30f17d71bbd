"""Token-id shards: the one owner of their Parquet format (written by the encode stage, read by pretraining).

A split is ``<split>-00000.parquet, <split>-00001.parquet, ...`` in a folder, ``shard_rows`` rows
each (the last one shorter; each split has at least one shard, possibly empty), schema

    input_ids: list<int32>   with [CLS]/[SEP]
    word_ids:  list<int32>   only when word boundaries are kept (the column is absent
                             otherwise): -1 for special tokens (and the [SEP] between
                             dialogue turns), one id per jieba word, from 0 in each row
    source:    string        clue | ape210k | lccc | extra:<name>
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def shard_paths(folder: str | Path, split: str) -> list[Path]:
    """``<folder>/<split>-*.parquet`` in name order."""
    return sorted(Path(folder).glob(f"{split}-*.parquet"))


class Row(NamedTuple):
    input_ids: list[int]
    word_ids: list[int] | None
    source: str
    split: str
    window: int  # 0 for a document's first window



def shard_schema(word_boundaries: bool) -> pa.Schema:
    fields = [pa.field("input_ids", pa.list_(pa.int32()), nullable=False)]
    if word_boundaries:
        fields.append(pa.field("word_ids", pa.list_(pa.int32()), nullable=False))
    fields.append(pa.field("source", pa.string(), nullable=False))
    return pa.schema(fields)


def _list_array(lists: Sequence[Sequence[int]]) -> pa.Array:
    lengths = np.fromiter((len(x) for x in lists), dtype=np.int32, count=len(lists))
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


class ShardWriter:
    """Rows of one split into ``<split>-00000.parquet, ...`` of ``shard_rows`` rows each."""

    def __init__(self, out_dir: Path, split: str, schema: pa.Schema, shard_rows: int, flush_rows: int = 8192):
        self.out_dir, self.split, self.schema = out_dir, split, schema
        self.shard_rows, self.flush_rows = shard_rows, flush_rows
        self.shards: list[str] = []
        self.rows = 0
        self._buf: list[Row] = []
        self._writer: pq.ParquetWriter | None = None
        self._in_shard = 0

    def write(self, row: Row) -> None:
        self._buf.append(row)
        if len(self._buf) >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        buf, self._buf = self._buf, []
        while buf:
            if self._writer is None or self._in_shard >= self.shard_rows:
                self._open_next()
            take = buf[: self.shard_rows - self._in_shard]
            buf = buf[len(take) :]
            self._writer.write_table(self._table(take))
            self._in_shard += len(take)
            self.rows += len(take)

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        name = f"{self.split}-{len(self.shards):05d}.parquet"
        self.shards.append(name)
        self._writer = pq.ParquetWriter(self.out_dir / name, self.schema, compression="zstd")
        self._in_shard = 0

    def _table(self, rows: Sequence[Row]) -> pa.Table:
        arrays = [_list_array([r.input_ids for r in rows])]
        if "word_ids" in self.schema.names:
            arrays.append(_list_array([r.word_ids for r in rows]))
        arrays.append(pa.array([r.source for r in rows], type=pa.string()))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def close(self) -> None:
        self._flush()
        if self._writer is None:  # an empty split still gets one (empty) shard with the schema
            self._open_next()
        self._writer.close()
        self._writer = None
