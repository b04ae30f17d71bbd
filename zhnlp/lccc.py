"""LCCC multi-turn dialogue reading and cleaning, streaming.

Two official formats are read without loading the whole file:

* JSON (``.json``): a top-level object of split -> list of dialogues
  (``toy_data.json``: ``{"train": [[turn, ...], ...], "valid": [...], ...}``) or a
  top-level list of dialogues (the per-split files such as ``LCCC-base_train.json``).
  A small hand-written scanner walks the top-level structure and decodes one dialogue
  at a time with ``json.JSONDecoder.raw_decode``; memory is bounded by the read chunk
  plus the largest single dialogue (capped at ``MAX_ELEMENT_CHARS``).
* Text (``.txt`` / ``.tsv``): one dialogue a line, turns separated by TAB.

In both, turns are space-separated characters; :func:`rejoin` undoes that and
:class:`DialogueCleaner` applies the limits from params (``DialogueLimits``).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa

from zhnlp.rows import BadInputError, RowPolicy, iter_text_lines

__all__ = [
    "LCCC_SCHEMA",
    "DialogueLimits",
    "DialogueCleaner",
    "rejoin",
    "iter_raw_dialogues",
    "iter_dialogues",
]

CHUNK_BYTES = 256 << 10  # bytes read at a time from a JSON file (peak memory ~5x this)
MAX_ELEMENT_CHARS = 16 << 20  # one JSON dialogue longer than this is a fatal error
JSON_SUFFIXES = (".json",)
TEXT_SUFFIXES = (".txt", ".tsv")
_WS = re.compile(r"[ \t\n\r]*")

# One row per kept dialogue, as yielded by iter_dialogues.
LCCC_SCHEMA = pa.schema(
    [
        pa.field("dialogue_id", pa.string(), nullable=False),  # "<file stem>:<line>"
        pa.field("turns", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False),
        pa.field("n_turns", pa.int32(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),  # line where the dialogue starts
    ]
)


# ---------------------------------------------------------------- JSON scanner


class _JsonScanner:
    """Incremental reader over one JSON file: a text buffer, a position and the line at it.

    ``line`` is always the 1-based line of ``buf[pos]``; it advances by counting the
    newlines consumed. Invalid UTF-8 is raised only when the parser reaches it, so
    every dialogue before the bad bytes is still produced.
    """

    def __init__(self, path: str | Path, fh: BinaryIO, chunk_bytes: int = CHUNK_BYTES):
        self.path, self.fh, self.chunk_bytes = path, fh, chunk_bytes
        self.buf, self.pos, self.line = "", 0, 1
        self.eof = False
        self._tail = b""  # an incomplete UTF-8 sequence cut at the chunk end
        self._raw_lines = 0  # newlines in bytes decoded so far (for UTF-8 errors)
        self._utf8_error: BadInputError | None = None
        self._decoder = json.JSONDecoder()
        self._started = False

    def error(self, reason: str, line: int | None = None) -> BadInputError:
        return BadInputError(self.path, self.line if line is None else line, reason)

    # -- buffer

    def _fill(self) -> bool:
        """Append the next chunk to the buffer (dropping the consumed prefix); False at EOF."""
        if self._utf8_error is not None:
            raise self._utf8_error
        if self.eof:
            return False
        data = self.fh.read(self.chunk_bytes)
        self.eof = not data
        if self._tail:
            data = self._tail + data
        if not data:
            return False
        try:
            # final=False leaves a sequence cut at the chunk end for the next read
            text, used = codecs.utf_8_decode(data, "strict", self.eof)
        except UnicodeDecodeError as err:
            self._utf8_error = self._utf8(data, err.start)  # raised on the next fill
            text, used = codecs.utf_8_decode(data[: err.start], "strict", True)
        self._tail = data[used:] if self._utf8_error is None else b""
        del data
        self._raw_lines += text.count("\n")
        if text and not self._started:  # a UTF-8 byte order mark is allowed at the start
            text, self._started = text.removeprefix("\ufeff"), True
        rest, self.buf = self.buf[self.pos :], ""  # free the old buffer before joining
        self.buf, self.pos = (rest + text if rest else text), 0
        return True

    def _utf8(self, data: bytes, start: int) -> BadInputError:
        line = self._raw_lines + data[:start].count(b"\n") + 1
        return BadInputError(self.path, line, f"invalid utf-8: byte 0x{data[start]:02x}")

    def _advance(self, end: int) -> None:
        self.line += self.buf.count("\n", self.pos, end)
        self.pos = end

    def peek(self) -> str:
        """The next non-whitespace character ('' at end of file), without consuming it."""
        while True:
            pos = _WS.match(self.buf, self.pos).end()
            self._advance(pos)
            if pos < len(self.buf):
                return self.buf[pos]
            if not self._fill():
                return ""

    def expect(self, chars: str, where: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            found = repr(c) if c else "end of file"
            want = " or ".join(repr(x) for x in chars)
            raise self.error(f"malformed json: expected {want} {where}, found {found}")
        self._advance(self.pos + 1)
        return c

    def value(self) -> tuple[int, Any]:
        """Decode the JSON value at the cursor; returns (its start line, value)."""
        self.peek()
        start_line = self.line
        while True:
            try:
                obj, end = self._decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as err:
                # Cut at the buffer end: read more and decode again from the same start.
                cut = err.pos >= len(self.buf) - 8 or err.msg.startswith("Unterminated string")
                if cut and self._more():
                    continue
                line = start_line + self.buf.count("\n", self.pos, err.pos)
                msg = err.msg.replace(" starting at", "").removesuffix(" at")
                why = f"malformed json: {msg} (element starting at line {start_line})"
                raise self.error(why, line) from None
            # A number or literal ending exactly at the buffer end may continue in the next chunk.
            if end == len(self.buf) and self._more():
                continue
            self._advance(end)
            return start_line, obj

    def _more(self) -> bool:
        if len(self.buf) - self.pos > MAX_ELEMENT_CHARS:
            raise self.error(f"json element longer than MAX_ELEMENT_CHARS={MAX_ELEMENT_CHARS:,} characters")
        return self._fill()

    # -- structure

    def iter_array(self, where: str) -> Iterator[tuple[int, Any]]:
        """Yield (line, element) for each element of the array at the cursor."""
        self.expect("[", where)
        if self.peek() == "]":
            self._advance(self.pos + 1)
            return
        while True:
            yield self.value()
            if self.expect(",]", f"after an element of {where}") == "]":
                return

    def skip_value(self, where: str) -> None:
        """Consume one value; an array is skipped element by element (never held whole)."""
        if self.peek() == "[":
            for _ in self.iter_array(where):
                pass
        else:
            self.value()

    def end(self) -> None:
        c = self.peek()
        if c:
            raise self.error(f"malformed json: unexpected data after the top-level value: {c!r}")


def _iter_json(path: str | Path, key: str | None, chunk_bytes: int) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) for the dialogues of a top-level list or of split ``key``."""
    with open(path, "rb") as fh:
        sc = _JsonScanner(path, fh, chunk_bytes)
        top = sc.peek()
        if top == "[":
            if key is not None:
                raise sc.error(f"top-level JSON is a list of dialogues, it has no split {key!r} (use key=None)")
            yield from sc.iter_array("the top-level list")
            sc.end()
            return
        if top != "{":
            found = repr(top) if top else "end of file"
            raise sc.error(f"malformed json: expected a top-level list or object, found {found}")
        sc.expect("{", "")
        keys: list[str] = []
        found = False
        if sc.peek() == "}":
            sc.expect("}", "")
        else:
            while True:
                if sc.peek() != '"':
                    raise sc.error("malformed json: expected a split name (a string) in the top-level object")
                _, name = sc.value()
                sc.expect(":", f"after key {name!r}")
                if name in keys:
                    raise sc.error(f"duplicate top-level key {name!r}")
                keys.append(name)
                if name == key:
                    found = True
                    if sc.peek() != "[":
                        raise sc.error(f"split {key!r} is not a list of dialogues")
                    yield from sc.iter_array(f"split {key!r}")
                else:
                    sc.skip_value(f"split {name!r}")
                if sc.expect(",}", "after a split in the top-level object") == "}":
                    break
        sc.end()
        if not found:
            want = "pass key=<split>" if key is None else f"no split {key!r}"
            raise BadInputError(path, 1, f"top-level JSON object: {want}; keys found: {keys}")


