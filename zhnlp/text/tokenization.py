"""Tokenizers for pretraining: BERT char-level WordPiece, WoBERT word-level, or a local pretrained one.

Three modes, each saved as a standard Hugging Face fast-tokenizer directory that
``transformers.AutoTokenizer.from_pretrained(dir)`` loads, plus a small
``zhnlp_tokenizer.json`` naming the mode (so our code knows whether to pre-segment):

- **char**: BERT-style. ``BertNormalizer(handle_chinese_chars=True)`` puts spaces around
  every CJK character, so each one is a token; Latin words and digits get WordPiece
  (``##`` continuations). Trained with ``tokenizers``' WordPiece trainer.
- **word** (WoBERT, https://kexue.fm/archives/7758): the char vocab plus the ``words``
  most frequent multi-character CJK jieba words (``HMM=False``), added as normal
  (non-special) added tokens. Encoding reproduces bert4keras' ``_tokenize`` with
  ``pre_tokenize=jieba.cut(HMM=False)``: the normalised text is segmented with jieba; a
  word in the word vocab stays one piece; any other word is split so that each CJK
  character is its own piece (it falls back to char tokens, never to a vocab word
  inside it); the pieces go to the fast tokenizer with ``is_split_into_words=True``,
  where added tokens can then only match whole pieces. Calling the saved tokenizer on
  raw, unsegmented text would instead match vocab words greedily (leftmost-longest)
  and differ from WoBERT: always encode through :func:`load_tokenizer`.

Training and measuring live in :mod:`zhnlp.text.tokenizer_training`; this module owns the saved
folder (:func:`save_tokenizer`, the one writer of ``zhnlp_tokenizer.json``) and encoding.
- **pretrained**: the tokenizer of a local checkpoint directory, copied with
  ``save_pretrained`` (``trust_remote_code=False``, no network). Encoded like char mode.

Whole-word-masking boundaries (``word_ids``): one id per token, -1 for special tokens,
tokens of the same jieba word share an id, ids count up from 0 in each sequence. Word
mode gets them from its own segmentation; char and pretrained modes run jieba
(``HMM=False``) over the text and map tokens to words through the offsets, keeping the
WordPiece pieces of one pre-token together.

jieba writes its dictionary cache into ``jieba.dt.tmp_dir``; :func:`configure_jieba`
points that at a project-local folder (``$ZHNLP_JIEBA_CACHE`` or ``<project>/.jieba_cache``,
which ignores itself for git) and silences jieba's logging.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MODES = ("char", "word", "pretrained")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
META_FILE = "zhnlp_tokenizer.json"
META_VERSION = 1
DEFAULT_JIEBA_CACHE = Path(__file__).resolve().parents[2] / ".jieba_cache"

# BERT's _is_chinese_char ranges (the CJK Unified Ideograph blocks; not kana, hangul or CJK punctuation).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_CJK_CLASS = "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in _CJK_RANGES)
_CJK_WORD_RE = re.compile(f"[{_CJK_CLASS}]{{2,}}")
_CJK_SPLIT_RE = re.compile(f"[{_CJK_CLASS}]|[^{_CJK_CLASS}]+")


class TokenizerError(ValueError):
    """A configuration or input problem with a tokenizer (missing path, unknown mode, ...)."""


def is_cjk_char(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_cjk_word(word: str) -> bool:
    """True for a word of two or more CJK characters (the words word mode adds to the vocab)."""
    return _CJK_WORD_RE.fullmatch(word) is not None


def split_cjk(piece: str) -> list[str]:
    """Every CJK character its own piece; runs of other characters stay together."""
    return _CJK_SPLIT_RE.findall(piece)


# ---------------------------------------------------------------------------------------------
# jieba


_JIEBA = None


def configure_jieba(cache_dir: str | Path | None = None):
    """The default jieba tokenizer, initialised with its cache in a project-local folder, logging quiet.

    ``cache_dir`` defaults to ``$ZHNLP_JIEBA_CACHE`` or ``<project>/.jieba_cache``. The folder gets a
    ``.gitignore`` of ``*`` so the cache never shows up in git.
    """
    global _JIEBA
    if _JIEBA is not None and cache_dir is None:
        return _JIEBA
    import jieba

    jieba.setLogLevel(logging.WARNING)
    folder = Path(cache_dir or os.environ.get("ZHNLP_JIEBA_CACHE") or DEFAULT_JIEBA_CACHE)
    if _JIEBA is not None and Path(_JIEBA.tmp_dir) == folder:
        return _JIEBA
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")
    jieba.dt.tmp_dir = str(folder)
    jieba.dt.initialize()
    _JIEBA = jieba.dt
    return _JIEBA


def segment_words(text: str) -> list[str]:
    """jieba words of ``text`` with the HMM off (WoBERT's segmentation); they concatenate to ``text``."""
    return configure_jieba().lcut(text, HMM=False)


# ---------------------------------------------------------------------------------------------
# normalisation (shared by training and encoding)


def bert_normalizer(lowercase: bool, handle_chinese_chars: bool):
    from tokenizers import normalizers

    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=handle_chinese_chars, strip_accents=lowercase, lowercase=lowercase
    )


