"""Streaming summaries of prepared data: counts, length histograms, markdown reports."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

LENGTH_BINS = (8, 16, 32, 64, 128, 256, 512, 1024)


class SplitStats:
    """Row count, length histogram and label counts of one split, accumulated row by row."""

    def __init__(self, split: str, samples: int = 5):
        self.split = split
        self.rows = 0
        self.chars = 0
        self.lengths = Counter()
        self.labels = Counter()
        self.samples: list[dict] = []
        self._max_samples = samples

    def add(self, length: int, label: str | None = None, row: dict | None = None) -> None:
        self.rows += 1
        self.chars += length
        self.lengths[length_bin(length)] += 1
        if label is not None:
            self.labels[label] += 1
        if row is not None and len(self.samples) < self._max_samples:
            self.samples.append(row)

    def metrics(self) -> dict:
        out = {"rows": self.rows, "mean_chars": round(self.chars / self.rows, 2) if self.rows else 0.0}
        if self.labels:
            out["labels"] = len(self.labels)
            out["majority_share"] = round(max(self.labels.values()) / sum(self.labels.values()), 4)
        return out

    def histogram(self) -> list[dict]:
        return [{"split": self.split, "max_chars": edge, "rows": self.lengths.get(edge, 0)} for edge in (*LENGTH_BINS, -1)]


def length_bin(length: int) -> int:
    """Upper edge of the bin holding ``length``; -1 for the open last bin."""
    for edge in LENGTH_BINS:
        if length <= edge:
            return edge
    return -1


def markdown_report(title: str, splits: Iterable[SplitStats], rejected: Mapping[str, int]) -> str:
    lines = [f"# {title}", "", "| split | rows | mean chars | labels |", "|---|---:|---:|---:|"]
    splits = list(splits)
    for s in splits:
        lines.append(f"| {s.split} | {s.rows} | {s.metrics()['mean_chars']} | {len(s.labels) or '-'} |")
    lines += ["", "## Rejected and dropped rows", ""]
    lines += [f"- {k}: {v}" for k, v in rejected.items()] or ["- none"]
    for s in splits:
        if s.labels:
            lines += ["", f"## Label counts ({s.split})", ""]
            lines += [f"- {label}: {n}" for label, n in sorted(s.labels.items())]
    return "\n".join(lines) + "\n"
