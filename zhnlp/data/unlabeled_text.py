"""Unlabelled text for pretraining: one field of a JSON-lines file (``pretrain_text.<name>``, stage ``prepare_text``).

FewCLUE ships ``unlabeled.json`` per task (``{"sentence": ...}`` lines); any JSON-lines file with a
string field works. Rows keep the file order. A row without the field, or with a non-string value,
is a bad row (``file:line: reason``, or quarantined under ``on_bad_rows: skip``); an empty or
whitespace-only text is dropped and counted, as the other readers drop empty rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa

from zhnlp.config import ConfigError, in_range
from zhnlp.data.rows import MAX_LINE_BYTES, RowPolicy, iter_json_lines

TEXT_SCHEMA = pa.schema([("line", pa.int64()), ("text", pa.string())])
MAX_TEXT_CHARS = 100_000  # one unlabelled text (real FewCLUE rows: < 1,000)


@dataclass
class TextSource:
    """One ``pretrain_text.<name>`` entry."""

    path: str  # a JSON-lines file
    field: str  # the text field of each row
    on_bad_rows: Literal["fail", "skip"] = "fail"
    max_bad_ratio: float = 0.1

    def validate(self, where: str) -> None:
        in_range(f"{where}.max_bad_ratio", self.max_bad_ratio, 0.0, 1.0)
        if not self.path or not self.field:
            raise ConfigError(f"{where}: path and field must be non-empty")


def iter_unlabeled(path: str | Path, field: str, policy: RowPolicy) -> Iterator[dict]:
    """``{"line", "text"}`` rows of one JSON-lines file; bad rows go to the policy."""
    for line, obj in iter_json_lines(path, policy, MAX_LINE_BYTES):
        text = obj.get(field)
        if field not in obj:
            policy.reject(path, line, f"missing field: {field}", obj)
            continue
        if not isinstance(text, str):
            policy.reject(path, line, f"mistyped field: {field}: expected a string, got {type(text).__name__}", obj)
            continue
        if len(text) > MAX_TEXT_CHARS:
            policy.reject(path, line, f"too long: {field} has {len(text)} characters (limit {MAX_TEXT_CHARS})", None)
            continue
        if not text.strip():
            policy.drop(path, line, "empty text", obj)
            continue
        yield {"line": line, "text": text}
