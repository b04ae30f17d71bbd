"""Streaming row input and output with an explicit bad-row policy.

Every rejected row is either fatal (``on_bad_rows: fail``, the default) or written
to a quarantine JSON-lines file and counted (``on_bad_rows: skip``). Rows dropped
by a filtering rule (duplicates, length limits, unverifiable answers) are always
recorded the same way, so nothing disappears silently.

Bounded work per row: a line is read at most ``MAX_LINE_BYTES`` at a time (a longer one is
a bad row ``line too long``, skipped without ever being held whole), so every parser and
regex downstream sees a bounded input. A UTF-8 byte order mark at the start of a file is
removed, the same way in every reader. :meth:`RowPolicy.check_split` fails a split that
kept no rows, or whose bad-row ratio under ``skip`` is above ``max_bad_ratio``.
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
MAX_LINE_BYTES = 256 << 10  # one JSON-lines row or text dialogue; longer is a bad row (real: < 6 KB)
UTF8_BOM = b"\xef\xbb\xbf"

# Counting key of the most common bad-row reason -> the likely cause, for check_split.
LIKELY_CAUSES = {
    "invalid_utf-8": "not UTF-8: wrong encoding (e.g. GBK)?",
    "malformed_json": "not JSON lines: wrong file or format?",
    "missing_field": "field names differ from the params: wrong task spec or file?",
    "mistyped_field": "field types differ from the params: wrong task spec or file?",
    "unknown_label": "labels differ from the params labels list?",
    "line_too_long": "rows over the size limits: wrong file?",
    "too_long": "fields over the size limits: wrong file?",
}


class BadInputError(UserError):
    """A fatal input problem, always naming the file, the line and the reason."""

    def __init__(self, path: str | Path, line: int, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}")


class InputFileError(UserError, FileNotFoundError):
    """An input path that is missing, a directory, or not a regular file."""


def check_file(path: str | Path, what: str = "input file") -> Path:
    """``path`` if it is a non-empty regular file, else a one-line InputFileError saying why."""
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{what} {p} is a directory, expected a file")
    if not p.exists():
        raise InputFileError(f"{what} {p} not found")
    if not p.is_file():
        raise InputFileError(f"{what} {p} is not a regular file")
    if p.stat().st_size == 0:
        raise InputFileError(f"{what} {p} is empty (0 bytes)")
    return p


class EmptySplitError(UserError):
    """A split that kept no row, or too many bad ones to be the right file."""


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
        self.last_reason: dict[str, str] = {}  # "bad" / "dropped" -> the latest reason
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
        self.last_reason["bad"] = reason
        self._record("bad_row", path, line, reason, raw)

    def drop(self, path: str | Path, line: int, reason: str, raw: Any = None) -> None:
        """A well-formed row removed by a documented rule; always recorded."""
        self.dropped[_reason_key(reason)] += 1
        self.last_reason["dropped"] = reason
        self._record("dropped", path, line, reason, raw)

    def _record(self, kind: str, path, line: int, reason: str, raw: Any) -> None:
        if self._out is not None:
            rec = {"kind": kind, "file": str(path), "line": line, "reason": reason, "raw": raw}
            self._out.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def mark(self) -> tuple[Counter, Counter]:
        """The counts so far; pass it to :meth:`check_split` after reading one file."""
        return Counter(self.bad), Counter(self.dropped)

    def check_split(self, path: str | Path, split: str, kept: int, mark: tuple[Counter, Counter], max_bad_ratio: float) -> None:
        """Fail a split that kept no row, or whose bad-row share is above ``max_bad_ratio``."""
        bad, dropped = self.bad - mark[0], self.dropped - mark[1]
        n_bad, n_dropped = sum(bad.values()), sum(dropped.values())
        if n_bad and n_bad / (n_bad + kept) > max_bad_ratio:
            top, n_top = bad.most_common(1)[0]
            cause = LIKELY_CAUSES.get(top, "wrong file or format?")
            raise EmptySplitError(
                f"{path}: split {split!r}: {n_bad} of {n_bad + kept} rows are bad"
                f" ({n_bad / (n_bad + kept):.0%} > max_bad_ratio {max_bad_ratio:g}; most are {top}: {n_top}): {cause}"
            )
        if kept == 0:
            why = "empty input: no rows" if not n_bad + n_dropped else f"no rows kept ({n_bad} bad, {n_dropped} dropped)"
            raise EmptySplitError(f"{path}: split {split!r}: {why}")

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


def iter_raw_lines(path: str | Path, policy: RowPolicy, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, bytes without the line end); a line over ``max_bytes`` is a bad row.

    At most ``max_bytes + 2`` bytes are held at once: the rest of a too-long line is read and
    dropped in bounded pieces. A UTF-8 byte order mark at the file start is removed.
    """
    with open(check_file(path), "rb") as fh:
        line_no = 0
        while True:
            raw = fh.readline(max_bytes + 2)
            if not raw:
                return
            line_no += 1
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]
            size = len(raw)
            while not raw.endswith(b"\n") and size >= max_bytes + 2:  # skip the rest, piece by piece
                raw = fh.readline(1 << 20)
                if not raw:
                    break
                size += len(raw)
            raw = raw.rstrip(b"\r\n")
            if size > max_bytes + 2 or len(raw) > max_bytes:
                policy.reject(path, line_no, f"line too long: over {max_bytes:,} bytes (MAX_LINE_BYTES)", None)
                continue
            yield line_no, raw


def iter_text_lines(path: str | Path, policy: RowPolicy, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for each non-blank line; bad UTF-8 is a bad row."""
    for line_no, raw in iter_raw_lines(path, policy, max_bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            policy.reject(path, line_no, f"invalid utf-8: byte {err.start}", raw[:100].hex())
            continue
        if text.strip():
            yield line_no, text


def iter_json_lines(path: str | Path, policy: RowPolicy, max_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each JSON-lines row; malformed rows go to the policy."""
    for line_no, text in iter_text_lines(path, policy, max_bytes):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            policy.reject(path, line_no, f"malformed json: {err.msg} at column {err.colno}", text[:500])
            continue
        except RecursionError:
            policy.reject(path, line_no, "malformed json: nested too deeply", text[:500])
            continue
        except ValueError as err:  # e.g. an integer of more than 4300 digits
            policy.reject(path, line_no, f"malformed json: {str(err)[:120]}", text[:500])
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
