"""Ape210K normalisation and answer-check filter (spec: techniques.md section 3).

Steps, in the published order:
 1. mixed number ``a(b/c)`` -> ``(a+b/c)`` everywhere; then ``digit(`` -> ``digit+(``
    in equation and answer;
 2. question only: ``(a/b)`` -> ``a/b``;
 3. ``x%`` -> ``(x/100)`` in equation and answer; any leftover ``%`` -> ``/100``;
 4. ``:`` -> ``/`` in equation and answer;
 5. strip a leading ``x=`` from the equation;
 6. keep the problem only if equation and answer evaluate, and agree to 6 decimals;
 7. remove redundant brackets one pair at a time while the value is unchanged.

Bounded work per row: each field is length-checked (``MAX_FIELD_CHARS``) before any regex
touches it, and a longer one is a bad row (``too_long``). The regexes are anchored at the
start of a digit run (look-behind), so each runs in time linear in the field, and step 7
tokenizes once and is capped at ``MAX_BRACKET_WORK`` (bracket pairs x tokens, one trial
evaluation per pair). Worst rows measured by ``python -m benchmarks bench_hostile``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from zhnlp.config import ConfigError, check_name, from_params, in_range
from zhnlp.data.rows import RowError, RowPolicy, iter_json_lines
from zhnlp.data.split_carving import parse_carves
from zhnlp.data.safe_eval import UnsafeExpression, evaluate, safe_eval, tokenize

__all__ = [
    "APE_SCHEMA",
    "ApeParams",
    "ProblemDropped",
    "normalize_problem",
    "iter_problems",
    "remove_redundant_brackets",
    "normalize_question",
    "normalize_expression",
    "answers_agree",
]

# The look-behinds start a match only at the start of a digit run: the same matches as
# without them (a run that fails at its start fails at every later start), in linear time.
_MIXED_NUMBER = re.compile(r"(?<!\d)(\d+)\((\d+/\d+)\)")  # 1(5/6) -> (1+5/6)
_DIGIT_BRACKET = re.compile(r"(?<!\d)(\d+)\(")  # 2(  -> 2+(
_BRACKETED_FRACTION = re.compile(r"\((\d+/\d+)\)")  # (1/5) -> 1/5
_PERCENT = re.compile(r"(?<![.\d])([.\d]+)%")  # 25% -> (25/100)

# Per-field limits, checked before any regex (real data: question <= 259, equation <= 217,
# answer <= 27 characters in valid.ape.json). Anything that could pass safe_eval's 512
# characters after normalisation is under them.
MAX_FIELD_CHARS = {"original_text": 4096, "equation": 1024, "ans": 1024, "id": 64}
# Step 7 evaluates the equation once per bracket pair, so pairs x tokens is capped: the
# largest in valid.ape.json is 11,395 (the next 4,170); 20,000 costs ~5 ms on one core.
MAX_BRACKET_WORK = 20_000

# Magnitude bound for Ape210K values: the data has exact answers as large as
# 1111111111*1111111111 (~1.2e18), which the published filter keeps.
MAX_ABS = 1e20

# "Value unchanged" when dropping brackets: tolerate float re-association noise
# only (tighter than the 6-decimal answer check; same output on valid.ape.json).
_SAME_VALUE_REL_TOL = 1e-9
_SAME_VALUE_ABS_TOL = 1e-12


class ProblemDropped(ValueError):
    """A well-formed problem removed by the answer-check rule (step 6)."""


def normalize_question(question: str) -> str:
    """Steps 1-2 on the question text."""
    question = _MIXED_NUMBER.sub(r"(\1+\2)", question)
    return _BRACKETED_FRACTION.sub(r"\1", question)


def normalize_expression(expr: str, *, is_equation: bool) -> str:
    """Steps 1, 3, 4 (and 5 for the equation) on an equation or an answer."""
    expr = _MIXED_NUMBER.sub(r"(\1+\2)", expr)
    expr = _DIGIT_BRACKET.sub(r"\1+(", expr)
    expr = _PERCENT.sub(r"(\1/100)", expr)
    expr = expr.replace("%", "/100").replace(":", "/")
    if is_equation and expr.startswith("x="):
        expr = expr[2:]
    return expr


def answers_agree(a: float, b: float) -> bool:
    """The published check: equal after rounding both to 6 decimals."""
    return round(a, 6) == round(b, 6)


def _fmt(value: float) -> str:
    return f"{round(value, 6):.15g}"


def _same_value(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=_SAME_VALUE_REL_TOL, abs_tol=_SAME_VALUE_ABS_TOL)


def _bracket_pairs(expr: str) -> list[tuple[int, int]]:
    """(open, close) index pairs, ordered by closing position (innermost first)."""
    opens: list[int] = []
    pairs: list[tuple[int, int]] = []
    for i, ch in enumerate(expr):
        if ch == "(":
            opens.append(i)
        elif ch == ")":
            if not opens:
                raise UnsafeExpression(f"unbalanced brackets: ')' at column {i + 1}")
            pairs.append((opens.pop(), i))
    if opens:
        raise UnsafeExpression("unbalanced brackets: missing ')'")
    return pairs


def remove_redundant_brackets(expr: str) -> str:
    """Drop bracket pairs, one at a time, whenever the value stays the same.

    ``(1*2)+3`` -> ``1*2+3``; ``(1+2)*3`` and ``1-(2+3)`` stay as they are.
    Raises UnsafeExpression if ``expr`` itself does not evaluate.

    Tokens are read once; dropping two bracket tokens equals re-reading the text without the
    two characters, since in a valid expression no bracket sits between two numbers.
    """
    target = safe_eval(expr, max_abs=MAX_ABS)
    pairs = _bracket_pairs(expr)
    tokens = tokenize(expr)
    if len(pairs) * len(tokens) > MAX_BRACKET_WORK:
        raise RowError(f"too_long: equation: {len(pairs)} bracket pairs x {len(tokens)} tokens > MAX_BRACKET_WORK={MAX_BRACKET_WORK}")
    brackets = [t for t, tok in enumerate(tokens) if tok in ("(", ")")]
    index = dict(zip((i for i, ch in enumerate(expr) if ch in "()"), brackets))  # char -> token position
    chars, keep = list(expr), [True] * len(tokens)
    for left, right in pairs:
        trial = keep.copy()
        trial[index[left]] = trial[index[right]] = False
        try:
            if _same_value(evaluate([tok for tok, k in zip(tokens, trial) if k], max_abs=MAX_ABS), target):
                keep = trial
                chars[left] = chars[right] = ""
        except UnsafeExpression:
            pass  # e.g. the pair was needed for the syntax
    return "".join(chars)


def _text_field(raw: dict, name: str) -> str:
    if name not in raw:
        raise RowError(f"missing field: {name}")
    value = raw[name]
    if not isinstance(value, str):
        raise RowError(f"mistyped field: {name} must be a string, got {type(value).__name__}")
    return _bounded(name, value)


def _bounded(name: str, value: str) -> str:
    if len(value) > MAX_FIELD_CHARS[name]:
        raise RowError(f"too_long: {name}: {len(value):,} > {MAX_FIELD_CHARS[name]:,} characters")
    return value


def _id_field(raw: dict) -> str:
    if "id" not in raw:
        raise RowError("missing field: id")
    value = raw["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RowError(f"mistyped field: id must be an int or a string, got {type(value).__name__}")
    return _bounded("id", str(value))


def normalize_problem(raw: dict) -> dict:
    """One raw Ape210K row -> a normalised problem, or RowError / ProblemDropped."""
    problem_id = _id_field(raw)
    question = _text_field(raw, "original_text")
    equation = _text_field(raw, "equation")
    answer = _text_field(raw, "ans")
    if not question.strip():
        raise RowError("empty text: original_text")

    norm_equation = normalize_expression(equation, is_equation=True)
    norm_answer = normalize_expression(answer, is_equation=False)
    try:
        equation_value = safe_eval(norm_equation, max_abs=MAX_ABS)
    except UnsafeExpression as err:
        raise ProblemDropped(f"equation_error: {err} in {norm_equation!r}") from err
    try:
        answer_value = safe_eval(norm_answer, max_abs=MAX_ABS)
    except UnsafeExpression as err:
        raise ProblemDropped(f"answer_error: {err} in {norm_answer!r}") from err
    if not answers_agree(equation_value, answer_value):
        raise ProblemDropped(
            f"answer_mismatch: {_fmt(equation_value)} != {_fmt(answer_value)}"
            f" ({norm_equation} vs {norm_answer})"
        )

    return {
        "id": problem_id,
        "question": normalize_question(question),
        "equation": remove_redundant_brackets(norm_equation),
        "answer": norm_answer,
        "answer_value": answer_value,
        "original_equation": equation,
        "original_answer": answer,
    }


def iter_problems(path: str | Path, policy: RowPolicy) -> Iterator[dict[str, Any]]:
    """Stream normalised problems from a JSON-lines ``.ape.json`` file.

    Malformed rows go to ``policy.reject``, rows failing the answer check to
    ``policy.drop``; each kept row gets its 1-based ``line``.
    """
    for line_no, raw in iter_json_lines(path, policy):
        try:
            problem = normalize_problem(raw)
        except RowError as err:
            policy.reject(path, line_no, str(err), raw)
            continue
        except ProblemDropped as err:
            policy.drop(path, line_no, str(err), raw)
            continue
        problem["line"] = line_no
        yield problem


APE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("question", pa.string(), nullable=False),  # normalised original_text
        pa.field("equation", pa.string(), nullable=False),  # normalised, no "x=", minimal brackets
        pa.field("answer", pa.string(), nullable=False),  # normalised answer expression
        pa.field("answer_value", pa.float64(), nullable=False),
        pa.field("original_equation", pa.string(), nullable=False),
        pa.field("original_answer", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),  # line in the source file
    ]
)


@dataclass
class ApeParams:
    """The ``ape210k:`` params section (``prepare_ape210k``)."""

    path: str
    splits: dict  # split name -> file name under path
    on_bad_rows: Literal["fail", "skip"] = "fail"
    max_bad_ratio: float = 0.1  # under skip: more bad rows than this share of a split fails it
    carve: dict = field(default_factory=dict)  # new split -> {of: shipped split, share} (zhnlp.data.split_carving)

    def validate(self, where: str) -> None:
        in_range(f"{where}.max_bad_ratio", self.max_bad_ratio, 0.0, 1.0)
        if not self.splits:
            raise ConfigError(f"{where}.splits: no splits; add one, e.g. train: train.ape.json")
        for name, fname in self.splits.items():
            check_name(f"{where}.splits", name)
            if not isinstance(fname, str) or not fname:
                raise ConfigError(f"{where}.splits.{name}: {fname!r} is not allowed; expected a file name")
        self.carve = parse_carves(self.carve, self.splits, f"{where}.carve")

    @classmethod
    def from_params(cls, section: Any) -> "ApeParams":
        return from_params(cls, section, "ape210k")