def save_tokenizer(hf_tokenizer, out_dir: str | Path, mode: str, **meta: Any) -> Path:
    """``save_pretrained(out_dir)`` plus ``zhnlp_tokenizer.json`` recording the mode: the one writer of that file."""
    if mode not in MODES:
        raise TokenizerError(f"unknown tokenizer mode {mode!r}; expected one of {MODES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_tokenizer.save_pretrained(str(out))
    record = {"format_version": META_VERSION, "mode": mode, "vocab_size": len(hf_tokenizer)} | meta
    if mode == "word":
        record.setdefault("segmenter", {"name": "jieba", "HMM": False, "version": _jieba_version()})
    (out / META_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _jieba_version() -> str:
    import jieba

    return getattr(jieba, "__version__", "unknown")


# ---------------------------------------------------------------------------------------------
# using


class ZhTokenizer:
    """A saved tokenizer of any mode behind one interface. Get one with :func:`load_tokenizer`."""

    def __init__(self, hf_tokenizer, mode: str, meta: Mapping[str, Any] | None = None):
        if mode not in MODES:
            raise TokenizerError(f"unknown tokenizer mode {mode!r}")
        self.hf = hf_tokenizer
        self.mode = mode
        self.meta = dict(meta or {})
        self.backend = hf_tokenizer.backend_tokenizer
        # Text is data: a literal "[SEP]" or "[MASK]" in a corpus is encoded as characters, never as the
        # special token (word mode's jieba pre-segmentation does that anyway; this makes every mode agree).
        # The [CLS]/[SEP] of the post-processor are unaffected.
        self.backend.encode_special_tokens = True
        self.unk_id = hf_tokenizer.unk_token_id
        self.pad_id = hf_tokenizer.pad_token_id
        self.cls_id = hf_tokenizer.cls_token_id
        self.sep_id = hf_tokenizer.sep_token_id
        self.mask_id = hf_tokenizer.mask_token_id
        self.prefix_ids, self.suffix_ids = self._template()
        self._continuing_prefix = getattr(self.backend.model, "continuing_subword_prefix", None)
        if mode == "word":
            lowercase = bool(self.meta.get("lowercase", getattr(hf_tokenizer, "do_lower_case", True)))
            self._prenorm = bert_normalizer(lowercase, handle_chinese_chars=False)
            self._words = frozenset(w for w in hf_tokenizer.get_vocab() if is_cjk_word(w))
        self._jieba = None  # loaded on first use: char/pretrained modes need it only for word ids

    @property
    def vocab_size(self) -> int:
        """Tokens in the vocabulary, added tokens included (read live: it grows with ``hf.add_tokens``)."""
        return len(self.hf)

    def save(self, out_dir: str | Path) -> Path:
        """Save this tokenizer (its current vocab, mode and settings) with :func:`save_tokenizer`."""
        meta = {k: v for k, v in self.meta.items() if k not in ("format_version", "mode", "vocab_size")}
        return save_tokenizer(self.hf, out_dir, self.mode, **meta)

    @property
    def jieba(self):
        if self._jieba is None:
            self._jieba = configure_jieba()
        return self._jieba

    def _template(self) -> tuple[list[int], list[int]]:
        """The special ids the post-processor puts before and after one sequence ([CLS] / [SEP] for BERT)."""
        enc = self.backend.encode("a", add_special_tokens=True)
        content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
        if not content:
            return [], []
        return list(enc.ids[: content[0]]), list(enc.ids[content[-1] + 1 :])

    @property
    def num_special_tokens(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)

    def pieces(self, text: str) -> tuple[list[str], list[int]]:
        """Word mode: the pieces handed to the fast tokenizer, and the jieba word index of each piece."""
        pieces: list[str] = []
        owners: list[int] = []
        for index, word in enumerate(self.jieba.cut(self._prenorm.normalize_str(text), HMM=False)):
            if word in self._words:
                pieces.append(word)
                owners.append(index)
            else:
                parts = split_cjk(word)
                pieces.extend(parts)
                owners.extend([index] * len(parts))
        return pieces, owners

    def tokenize(self, text: str) -> list[str]:
        """Tokens of ``text`` without special tokens (for inspection and tests)."""
        if self.mode == "word":
            return self.backend.encode(self.pieces(text)[0], is_pretokenized=True, add_special_tokens=False).tokens
        return self.backend.encode(text, add_special_tokens=False).tokens

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of each text (with [CLS]/[SEP] unless ``add_special_tokens`` is false)."""
        if not texts:
            return []
        if self.mode == "word":
            inputs = [self.pieces(t)[0] for t in texts]
            encs = self.backend.encode_batch_fast(inputs, is_pretokenized=True, add_special_tokens=add_special_tokens)
        else:
            encs = self.backend.encode_batch_fast(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encs]

    def encode_batch_with_word_ids(self, texts: Sequence[str], add_special_tokens: bool = True) -> tuple[list[list[int]], list[list[int]]]:
        """``(ids, word_ids)`` per text; word ids are -1 for special tokens and count up from 0 per jieba word."""
        if not texts:
            return [], []
        ids_out: list[list[int]] = []
        wids_out: list[list[int]] = []
        if self.mode == "word":
            segmented = [self.pieces(t) for t in texts]
            encs = self.backend.encode_batch([p for p, _ in segmented], is_pretokenized=True, add_special_tokens=add_special_tokens)
            for (_, owners), enc in zip(segmented, encs):
                ids_out.append(enc.ids)
                wids_out.append(_dense_word_ids([None if w is None else owners[w] for w in enc.word_ids]))
            return ids_out, wids_out
        encs = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        jb = self.jieba
        for text, enc in zip(texts, encs):
            ids_out.append(enc.ids)
            wids_out.append(_char_mode_word_ids(jb.lcut(text, HMM=False), enc.tokens, enc.word_ids, enc.offsets, self._continuing_prefix))
        return ids_out, wids_out


def _dense_word_ids(owners: Sequence[int | None]) -> list[int]:
    """Owner indices (None for specials) -> ids counting up from 0 at each change of owner."""
    out: list[int] = []
    last = None
    current = -1
    for owner in owners:
        if owner is None:
            out.append(-1)
            continue
        if owner != last:
            current += 1
            last = owner
        out.append(current)
    return out


def _char_mode_word_ids(
    words: Sequence[str], tokens: Sequence[str], pretoken_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]], prefix: str | None
) -> list[int]:
    """Group tokens by the jieba word their first character belongs to.

    A token continues the previous token's group when both come from the same pre-token and
    it is a WordPiece continuation (``##...``) or starts inside a jieba word: so ``play ##s``
    stays one word even where jieba cuts differently (``caf|é`` vs BERT's ``cafe``), and a
    byte-level BPE pre-token spanning a whole Chinese clause still splits at jieba words.
    """
    owner_of_char: list[int] = []
    word_start: list[bool] = []
    for index, word in enumerate(words):
        owner_of_char.extend([index] * len(word))
        word_start.extend([True] + [False] * (len(word) - 1))
    n = len(owner_of_char)
    owners: list[int | None] = []
    last_pretoken = None
    last_owner: int | None = None
    for token, pretoken, (start, _end) in zip(tokens, pretoken_ids, offsets):
        if pretoken is None:
            owners.append(None)
            continue
        start = min(start, n - 1) if n else 0
        continues = pretoken == last_pretoken and last_owner is not None and ((prefix and token.startswith(prefix)) or (n and not word_start[start]))
        if not continues:
            last_owner = owner_of_char[start] if n else 0
        last_pretoken = pretoken
        owners.append(last_owner)
    return _dense_word_ids(owners)


def load_tokenizer(path: str | Path) -> ZhTokenizer:
    """Load a directory written by :func:`save_tokenizer` (a bare HF tokenizer dir counts as pretrained)."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise TokenizerError(f"tokenizer directory not found: {folder}")
    meta_path = folder / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {"mode": "pretrained"}
    hf = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    if not getattr(hf, "is_fast", False):
        raise TokenizerError(f"{folder}: not a fast tokenizer")
    return ZhTokenizer(hf, meta.get("mode", "pretrained"), meta)


