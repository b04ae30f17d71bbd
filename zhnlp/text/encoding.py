"""Prepared corpora -> token-id Parquet shards for pretraining, streamed in constant memory.

Documents come from the prepared Parquet files, read in record batches:

- ``clue``: every task's ``train.parquet`` — each text column (:data:`CLUE_TEXT_COLUMNS`: ``text_a``,
  ``text_b``, a passage, a question...) a separate document, a passage repeated on consecutive rows once;
- ``ape210k``: ``train.parquet`` questions;
- ``lccc``: ``train.parquet`` dialogues, one document per dialogue. Turns are encoded
  separately and joined with the tokenizer's ``[SEP]`` id (``[CLS] t1 [SEP] t2 [SEP] ...``),
  never by putting the string "[SEP]" into the text (jieba would cut it up in word
  mode) and not with a newline (BERT's normaliser turns it into a space, so turn
  boundaries would vanish). A tokenizer without a sep token joins turns with "\\n";
- unlabelled text prepared by ``prepare_text@<name>`` (``pretrain_text.<name>``):
  ``text/<name>/text.parquet``, one document per row, source ``text:<name>``.

Each document is encoded without special tokens and cut into windows of at most
``max_seq_len - 2`` content tokens (at a word start when word ids are known and one
exists in the window's second half), and each window gets ``[CLS] ... [SEP]``. A document
goes to ``heldout`` when the first 8 bytes of blake2b(its text) — a number in [0, 1) —
fall below ``heldout_ratio``: deterministic, independent of order and of the source, and
all windows of a document (and all copies of a duplicated text) land in the same split.

Output: token-id shards in the format of :mod:`zhnlp.text.shards` (``train-*.parquet`` and
``heldout-*.parquet``, ``shard_rows`` rows each), and ``stats.json``: rows, documents, tokens per split and per source. Memory stays flat:
documents are encoded ``batch_docs`` at a time and rows are flushed to the open shard
every ``flush_rows``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow.parquet as pq

from zhnlp.config import from_params, in_range
from zhnlp.progress import progress
from zhnlp.text.shards import Row, ShardWriter, shard_schema
from zhnlp.text.tokenization import ZhTokenizer

CORPORA = ("clue", "ape210k", "lccc")
TRAIN_SPLITS = {"clue": "train", "ape210k": "train", "lccc": "train"}
EVAL_SPLITS = {"clue": "dev", "ape210k": "valid", "lccc": "valid"}
SPLITS = ("train", "heldout")
READ_BATCH_ROWS = 2048


class Document(NamedTuple):
    """One unit of text: a single text, or the turns of a dialogue."""

    segments: tuple[str, ...]
    source: str

    @property
    def key(self) -> str:
        """The text the held-out hash is taken over."""
        return self.segments[0] if len(self.segments) == 1 else "\n".join(self.segments)


# ---------------------------------------------------------------------------------------------
# reading


# The text columns of the prepared CLUE rows, every kind (zhnlp.data.clue.reader_for): each non-empty one a document.
CLUE_TEXT_COLUMNS = ("text_a", "text_b", "context", "question", "passage", "text")


def corpus_files(prepared_dir: str | Path, corpus: str, split: str) -> list[Path]:
    """The prepared Parquet files of ``corpus``'s ``split`` (every CLUE task's), sorted."""
    root = Path(prepared_dir)
    if corpus == "clue":
        return sorted((root / "clue").glob(f"*/{split}.parquet"))
    if corpus in ("ape210k", "lccc"):
        path = root / corpus / f"{split}.parquet"
        return [path] if path.is_file() else []
    raise ValueError(f"unknown corpus {corpus!r}; expected one of {CORPORA}")


def iter_documents(prepared_dir: str | Path, corpus: str, split: str, batch_rows: int = READ_BATCH_ROWS) -> Iterator[Document]:
    """Documents of one corpus split, read in record batches."""
    for path in corpus_files(prepared_dir, corpus, split):
        pf = pq.ParquetFile(path)
        if corpus == "clue":
            columns = [c for c in CLUE_TEXT_COLUMNS if c in pf.schema_arrow.names]
            last = [None] * len(columns)  # a passage repeated on consecutive rows (one per question) is one document
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                cols = [batch.column(c).to_pylist() for c in columns]
                for row in zip(*cols):
                    for i, text in enumerate(row):
                        if text and text.strip() and text != last[i]:
                            yield Document((text,), corpus)
                        last[i] = text
        elif corpus == "ape210k":
            for batch in pf.iter_batches(batch_size=batch_rows, columns=["question"]):
                for text in batch.column("question").to_pylist():
                    if text and text.strip():
                        yield Document((text,), corpus)
        else:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=["turns"]):
                for turns in batch.column("turns").to_pylist():
                    turns = tuple(t for t in turns or () if t and t.strip())
                    if turns:
                        yield Document(turns, corpus)


def iter_texts(prepared_dir: str | Path, corpus: str, split: str) -> Iterator[str]:
    """Every text of one corpus split (dialogue turns one by one): tokenizer training and metrics."""
    for doc in iter_documents(prepared_dir, corpus, split):
        yield from doc.segments


def iter_text_documents(prepared_dir: str | Path, names: Sequence[str]) -> Iterator[Document]:
    """Documents of the unlabelled texts ``names`` (``prepare_text@<name>``), in the order given."""
    for name in names:
        path = Path(prepared_dir) / "text" / name / "text.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (run `dvc repro prepare_text@{name}`)")
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=8192):
            for text in batch.column(0).to_pylist():
                yield Document((text,), f"text:{name}")


# ---------------------------------------------------------------------------------------------
# encoding


def heldout_fraction(text: str) -> float:
    """A deterministic number in [0, 1) from the text's blake2b hash."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def is_heldout(text: str, ratio: float) -> bool:
    return ratio > 0 and heldout_fraction(text) < ratio


