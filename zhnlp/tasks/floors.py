"""Non-neural floors for the new CLUE task kinds: what a model must beat to have learnt anything.

One small, deterministic baseline per kind, on the prepared row dicts (schemas in
``zhnlp.data.cmrc2018``/``c3``/``chid``/``cluener``), each ``fit(train_rows) -> self`` then
``predict(rows) -> list`` in the heads' output format:

- :class:`OverlapSpanFloor` (span_extraction): the context clause that shares most
  character n-grams with the question, narrowed to the part the question does not mention;
- :class:`TfidfChoiceFloor` (multiple_choice, idiom_cloze): TF-IDF cosine of each
  choice to the passage and question, or of each idiom to the text around its blank, with a
  one-to-one assignment of idioms to the blanks of one passage (scipy);
- :class:`GazetteerNerFloor` (ner): a dictionary of the training entities, matched
  longest-first left to right.

No torch: sklearn and scipy only, imported where used.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from zhnlp.metrics import CMRC_PUNCTUATION

IDIOM_BLANK = "#idiom#"
OTHER_BLANK = "#other#"
_CLAUSE_END = re.compile(r"(?<=[。！？!?；;\n，,])")


def _is_punct(ch: str) -> bool:
    return ch in CMRC_PUNCTUATION or ch.isspace()


def _ngrams(text: str, n_max: int = 3) -> set[str]:
    return {text[i : i + n] for n in range(1, n_max + 1) for i in range(len(text) - n + 1)}


class OverlapSpanFloor:
    """Span extraction floor: pick a clause by question overlap, then the words the question lacks.

    Assumptions: the answer lies in the context clause (the context split after 。！？!?；;,
    commas ，, and newlines) sharing the most distinct character 1-3-grams with the question
    (punctuation and spaces left out; ties go to the earlier clause); and the answer is what
    that clause adds to the question, so the prediction is the longest run of the clause's
    characters that do not occur in the question, runs broken at punctuation and spaces (ties:
    the earlier run). A clause made only of question characters is predicted whole, trimmed of
    punctuation. Clauses rather than whole sentences: on the CMRC2018 trial set they double
    exact match (4.5% vs 2.2%), as a sentence often holds a longer run than the answer.
    Nothing is learnt: ``fit`` ignores its rows.
    """

    def fit(self, train_rows: Iterable[dict] = ()) -> OverlapSpanFloor:
        return self

    def predict(self, rows: Iterable[dict]) -> list[str]:
        return [self.predict_one(r["context"], r["question"]) for r in rows]

    @staticmethod
    def predict_one(context: str, question: str) -> str:
        q = "".join(ch for ch in question if not _is_punct(ch))
        q_grams, q_chars = _ngrams(q), set(q)
        clauses = [s for s in _CLAUSE_END.split(context) if s.strip()]
        if not clauses:
            return ""
        best = max(clauses, key=lambda s: len(_ngrams("".join(c for c in s if not _is_punct(c))) & q_grams))
        run_best, run = "", []
        for ch in best + "。":  # a final mark flushes the last run
            if _is_punct(ch) or ch in q_chars:
                if len(run) > len(run_best):
                    run_best = "".join(run)
                run = []
            else:
                run.append(ch)
        if run_best:
            return run_best
        start, end = 0, len(best)
        while start < end and _is_punct(best[start]):
            start += 1
        while end > start and _is_punct(best[end - 1]):
            end -= 1
        return best[start:end]


def blank_context(text: str, window: int = 32) -> str:
    """The ``window`` characters either side of the ``#idiom#`` blank, other blanks' markers removed."""
    text = text.replace(OTHER_BLANK, "")
    at = text.find(IDIOM_BLANK)
    if at < 0:
        raise ValueError(f"no {IDIOM_BLANK} blank in the text {text[:40]!r}")
    return text[max(0, at - window) : at] + text[at + len(IDIOM_BLANK) : at + len(IDIOM_BLANK) + window]


