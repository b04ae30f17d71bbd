"""Building tokenizers (char WordPiece, WoBERT words, a local pretrained one) and measuring them.

The modes and the saved folder format are described in :mod:`zhnlp.text.tokenization`, which owns the
folder (:func:`~zhnlp.text.tokenization.save_tokenizer`) and encoding; this module trains and saves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhnlp.text.tokenization import (
    MODES,
    SPECIAL_TOKENS,
    TokenizerError,
    ZhTokenizer,
    bert_normalizer,
    configure_jieba,
    is_cjk_word,
    save_tokenizer,
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
    tok.normalizer = bert_normalizer(lowercase, handle_chinese_chars=True)
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
    prenorm = bert_normalizer(lowercase, handle_chinese_chars=False)
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