def cut_windows(ids: list[int], wids: list[int] | None, limit: int) -> list[tuple[list[int], list[int] | None]]:
    """Cut content tokens into windows of at most ``limit``; with word ids, prefer cutting at a word start."""
    if len(ids) <= limit:
        return [(ids, wids)]
    out = []
    start, n = 0, len(ids)
    while start < n:
        end = min(start + limit, n)
        if wids is not None and end < n:
            cut = end
            # back off to the start of the word that the window would split, if it starts in the second half
            while cut > start + limit // 2 and wids[cut] != -1 and wids[cut] == wids[cut - 1]:
                cut -= 1
            if cut > start + limit // 2:
                end = cut
        out.append((ids[start:end], wids[start:end] if wids is not None else None))
        start = end
    return out


@dataclass
class EncodeConfig:
    """The ``encode`` params (strictly: unknown keys are errors); batch_docs, flush_rows are not params."""

    max_seq_len: int = 128
    shard_rows: int = 50000
    heldout_ratio: float = 0.05
    word_boundaries: bool = True
    batch_docs: int = 512
    flush_rows: int = 8192

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, where: str = "encode") -> "EncodeConfig":
        return from_params(cls, params, where, batch_docs=cls.batch_docs, flush_rows=cls.flush_rows)

    def validate(self, where: str = "encode") -> None:
        in_range(f"{where}.max_seq_len", self.max_seq_len, 3, 1 << 20)
        in_range(f"{where}.shard_rows", self.shard_rows, 1, 1 << 31)
        in_range(f"{where}.heldout_ratio", self.heldout_ratio, 0.0, 1.0, high_open=True)
        in_range(f"{where}.batch_docs", self.batch_docs, 1, 1 << 31)
        in_range(f"{where}.flush_rows", self.flush_rows, 1, 1 << 31)


