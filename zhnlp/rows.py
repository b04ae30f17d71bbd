"""Streaming row input and output with an explicit bad-row policy.

Every rejected row is either fatal (``on_bad_rows: fail``, the default) or written
to a quarantine JSON-lines file and counted (``on_bad_rows: skip``). Rows dropped
by a filtering rule (duplicates, length limits, unverifiable answers) are always
recorded the same way, so nothing disappears silently.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from zhnlp.errors import UserError

BAD_ROW_POLICIES = ("fail", "skip")


class BadInputError(UserError):
    """A fatal input problem, always naming the file, the line and the reason."""

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


class RowError(ValueError):
    """A problem with one row; the caller knows its file and line."""


class RowPolicy:
    """Routes rejected and dropped rows; counts them by reason."""

    def __init__(self, on_bad_rows: str = "fail", quarantine: str | Path | None = None):
        if on_bad_rows not in BAD_ROW_POLICIES:
            raise ValueError(f"on_bad_rows must be one of {BAD_ROW_POLICIES}, got {on_bad_rows!r}")
        self.on_bad_rows = on_bad_rows
        self.bad = Counter()
        self.dropped = Counter()
        self._path = Path(quarantine) if quarantine else None
        self._out = None
        if self._path:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self._path.open("w", encoding="utf-8")

    def reject(self, path: str | Path, line: int, reason: str, raw: Any = None) -> None:
        """A malformed row: fatal under 'fail', quarantined under 'skip'."""
        if self.on_bad_rows == "fail":
            raise BadInputError(path, line, reason)
        self.bad[_reason_key(reason)] += 1
        self._record("bad_row", path, line, reason, raw)

    def drop(self, path: str | Path, line: int, reason: str, raw: Any = None) -> None:
        """A well-formed row removed by a documented rule; always recorded."""
        self.dropped[_reason_key(reason)] += 1
        self._record("dropped", path, line, reason, raw)

    def _record(self, kind: str, path, line: int, reason: str, raw: Any) -> None:
        if self._out is not None:
            rec = {"kind": kind, "file": str(path), "line": line, "reason": reason, "raw": raw}
            self._out.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def metrics(self) -> dict[str, int]:
        out = {"bad_rows": sum(self.bad.values()), "dropped_rows": sum(self.dropped.values())}
        out.update({f"bad_rows.{k}": v for k, v in sorted(self.bad.items())})
        out.update({f"dropped_rows.{k}": v for k, v in sorted(self.dropped.items())})
        return out

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def __enter__(self) -> "RowPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason_key(reason: str) -> str:
    """The counting key of a reason: the text before the first ':'."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")


def iter_text_lines(path: str | Path, policy: RowPolicy) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for each non-blank line; bad UTF-8 is a bad row."""
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                policy.reject(path, line_no, f"invalid utf-8: byte {err.start}", raw.hex()[:200])
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield line_no, text


def iter_json_lines(path: str | Path, policy: RowPolicy) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each JSON-lines row; malformed rows go to the policy."""
    for line_no, text in iter_text_lines(path, policy):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            policy.reject(path, line_no, f"malformed json: {err.msg} at column {err.colno}", text[:500])
            continue
        if not isinstance(obj, dict):
            policy.reject(path, line_no, f"malformed json: expected an object, got {type(obj).__name__}", text[:500])
            continue
        yield line_no, obj


class ParquetSink:
    """Writes dict rows to Parquet in fixed-size batches, so memory stays flat."""

    def __init__(self, path: str | Path, schema: pa.Schema, batch_rows: int = 8192):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.batch_rows = batch_rows
        self.rows = 0
        self._buf: list[dict] = []
        self._writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    def write(self, row: dict) -> None:
        self._buf.append(row)
        if len(self._buf) >= self.batch_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.schema))
            self.rows += len(self._buf)
            self._buf = []

    def close(self) -> int:
        self._flush()
        self._writer.close()
        return self.rows

    def __enter__(self) -> "ParquetSink":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self._writer.close()
