"""What every demo corpus shares: row counts, seeded random streams, the word lists and JSON-lines output."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import yaml

WORDS_DIR = Path(__file__).resolve().parent / "words"
FEWCLUE_SIZES = {"train_few_all.json": 240, "dev_few_all.json": 80, "test_public.json": 80, "test.json": 40}
CLUE_SIZES = {"train.json": 320, "dev.json": 100, "test.json": 40}
APE_SIZES = {"train": 1500, "valid": 150, "test": 150}
LCCC_SIZES = {"train": 800, "valid": 100, "test": 100}
MIN_ROWS = 8  # floor per file, whatever the scale


@cache
def words(name: str) -> dict[str, Any]:
    """The word lists of ``demo/words/<name>.yaml`` (order matters: the generators draw from them)."""
    with open(WORDS_DIR / f"{name}.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def row_count(base: int, scale: float) -> int:
    return max(MIN_ROWS, int(round(base * scale)))


def rng_for(seed: int, name: str) -> random.Random:
    """One independent, reproducible stream per corpus (str seeds are hashed with SHA-512)."""
    return random.Random(f"zhnlp-demo:{seed}:{name}")


def balanced(rng: random.Random, labels: list, n: int) -> list:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(rows)