class DocumentEncoder:
    """Documents -> rows (windows with special tokens), a batch at a time."""

    def __init__(self, tokenizer: ZhTokenizer, max_seq_len: int, word_boundaries: bool, heldout_ratio: float = 0.0):
        self.tok = tokenizer
        self.word_boundaries = word_boundaries
        self.heldout_ratio = heldout_ratio
        self.prefix = list(tokenizer.prefix_ids)
        self.suffix = list(tokenizer.suffix_ids)
        self.limit = max_seq_len - len(self.prefix) - len(self.suffix)
        if self.limit < 1:
            raise ValueError(f"max_seq_len {max_seq_len} leaves no room for content after {len(self.prefix) + len(self.suffix)} special tokens")
        self.sep_id = tokenizer.sep_id
        self.windowed_documents = 0
        self.empty_documents = 0

    def encode(self, docs: Sequence[Document]) -> list[Row]:
        texts: list[str] = []
        for doc in docs:
            if len(doc.segments) > 1 and self.sep_id is None:
                texts.append("\n".join(doc.segments))
            else:
                texts.extend(doc.segments)
        if self.word_boundaries:
            ids_list, wids_list = self.tok.encode_batch_with_word_ids(texts, add_special_tokens=False)
        else:
            ids_list, wids_list = self.tok.encode_batch(texts, add_special_tokens=False), None
        rows: list[Row] = []
        pos = 0
        for doc in docs:
            n = 1 if (len(doc.segments) == 1 or self.sep_id is None) else len(doc.segments)
            if n == 1:
                ids = ids_list[pos]
                wids = wids_list[pos] if wids_list is not None else None
            else:
                ids, wids = self._join(ids_list[pos : pos + n], wids_list[pos : pos + n] if wids_list is not None else None)
            pos += n
            if not ids:
                self.empty_documents += 1
                continue
            split = "heldout" if is_heldout(doc.key, self.heldout_ratio) else "train"
            windows = cut_windows(ids, wids, self.limit)
            if len(windows) > 1:
                self.windowed_documents += 1
            prefix, suffix = self.prefix, self.suffix
            for index, (w_ids, w_wids) in enumerate(windows):
                full_ids = prefix + w_ids + suffix
                full_wids = None
                if w_wids is not None:
                    base = next((w for w in w_wids if w >= 0), 0)
                    full_wids = [-1] * len(prefix) + [w - base if w >= 0 else -1 for w in w_wids] + [-1] * len(suffix)
                rows.append(Row(full_ids, full_wids, doc.source, split, index))
        return rows

    def _join(self, ids_parts: list[list[int]], wids_parts: list[list[int]] | None) -> tuple[list[int], list[int] | None]:
        """Dialogue turns: ``t1 [SEP] t2 [SEP] ... tn`` (the final [SEP] comes from the window suffix)."""
        ids: list[int] = []
        wids: list[int] | None = [] if wids_parts is not None else None
        offset = 0
        for i, part in enumerate(ids_parts):
            if not part:
                continue
            if ids:
                ids.append(self.sep_id)
                if wids is not None:
                    wids.append(-1)
            ids.extend(part)
            if wids is not None:
                part_w = wids_parts[i]
                wids.extend(w + offset if w >= 0 else -1 for w in part_w)
                offset += max(part_w, default=-1) + 1
        return ids, wids


@dataclass
class SplitCounts:
    rows: int = 0
    tokens: int = 0
    documents: int = 0
    sources: dict = field(default_factory=dict)

    def add(self, row: Row, new_document: bool) -> None:
        self.rows += 1
        self.tokens += len(row.input_ids)
        self.documents += new_document
        src = self.sources.setdefault(row.source, {"rows": 0, "tokens": 0, "documents": 0})
        src["rows"] += 1
        src["tokens"] += len(row.input_ids)
        src["documents"] += new_document

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "tokens": self.tokens, "documents": self.documents, "sources": dict(sorted(self.sources.items()))}


def encode_documents(tokenizer: ZhTokenizer, documents: Iterable[Document], out_dir: str | Path, config: EncodeConfig, *, desc: str = "encode") -> dict[str, Any]:
    """Encode ``documents`` into Parquet shards under ``out_dir`` and write ``stats.json``; returns the stats.

    ``desc`` labels the progress bar (:mod:`zhnlp.progress`: documents read, documents/s).

    ``out_dir`` must not hold shards from an earlier run (the stage removes it first).
    """
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in out.glob("*.parquet"))
    if stale:
        raise FileExistsError(f"{out} already holds shards ({stale[0]}, ...); remove it first")
    encoder = DocumentEncoder(tokenizer, config.max_seq_len, config.word_boundaries, config.heldout_ratio)
    schema = shard_schema(config.word_boundaries)
    writers = {s: ShardWriter(out, s, schema, config.shard_rows, config.flush_rows) for s in SPLITS}
    counts = {s: SplitCounts() for s in SPLITS}
    input_documents: dict[str, int] = {}
    for batch in _batched(progress(documents, desc, unit="docs"), config.batch_docs):
        for doc in batch:
            input_documents[doc.source] = input_documents.get(doc.source, 0) + 1
        for row in encoder.encode(batch):
            writers[row.split].write(row)
            counts[row.split].add(row, row.window == 0)
    for writer in writers.values():
        writer.close()
    stats = {
        "mode": tokenizer.mode,
        "vocab_size": tokenizer.vocab_size,
        "special_ids": {"pad": tokenizer.pad_id, "unk": tokenizer.unk_id, "cls": tokenizer.cls_id, "sep": tokenizer.sep_id, "mask": tokenizer.mask_id},
        "max_seq_len": config.max_seq_len,
        "shard_rows": config.shard_rows,
        "heldout_ratio": config.heldout_ratio,
        "word_boundaries": config.word_boundaries,
        "schema": {f.name: str(f.type) for f in schema},
        "input_documents": dict(sorted(input_documents.items())),
        "empty_documents": encoder.empty_documents,
        "windowed_documents": encoder.windowed_documents,
        "splits": {s: counts[s].as_dict() | {"shards": writers[s].shards} for s in SPLITS},
    }
    (out / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats


def _batched(items: Iterable[Document], n: int) -> Iterator[list[Document]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch
