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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("char", "word", "pretrained")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
META_FILE = "zhnlp_tokenizer.json"
META_VERSION = 1
DEFAULT_JIEBA_CACHE = Path(__file__).resolve().parents[1] / ".jieba_cache"

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
# building


def _normalizer(lowercase: bool, handle_chinese_chars: bool):
    from tokenizers import normalizers

    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=handle_chinese_chars, strip_accents=lowercase, lowercase=lowercase
    )


def _wrap(tok, lowercase: bool):
    """A ``tokenizers.Tokenizer`` as a transformers BertTokenizerFast with BERT's special tokens."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=lowercase,
        strip_accents=lowercase,
        tokenize_chinese_chars=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )


def _texts_source(texts) -> Callable[[], Iterator[str]]:
    """Training reads the texts twice: accept a callable returning a fresh iterable, or a re-iterable collection."""
    if callable(texts):
        return lambda: iter(texts())
    if iter(texts) is texts:
        raise TypeError("training texts are read twice: pass a list or a callable that returns a fresh iterator")
    return lambda: iter(texts)


def _wordpiece_pipeline(model, lowercase: bool):
    from tokenizers import Tokenizer, decoders, pre_tokenizers

    tok = Tokenizer(model)
    tok.normalizer = _normalizer(lowercase, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _trainer(vocab_size: int, min_frequency: int, special_tokens: Sequence[str]):
    from tokenizers import trainers

    return trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        continuing_subword_prefix="##",
        show_progress=False,
    )


def train_char_tokenizer(texts, *, vocab_size: int, min_frequency: int = 2, lowercase: bool = True):
    """Train a BERT-style WordPiece tokenizer; every CJK character is one token. Returns a BertTokenizerFast.

    ``texts``: a list (or other re-iterable collection) of strings, or a callable returning
    a fresh iterable of them; they are read twice. The alphabet keeps every character seen
    (so training text never maps to [UNK]); ``min_frequency`` and ``vocab_size`` bound the
    WordPiece merges for Latin words and digits.

    Deterministic: ``tokenizers``' trainer numbers the ``##x`` continuation tokens in hash-map
    order, which breaks ties between equally frequent merges differently from run to run
    (huggingface/tokenizers#1794; the vocab size itself varied by a few tokens). A first,
    merge-free pass collects those tokens; the real pass gets them pre-registered in sorted
    order (as trainer "special" tokens, which fixes their ids), and the result is rebuilt
    from its vocab with only BERT's five special tokens.
    """
    from tokenizers import models, processors

    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise TokenizerError(f"vocab_size must be larger than {len(SPECIAL_TOKENS)}, got {vocab_size}")
    source = _texts_source(texts)
    probe = _wordpiece_pipeline(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"), lowercase)
    probe.train_from_iterator(source(), trainer=_trainer(1, min_frequency, SPECIAL_TOKENS))
    continuing = sorted(t for t in probe.get_vocab(with_added_tokens=False) if t.startswith("##") and t not in SPECIAL_TOKENS)

    trained = _wordpiece_pipeline(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"), lowercase)
    trained.train_from_iterator(source(), trainer=_trainer(vocab_size, min_frequency, [*SPECIAL_TOKENS, *continuing]))
    vocab = trained.get_vocab(with_added_tokens=False)

    tok = _wordpiece_pipeline(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##"), lowercase)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    return _wrap(tok, lowercase)


def select_words(counts: Mapping[str, int], n: int, min_count: int) -> list[str]:
    """The ``n`` most frequent multi-character CJK words with count >= ``min_count`` (ties by word)."""
    eligible = [(c, w) for w, c in counts.items() if c >= min_count and is_cjk_word(w)]
    eligible.sort(key=lambda cw: (-cw[0], cw[1]))
    return [w for _, w in eligible[:n]]


def add_words(hf_tokenizer, words: Sequence[str]):
    """Add ``words`` as normal (non-special, not normalised) added tokens; returns the tokenizer."""
    from tokenizers import AddedToken

    vocab = hf_tokenizer.get_vocab()
    new = [AddedToken(w, single_word=False, lstrip=False, rstrip=False, normalized=False, special=False) for w in words if w not in vocab]
    hf_tokenizer.add_tokens(new)
    return hf_tokenizer


def _counting_words(texts: Iterable[str], counts: Counter, lowercase: bool) -> Iterator[str]:
    """Pass texts through while counting their multi-character CJK jieba words (normalised as word mode encodes)."""
    prenorm = _normalizer(lowercase, handle_chinese_chars=False)
    jb = configure_jieba()
    for text in texts:
        counts.update(w for w in jb.cut(prenorm.normalize_str(text), HMM=False) if is_cjk_word(w))
        yield text


def train_word_tokenizer(
    texts,
    *,
    vocab_size: int,
    min_frequency: int = 2,
    lowercase: bool = True,
    words: int = 20000,
    min_word_frequency: int = 1,
):
    """WoBERT vocab: the char vocab plus the top ``words`` jieba words (counted during the first read).

    ``texts`` as for :func:`train_char_tokenizer`. Returns ``(tokenizer, words_added)``; the
    total vocab is the char vocab (at most ``vocab_size``) plus ``len(words_added)``.
    """
    source = _texts_source(texts)
    counts: Counter = Counter()
    reads = 0

    def counted() -> Iterable[str]:
        nonlocal reads
        reads += 1
        return _counting_words(source(), counts, lowercase) if reads == 1 else source()

    hf = train_char_tokenizer(counted, vocab_size=vocab_size, min_frequency=min_frequency, lowercase=lowercase)
    chosen = select_words(counts, words, min_word_frequency)
    return add_words(hf, chosen), chosen


def load_pretrained_tokenizer(path: str | Path):
    """The fast tokenizer of a local checkpoint directory; a clear TokenizerError if there is none."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise TokenizerError(f"pretrained tokenizer path does not exist or is not a directory: {folder}")
    known = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
    if not any((folder / name).is_file() for name in known):
        raise TokenizerError(f"{folder} has no tokenizer files (looked for {', '.join(known)})")
    try:
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any loader failure is a bad checkpoint for us
        raise TokenizerError(f"cannot load a tokenizer from {folder}: {type(err).__name__}: {err}") from err
    if not getattr(tok, "is_fast", False) or getattr(tok, "backend_tokenizer", None) is None:
        raise TokenizerError(f"{folder}: the tokenizer is not a fast (tokenizers-backed) one; offsets and batching need it")
    return tok


def save_tokenizer(hf_tokenizer, out_dir: str | Path, mode: str, **meta: Any) -> Path:
    """``save_pretrained(out_dir)`` plus ``zhnlp_tokenizer.json`` recording the mode."""
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


def build_tokenizer(config: Mapping[str, Any], texts, out_dir: str | Path) -> dict[str, Any]:
    """Build the tokenizer ``config`` (one ``tokenizer.<name>`` entry of params.yaml) and save it.

    ``texts``: the training texts as a list or a callable returning a fresh iterable (read
    twice); unused, and may be None, in pretrained mode.
    Returns facts for the metrics: mode, vocab sizes, the number of added words.
    """
    mode = config.get("mode")
    if mode not in MODES:
        raise TokenizerError(f"tokenizer mode must be one of {MODES}, got {mode!r}")
    info: dict[str, Any] = {"mode": mode}
    if mode == "pretrained":
        if not config.get("path"):
            raise TokenizerError("pretrained mode needs a 'path' to a local checkpoint directory")
        hf = load_pretrained_tokenizer(config["path"])
        save_tokenizer(hf, out_dir, mode, source_path=str(config["path"]))
        info["vocab_size"] = len(hf)
        return info
    if texts is None:
        raise TokenizerError(f"{mode} mode needs training texts")
    common = {
        "vocab_size": int(_require(config, "vocab_size")),
        "min_frequency": int(config.get("min_frequency", 2)),
        "lowercase": bool(config.get("lowercase", True)),
    }
    if mode == "char":
        hf = train_char_tokenizer(texts, **common)
        save_tokenizer(hf, out_dir, mode, lowercase=common["lowercase"])
        info["char_vocab_size"] = len(hf)
    else:
        hf, words = train_word_tokenizer(
            texts, **common, words=int(_require(config, "words")), min_word_frequency=int(config.get("min_word_frequency", 1))
        )
        save_tokenizer(hf, out_dir, mode, lowercase=common["lowercase"], words=len(words))
        info["char_vocab_size"] = len(hf) - len(words)
        info["words"] = len(words)
    info["vocab_size"] = len(hf)
    return info


def _require(config: Mapping[str, Any], key: str) -> Any:
    if key not in config:
        raise TokenizerError(f"tokenizer config is missing {key!r}")
    return config[key]


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
        self.vocab_size = len(hf_tokenizer)
        self.unk_id = hf_tokenizer.unk_token_id
        self.pad_id = hf_tokenizer.pad_token_id
        self.cls_id = hf_tokenizer.cls_token_id
        self.sep_id = hf_tokenizer.sep_token_id
        self.mask_id = hf_tokenizer.mask_token_id
        self.prefix_ids, self.suffix_ids = self._template()
        self._continuing_prefix = getattr(self.backend.model, "continuing_subword_prefix", None)
        if mode == "word":
            lowercase = bool(self.meta.get("lowercase", getattr(hf_tokenizer, "do_lower_case", True)))
            self._prenorm = _normalizer(lowercase, handle_chinese_chars=False)
            self._words = frozenset(w for w in hf_tokenizer.get_vocab() if is_cjk_word(w))
        self._jieba = None  # loaded on first use: char/pretrained modes need it only for word ids

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


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass
class TokenStats:
    """Counts behind a tokenizer's metrics on one body of text."""

    texts: int = 0
    chars: int = 0
    tokens: int = 0  # content tokens, no [CLS]/[SEP]
    unk: int = 0
    per_text_max: int = 0

    def add(self, text: str, ids: Sequence[int], unk_id: int | None) -> None:
        self.texts += 1
        self.chars += len(text)
        self.tokens += len(ids)
        self.per_text_max = max(self.per_text_max, len(ids))
        if unk_id is not None:
            self.unk += sum(1 for i in ids if i == unk_id)

    def metrics(self) -> dict[str, float | int]:
        return {
            "texts": self.texts,
            "chars": self.chars,
            "tokens": self.tokens,
            "unk_tokens": self.unk,
            "unk_rate": self.unk / self.tokens if self.tokens else 0.0,
            "tokens_per_char": self.tokens / self.chars if self.chars else 0.0,
            "max_tokens_per_text": self.per_text_max,
        }


def measure(tokenizer: ZhTokenizer, texts: Iterable[str], batch_size: int = 1024) -> TokenStats:
    """UNK rate and tokens per character of ``tokenizer`` over ``texts`` (streamed in batches)."""
    stats = TokenStats()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= batch_size:
            _measure_batch(tokenizer, batch, stats)
            batch = []
    _measure_batch(tokenizer, batch, stats)
    return stats


def _measure_batch(tokenizer: ZhTokenizer, batch: list[str], stats: TokenStats) -> None:
    for text, ids in zip(batch, tokenizer.encode_batch(batch, add_special_tokens=False)):
        stats.add(text, ids, tokenizer.unk_id)