class TfidfChoiceFloor:
    """Multiple-choice / idiom-cloze floor: the choice most TF-IDF-similar to its context.

    Assumptions: the right choice shares characters with what it answers. For
    ``multiple_choice`` rows the context is the passage plus the question and the options are
    ``choices``; for ``idiom_cloze`` rows it is :func:`blank_context` (``window`` characters
    either side of ``#idiom#``, ``#other#`` markers removed) and the options are
    ``candidates``. The kind is taken from the row keys unless given. Vectors: sklearn
    ``TfidfVectorizer`` (character n-grams, ``ngram_range``, sublinear tf), fitted on the train
    rows' texts (passages and choices; for idioms the blank-free text and candidates); cosine
    similarity, argmax (ties: the first option). Idiom rows sharing a ``group`` (the blanks of
    one passage, which share one candidate list) get a one-to-one assignment of candidates to
    blanks maximising total similarity (``scipy.optimize.linear_sum_assignment``); a group
    with more blanks than candidates, or whose rows list different candidates, falls back to
    the per-row argmax.
    """

    def __init__(self, kind: str | None = None, ngram_range: tuple[int, int] = (1, 2), window: int = 32):
        if kind not in (None, "multiple_choice", "idiom_cloze"):
            raise ValueError(f"TfidfChoiceFloor kind must be multiple_choice or idiom_cloze; got {kind!r}")
        self.kind, self.ngram_range, self.window = kind, tuple(ngram_range), window
        self.vectorizer = None

    def _kind(self, row: dict) -> str:
        if self.kind:
            return self.kind
        return "idiom_cloze" if "candidates" in row else "multiple_choice"

    def _context_options(self, row: dict) -> tuple[str, list[str]]:
        if self._kind(row) == "idiom_cloze":
            return blank_context(row["text"], self.window), list(row["candidates"])
        return row["passage"] + "\n" + row["question"], list(row["choices"])

    def fit(self, train_rows: Iterable[dict]) -> TfidfChoiceFloor:
        from sklearn.feature_extraction.text import TfidfVectorizer

        docs: list[str] = []
        for row in train_rows:
            if self._kind(row) == "idiom_cloze":
                docs.append(row["text"].replace(IDIOM_BLANK, "").replace(OTHER_BLANK, ""))
                docs.extend(row["candidates"])
            else:
                docs.append(row["passage"] + "\n" + row["question"])
                docs.extend(row["choices"])
        if not docs:
            raise ValueError("TfidfChoiceFloor.fit needs at least one train row")
        self.vectorizer = TfidfVectorizer(analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True).fit(docs)
        return self

    def similarities(self, rows: Sequence[dict]) -> list[np.ndarray]:
        """Per row, the cosine similarity of each option to the row's context."""
        if self.vectorizer is None:
            raise ValueError("TfidfChoiceFloor: call fit before predict")
        pairs = [self._context_options(r) for r in rows]
        contexts = self.vectorizer.transform([c for c, _ in pairs])
        options = self.vectorizer.transform([o for _, opts in pairs for o in opts])  # rows are L2-normalised
        out, at = [], 0
        for i, (_, opts) in enumerate(pairs):
            out.append(np.asarray((options[at : at + len(opts)] @ contexts[i].T).todense()).ravel())
            at += len(opts)
        return out

    def predict(self, rows: Iterable[dict]) -> list[int]:
        from scipy.optimize import linear_sum_assignment

        rows = list(rows)
        sims = self.similarities(rows)
        pred = [int(np.argmax(s)) if len(s) else -1 for s in sims]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            if self._kind(r) == "idiom_cloze" and r.get("group") is not None:
                groups[r["group"]].append(i)
        for members in groups.values():
            cands = list(rows[members[0]]["candidates"])
            if len(members) < 2 or len(members) > len(cands):
                continue
            if any(list(rows[i]["candidates"]) != cands for i in members):
                continue
            blanks, chosen = linear_sum_assignment(np.vstack([sims[i] for i in members]), maximize=True)
            for b, c in zip(blanks, chosen):
                pred[members[b]] = int(c)
        return pred


class GazetteerNerFloor:
    """NER floor: the training entities as a dictionary, matched longest-first from left to right.

    Assumptions: an entity string seen in training is an entity wherever it occurs, of the
    type it had most often in training (ties: the alphabetically first type). Matching scans the
    text from the left; at each position it takes the longest dictionary string starting there
    (then continues after it), else moves on one character. Context is ignored, so ambiguous or
    unseen names are the floor's errors. Output: per row, entity dicts {type, start, end
    (inclusive), text} in text order.
    """

    def __init__(self):
        self.types: dict[str, str] = {}
        self._lengths: dict[str, list[int]] = {}

    def fit(self, train_rows: Iterable[dict]) -> GazetteerNerFloor:
        counts: dict[str, Counter] = defaultdict(Counter)
        for row in train_rows:
            for e in row["entities"]:
                if e["text"]:
                    counts[e["text"]][e["type"]] += 1
        self.types = {text: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for text, c in counts.items()}
        lengths: dict[str, set[int]] = defaultdict(set)
        for text in self.types:
            lengths[text[0]].add(len(text))
        self._lengths = {ch: sorted(ls, reverse=True) for ch, ls in lengths.items()}
        return self

    def predict(self, rows: Iterable[dict]) -> list[list[dict]]:
        return [self.predict_one(r["text"]) for r in rows]

    def predict_one(self, text: str) -> list[dict]:
        out, i = [], 0
        while i < len(text):
            for n in self._lengths.get(text[i], ()):
                piece = text[i : i + n]
                if len(piece) == n and piece in self.types:
                    out.append({"type": self.types[piece], "start": i, "end": i + n - 1, "text": piece})
                    i += n
                    break
            else:
                i += 1
        return out
