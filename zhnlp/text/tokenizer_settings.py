"""The ``tokenizer.<name>`` params entry, strictly: each mode has its own keys.

``char`` (BERT-style), ``word`` (WoBERT-style: char vocab plus jieba words) and ``pretrained``
(a local checkpoint's tokenizer, copied). A key of another mode (``words`` under ``char``),
a typo or a wrong type is a one-line ConfigError naming the key and what is allowed.
:func:`zhnlp.text.tokenization.build_tokenizer` takes the result as a mapping (``as_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from zhnlp.config import ConfigError, choice, from_params, in_range, require_mapping

MAX_VOCAB = 10_000_000


@dataclass(frozen=True)
class CharTokenizerSettings:
    mode: Literal["char"]
    vocab_size: int
    min_frequency: int = 2
    lowercase: bool = True

    def validate(self, where: str) -> None:
        in_range(f"{where}.vocab_size", self.vocab_size, 6, MAX_VOCAB)  # more than the 5 special tokens
        in_range(f"{where}.min_frequency", self.min_frequency, 1, 1 << 31)


@dataclass(frozen=True)
class WordTokenizerSettings(CharTokenizerSettings):
    mode: Literal["word"]
    words: int = 20000  # the N most frequent multi-character jieba words
    min_word_frequency: int = 1

    def validate(self, where: str) -> None:
        super().validate(where)
        in_range(f"{where}.words", self.words, 0, MAX_VOCAB)
        in_range(f"{where}.min_word_frequency", self.min_word_frequency, 1, 1 << 31)


@dataclass(frozen=True)
class PretrainedTokenizerSettings:
    mode: Literal["pretrained"]
    path: str  # a local checkpoint directory

    def validate(self, where: str) -> None:
        if not self.path.strip():
            raise ConfigError(f"{where}.path: {self.path!r} is not allowed; name a local checkpoint directory")


SETTINGS = {"char": CharTokenizerSettings, "word": WordTokenizerSettings, "pretrained": PretrainedTokenizerSettings}
TokenizerSettings = CharTokenizerSettings | WordTokenizerSettings | PretrainedTokenizerSettings


def tokenizer_settings(entry: Any, where: str) -> TokenizerSettings:
    """``tokenizer.<name>`` (at params key ``where``) as the settings of its mode."""
    mode = choice(f"{where}.mode", require_mapping(where, entry).get("mode"), SETTINGS)
    return from_params(SETTINGS[mode], entry, where)


def as_dict(settings: TokenizerSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