def _check_dialogue(path: str | Path, line: int, idx: int, obj: Any, policy: RowPolicy) -> list[str] | None:
    """The turns of JSON dialogue number ``idx``, or None after rejecting a malformed one."""
    if not isinstance(obj, list):
        policy.reject(path, line, f"bad_dialogue: dialogue #{idx} is {type(obj).__name__}, expected a list", obj)
        return None
    for i, turn in enumerate(obj):
        if not isinstance(turn, str):
            why = f"bad_turn: dialogue #{idx} turn {i} is {type(turn).__name__}, expected a string"
            policy.reject(path, line, why, obj)
            return None
    return obj


def iter_raw_dialogues(
    path: str | Path, policy: RowPolicy, key: str | None = None, *, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line where the dialogue starts, raw turns) from an LCCC file, streaming.

    The format follows the suffix: ``.json`` (``key`` picks a split of a top-level
    object; ``key=None`` for a top-level list) or ``.txt``/``.tsv`` (TAB-separated
    turns, one dialogue a line). Malformed dialogues go to ``policy.reject``; broken
    JSON structure, invalid UTF-8 in JSON and a missing split raise ``BadInputError``.
    ``chunk_bytes`` is the JSON read size (peak memory ~5x it plus one dialogue).
    """
    suffix = Path(path).suffix.lower()
    if suffix in JSON_SUFFIXES:
        for idx, (line, obj) in enumerate(_iter_json(path, key, chunk_bytes)):
            turns = _check_dialogue(path, line, idx, obj, policy)
            if turns is not None:
                yield line, turns
    elif suffix in TEXT_SUFFIXES:
        if key is not None:
            raise ValueError(f"{path}: key={key!r} applies only to JSON files")
        for line, text in iter_text_lines(path, policy):
            yield line, text.split("\t")
    else:
        raise ValueError(f"{path}: unknown LCCC format {suffix!r}; expected {JSON_SUFFIXES + TEXT_SUFFIXES}")


# ---------------------------------------------------------------- cleaning


def _is_word(tok: str) -> bool:
    return tok.isascii() and tok.isalnum()


def rejoin(text: str) -> str:
    """Undo LCCC's space-separated characters.

    Rule: split on whitespace and join the tokens with nothing in between, except
    that one space is kept between two adjacent tokens that are both ASCII
    letters/digits when at least one of them is longer than one character (an
    already-whole word). So ``"h a p p y"`` -> ``"happy"``, ``"1 2 8 g"`` -> ``"128g"``,
    ``"2 4 小 时"`` -> ``"24小时"``, ``"你 好 ！"`` -> ``"你好！"``, while
    ``"i love you"`` stays as it is. The result is stripped.
    """
    toks = text.split()
    joined = "".join(toks)
    if len(joined) == len(toks):  # all single characters: the common case
        return joined
    out = [toks[0]]
    for prev, tok in zip(toks, toks[1:]):
        if (len(prev) > 1 or len(tok) > 1) and _is_word(prev) and _is_word(tok):
            out.append(" ")
        out.append(tok)
    return "".join(out).strip()


@dataclass
class DialogueLimits:
    """Cleaning limits (``params.yaml``)."""

    min_turns: int = 2
    max_turns: int = 32
    max_turn_chars: int = 256
    dedupe: bool = True


class DialogueCleaner:
    """Rejoins turns and applies :class:`DialogueLimits`; one instance spans all files.

    Per dialogue, after :func:`rejoin`: empty turns are removed (those before any
    cut are counted in ``empty_turns_removed``); a turn longer than
    ``max_turn_chars`` cuts the dialogue just before it, and more than
    ``max_turns`` turns keep the first ``max_turns`` (either counted once in
    ``truncated_dialogues``); fewer than ``min_turns`` left is dropped as
    ``too_few_turns``; an exact repeat of an earlier cleaned dialogue (any file
    or split seen by this cleaner) is dropped as ``duplicate``.

    Dedupe memory: one 8-byte blake2b digest per unique dialogue, kept as a Python
    int in a set: about 70 bytes each in CPython (50-100 with the set's fill),
    ~0.85 GB for the 12M dialogues of LCCC-large. The first-seen location is not
    kept (a dict of locations measured ~110 bytes per dialogue), so the drop reason
    is just ``duplicate``. A 64-bit digest collision (p ~ 4e-6 at 12M) would drop
    one distinct dialogue.
    """

    def __init__(self, limits: DialogueLimits | None = None):
        self.limits = limits or DialogueLimits()
        self.seen = 0
        self.kept = 0
        self.empty_turns_removed = 0
        self.truncated_dialogues = 0
        self._digests: set[int] = set()

    def clean(self, path: str | Path, line: int, turns: list[str], policy: RowPolicy) -> list[str] | None:
        """The cleaned turns, or None after ``policy.drop`` with the reason."""
        lim = self.limits
        self.seen += 1
        out: list[str] = []
        for turn in turns:
            text = rejoin(turn)
            if not text:
                self.empty_turns_removed += 1
            elif len(text) > lim.max_turn_chars or len(out) == lim.max_turns:
                self.truncated_dialogues += 1  # keep the turns before this one
                break
            else:
                out.append(text)
        if len(out) < lim.min_turns:
            policy.drop(path, line, f"too_few_turns: {len(out)} after cleaning, need {lim.min_turns}", turns)
            return None
        if lim.dedupe:
            h = hashlib.blake2b("\n".join(out).encode("utf-8"), digest_size=8).digest()
            digest = int.from_bytes(h, "little")
            if digest in self._digests:
                policy.drop(path, line, "duplicate: same turns as an earlier dialogue", turns)
                return None
            self._digests.add(digest)
        self.kept += 1
        return out

    def stats(self) -> dict[str, int]:
        return {
            "dialogues_seen": self.seen,
            "dialogues_kept": self.kept,
            "empty_turns_removed": self.empty_turns_removed,
            "truncated_dialogues": self.truncated_dialogues,
        }


def iter_dialogues(
    path: str | Path, policy: RowPolicy, cleaner: DialogueCleaner, key: str | None = None
) -> Iterator[dict]:
    """Yield cleaned dialogues: ``{"dialogue_id", "turns", "n_turns", "line"}``.

    ``dialogue_id`` is ``"<file stem>:<line>"``; in JSON written without line
    breaks several dialogues share a line, and the k-th (k >= 1) after the first
    gets ``"<file stem>:<line>.<k>"`` so ids stay unique within a file.
    """
    stem = Path(path).stem
    prev_line, k = 0, 0
    for line, raw in iter_raw_dialogues(path, policy, key):
        k = k + 1 if line == prev_line else 0
        prev_line = line
        turns = cleaner.clean(path, line, raw, policy)
        if turns is not None:
            did = f"{stem}:{line}" if k == 0 else f"{stem}:{line}.{k}"
            yield {"dialogue_id": did, "turns": turns, "n_turns": len(turns), "line": line}
