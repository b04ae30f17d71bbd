"""Small, deterministic demo corpora in the official CLUE, Ape210K and LCCC formats (``demo_data`` stage).

The demo corpora let the whole pipeline (tokenizer, tiny BERT pretraining,
finetuning) run end to end in minutes on a laptop and still show real learning:
every label follows from its text, every equation from its problem and every
reply from its context, with enough lexical variety that a tiny model must
generalise rather than memorise.

Everything is drawn from ``random.Random`` streams derived from ``seed`` (one
stream per corpus), so the same seed always gives byte-identical files. The word lists
the generators draw from are data files, ``demo/words/*.yaml``; the generators are
:mod:`demo.clue`, :mod:`demo.reading` (CMRC2018, C3, CHID, CLUENER), :mod:`demo.ape210k`
and :mod:`demo.lccc`. Command line:
``python -m demo --out DIR [--seed N] [--scale X]``.

Layout written by :func:`write_demo_corpora` (row counts at ``scale=1``; ``scale``
multiplies every count, with a floor of ``MIN_ROWS`` rows per file)::

    clue/tnews, iflytek, ocnli, csl, cluewsc   FewCLUE layout
        train_few_all.json 240, dev_few_all.json 80, test_public.json 80 (labelled),
        test.json 40 (unlabelled: id and text fields only); tnews also has labels.json
    clue/afqmc, cmnli                          CLUE layout
        train.json 320, dev.json 100, test.json 40 (unlabelled, with id)
    clue/cmrc2018/{train,dev,test}.json        SQuAD-v1 JSON, one question a line: 240 / 60 / 30
        questions (2-4 per passage; dev year and count answers also without the unit; test
        questions without answers; every fifth passage ~200 chars, its last fact asked)
    clue/c3/c3-{d,m}-{train,dev,test}.json     C3 list [[lines], [questions], id], one question a
        line: 100 / 30 / 30 questions per file (2-4 choices; test labelled, as C3 ships it)
    clue/chid/{train,dev,test}.json            CLUE layout, JSON lines {candidates (10), content}:
        lines of 1-2 passages holding 240 / 60 / 40 blanks #idiom000001#... (numbered across
        all files, 1-3 per passage); {train,dev}_answer.json one object {tag: candidate
        index}, one tag a line; test unlabelled
    clue/cluener/{train,dev,test}.json         JSON lines {text, label}: 300 / 80 / 40 (test:
        {id, text}); dev and test entities mostly unseen in train
    ape210k/{train,valid,test}.ape.json        1500 / 150 / 150
    lccc/dialogues.json                        {"train": 800, "valid": 100, "test": 100}
    lccc/{train,valid,test}.txt                the same dialogues, one per line

Deliberate defects, planted to exercise the cleaning and filtering rules (see
:mod:`demo.ape210k` and :mod:`demo.lccc`):

* Ape210K: in every split of ``n`` rows, exactly the rows at 0-based positions
  ``n // 3`` and ``2 * n // 3`` (see :func:`ape_mismatch_positions`) carry an
  ``ans`` equal to the true value of their equation plus 1, so the
  "equation must evaluate to ans" filter drops exactly two rows per split.
  Every other row's ``ans`` equals its equation exactly.
* LCCC: every split contains exactly two dialogues that are exact copies of
  another dialogue of the same split, and exactly one dialogue with an empty
  turn (``""``; in the text files, two adjacent tabs). Apart from these, all
  dialogues are distinct across the three splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.ape210k import ape_mismatch_positions, write_ape210k
from demo.clue import write_clue
from demo.lccc import write_lccc
from demo.reading import write_reading
from zhnlp.config import ConfigError

__all__ = ["DemoConfig", "ape_mismatch_positions", "write_demo_corpora"]
MAX_SCALE = 100.0


@dataclass(frozen=True)
class DemoConfig:
    """The ``demo`` params: the seed of every random stream, and the factor on every row count."""

    seed: int = 0
    scale: float = 1.0

    def validate(self, where: str) -> None:
        if not 0 < self.scale <= MAX_SCALE:
            raise ConfigError(f"{where}.scale: {self.scale!r} is not allowed; use a number in (0, {MAX_SCALE:g}]")


def write_demo_corpora(out_dir: Path, seed: int = 0, scale: float = 1.0) -> dict[str, int]:
    """Write all demo corpora under ``out_dir``; return row counts keyed by relative path."""
    out_dir = Path(out_dir)
    counts: dict[str, int] = {}
    for name, writer in (("clue", write_clue), ("clue", write_reading), ("ape210k", write_ape210k),
                         ("lccc", write_lccc)):
        counts.update({f"{name}/{k}": v for k, v in writer(out_dir / name, seed, scale).items()})
    return counts
