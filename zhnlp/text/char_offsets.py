"""Token <-> character alignment for span heads (reading comprehension, NER), for every tokenizer mode.

Span extraction and NER predict character spans of the original text, so each token must know the
characters it covers. The fast tokenizer's ``offset_mapping`` gives that directly for the ``char``
and ``pretrained`` modes. In ``word`` mode (WoBERT) the text reaches the tokenizer as jieba pieces
(``is_split_into_words=True``), whose offsets are relative to each piece; :func:`encode_windows`
adds each piece's start in the text. Overlong inputs become several windows with ``stride`` tokens
of overlap (``return_overflowing_tokens``), as the published CMRC2018 recipe does (techniques §5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Window:
    """One encoded window of one example (``example``: its index in the inputs).

    ``offsets[i]`` is the ``(start, end)`` character span (end exclusive) of token ``i`` in the text
    it came from, and ``sequence_ids[i]`` which text that is (0: first, 1: second, None: special).
    """

    example: int
    input_ids: list[int]
    attention_mask: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int] | None]
    sequence_ids: list[int | None]

    def features(self, zero_segments: bool = True) -> dict[str, list[int]]:
        """The model inputs (segment ids all 0, as in the CLUE baselines, unless ``zero_segments`` is False)."""
        out = {"input_ids": list(self.input_ids), "attention_mask": list(self.attention_mask)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = [0] * len(self.input_ids) if zero_segments else list(self.token_type_ids)
        return out


def _pieces(tokenizer, text: str) -> tuple[list[str], list[int]]:
    """Word mode: the jieba pieces of ``text`` and each piece's start offset.

    The pieces come from the normalised text; where normalisation changed the length (so piece
    offsets would not fit the original), the text's characters are the pieces instead.
    """
    pieces = tokenizer.pieces(text)[0]
    if sum(map(len, pieces)) != len(text):
        pieces = list(text)
    starts, pos = [], 0
    for piece in pieces:
        starts.append(pos)
        pos += len(piece)
    return pieces, starts


def encode_windows(
    tokenizer,
    firsts: Sequence[str],
    seconds: Sequence[str] | None = None,
    *,
    max_length: int,
    stride: int = 0,
    overflow: bool = False,
) -> list[Window]:
    """Encode texts (or pairs) with character offsets; with ``overflow`` a long text (the second of a
    pair) is split into windows of ``max_length`` tokens overlapping by ``stride`` tokens.

    ``tokenizer`` is a :class:`zhnlp.text.tokenization.ZhTokenizer`. Pairs are truncated in the second
    text only (``only_second``: a question is kept whole, the passage windowed); single texts in the text.
    """
    hf = tokenizer.hf
    word_mode = tokenizer.mode == "word"
    kwargs = {
        "truncation": "only_second" if seconds is not None else True,
        "max_length": max_length,
        "return_offsets_mapping": True,
        "padding": False,
    }
    if overflow:
        kwargs |= {"return_overflowing_tokens": True, "stride": stride}
    starts_a: list[list[int]] = []
    starts_b: list[list[int]] = []
    a_in, b_in = list(firsts), (list(seconds) if seconds is not None else None)
    if word_mode:
        split_a = [_pieces(tokenizer, t) for t in firsts]
        a_in, starts_a = [p for p, _ in split_a], [s for _, s in split_a]
        if seconds is not None:
            split_b = [_pieces(tokenizer, t) for t in seconds]
            b_in, starts_b = [p for p, _ in split_b], [s for _, s in split_b]
        kwargs["is_split_into_words"] = True
    if not a_in:
        return []
    enc = hf(a_in, b_in, **kwargs)
    mapping = enc.get("overflow_to_sample_mapping") or list(range(len(enc["input_ids"])))
    windows = []
    for i, example in enumerate(mapping):
        seq_ids = enc.sequence_ids(i)
        offsets: list[tuple[int, int] | None] = []
        words = enc.word_ids(i) if word_mode else None
        for t, (seq, span) in enumerate(zip(seq_ids, enc["offset_mapping"][i])):
            if seq is None:
                offsets.append(None)
                continue
            start, end = span
            if word_mode:
                base = (starts_a if seq == 0 else starts_b)[example][words[t]]
                start, end = base + start, base + end
            offsets.append((start, end) if end > start else None)
        windows.append(
            Window(
                example=int(example),
                input_ids=list(enc["input_ids"][i]),
                attention_mask=list(enc["attention_mask"][i]),
                token_type_ids=list(enc["token_type_ids"][i]) if "token_type_ids" in enc else None,
                offsets=offsets,
                sequence_ids=list(seq_ids),
            )
        )
    return windows
