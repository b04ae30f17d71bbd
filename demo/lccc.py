"""The demo LCCC corpus: 2-5 turn dialogues along fixed chains, each turn answering the one before.

Planted defects: every split contains exactly two dialogues that are exact copies of
another dialogue of the same split, and exactly one dialogue with an empty turn (``""``;
in the text files, two adjacent tabs). Apart from these, all dialogues are distinct
across the three splits.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from demo.common import LCCC_SIZES, rng_for, row_count, words

_SHARED, _LCCC = words("shared"), words("lccc")
CITIES, FOODS, TIMES, PLACES = (_SHARED[k] for k in ("cities", "foods", "times", "places"))
WEATHER = _LCCC["weather"]  # weather -> [advice, preparation]
ACTIVITIES, BREAKFASTS, FAVORS, DAYS = (_LCCC[k] for k in ("activities", "breakfasts", "favors", "days"))
LCCC_CHAINS: list[list[list[str]]] = _LCCC["chains"]


def _dialogue_slots(rng: random.Random) -> dict:
    weather = rng.choice(sorted(WEATHER))
    advice, prep = WEATHER[weather]
    return {"city": rng.choice(CITIES), "weather": weather, "advice": advice, "prep": prep,
            "food": rng.choice(FOODS), "time": rng.choice(TIMES), "place": rng.choice(PLACES),
            "activity": rng.choice(ACTIVITIES), "breakfast": rng.choice(BREAKFASTS),
            "favor": rng.choice(FAVORS), "day": rng.choice(DAYS)}


def make_dialogue(rng: random.Random) -> list[str]:
    """2-5 turns of one chain; slot values are shared, so replies echo the context."""
    chain = rng.choice(LCCC_CHAINS)
    slots = _dialogue_slots(rng)
    length = rng.randint(2, 5)
    return [rng.choice(step).format(**slots) for step in chain[:length]]


def spaced(turn: str) -> str:
    """LCCC style: every character separated by one space."""
    return " ".join(ch for ch in turn if not ch.isspace())


def lccc_split(rng: random.Random, n: int, seen: set) -> list[list[str]]:
    """``n - 2`` distinct dialogues (one with an empty turn) plus 2 exact copies, in the LCCC spacing."""
    dialogues = []
    while len(dialogues) < n - 2:
        d = make_dialogue(rng)
        key = tuple(d)
        if key not in seen and (len(dialogues) > 0 or len(d) >= 3):
            seen.add(key)
            dialogues.append(d)
    dialogues[0][1] = ""  # the one dialogue with an empty turn (the first one has >= 3 turns)
    for _ in range(2):  # two exact duplicates, at random positions
        copy = list(dialogues[rng.randrange(1, len(dialogues))])
        dialogues.insert(rng.randrange(len(dialogues) + 1), copy)
    empty = dialogues.pop(next(i for i, d in enumerate(dialogues) if "" in d))
    dialogues.insert(rng.randrange(len(dialogues) + 1), empty)
    return [[spaced(t) for t in d] for d in dialogues]


def write_lccc(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    rng = rng_for(seed, "lccc")
    seen: set = set()
    data = {split: lccc_split(rng, row_count(base, scale), seen) for split, base in LCCC_SIZES.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "dialogues.json").open("w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(data, ensure_ascii=False, indent=0) + "\n")
    counts = {"dialogues.json": sum(len(v) for v in data.values())}
    for split, dialogues in data.items():
        with (out_dir / f"{split}.txt").open("w", encoding="utf-8", newline="\n") as f:
            f.writelines("\t".join(d) + "\n" for d in dialogues)
        counts[f"{split}.txt"] = len(dialogues)
    return counts
