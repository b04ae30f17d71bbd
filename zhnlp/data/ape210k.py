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
tokenizes once and is capped at ``MAX_BRACKET_WORK`` (bracket pairs x tokens, at most one
trial evaluation per pair). Worst rows measured by ``python -m benchmarks bench_hostile``.

Speed: the equation is tokenized and evaluated once for steps 6 and 7, and step 7 skips
the trial evaluation of a pair whose removal provably leaves the parse tree as it is (then
the value is bit-identical, so the rule keeps the removal); only the other pairs are
evaluated. Same output as the plain one-evaluation-per-pair loop, which
tests/test_ape210k.py keeps as the reference; rows/s in ``python -m benchmarks bench_ape210k``.
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
from zhnlp.data.safe_eval import UnsafeExpression, evaluate, safe_eval_tokens

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
_BRACKET = re.compile(r"[()]")

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


# Replacements as functions: the same strings as the templates r"(\1+\2)", r"\1+(", r"\1",
# r"(\1/100)", without re's per-call template handling (2.3 -> 0.8 us for steps 1 on an equation).
def _mixed_number(m: re.Match) -> str:
    return "(" + m[1] + "+" + m[2] + ")"


def _digit_bracket(m: re.Match) -> str:
    return m[1] + "+("


def _bracketed_fraction(m: re.Match) -> str:
    return m[1]


def _percent(m: re.Match) -> str:
    return "(" + m[1] + "/100)"


def normalize_question(question: str) -> str:
    """Steps 1-2 on the question text."""
    if "(" not in question:  # both patterns need one
        return question
    question = _MIXED_NUMBER.sub(_mixed_number, question)
    return _BRACKETED_FRACTION.sub(_bracketed_fraction, question)


def normalize_expression(expr: str, *, is_equation: bool) -> str:
    """Steps 1, 3, 4 (and 5 for the equation) on an equation or an answer."""
    if "(" in expr:  # both patterns need one
        expr = _MIXED_NUMBER.sub(_mixed_number, expr)
        expr = _DIGIT_BRACKET.sub(_digit_bracket, expr)
    if "%" in expr:
        expr = _PERCENT.sub(_percent, expr)
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


def remove_redundant_brackets(expr: str) -> str:
    """Drop bracket pairs, one at a time, whenever the value stays the same.

    ``(1*2)+3`` -> ``1*2+3``; ``(1+2)*3`` and ``1-(2+3)`` stay as they are.
    Raises UnsafeExpression if ``expr`` itself does not evaluate.
    """
    target, tokens = safe_eval_tokens(expr, max_abs=MAX_ABS)
    return _minimal_brackets(expr, tokens, target)


def _minimal_brackets(expr: str, tokens: list, target: float) -> str:
    """Step 7 on ``expr``, whose tokens evaluate to ``target``.

    Pairs are tried innermost first (by closing position), in one pass over the tokens.
    Dropping two bracket tokens equals re-reading the text without the two characters, since
    in a valid expression no bracket sits between two numbers. The expression kept so far
    always evaluates to a value the rule accepted, so a removal that leaves its parse tree
    as it is (:func:`_same_tree_without`) is kept without evaluating it.
    """
    pairs = tokens.count("(")  # balanced: the tokens evaluated
    if pairs * len(tokens) > MAX_BRACKET_WORK:
        raise RowError(f"too_long: equation: {pairs} bracket pairs x {len(tokens)} tokens > MAX_BRACKET_WORK={MAX_BRACKET_WORK}")
    if not pairs:
        return expr
    current: list = list(tokens)  # None where a bracket was dropped
    dropped: list[int] = []  # bracket ordinals (n-th bracket character of expr)
    # Per open bracket: whether its top level (outside inner kept pairs) holds an operator,
    # a binary + or -, a * or /; its token index and bracket ordinal. Signs are told from
    # binary +/- by the token before them: a dropped bracket there tells the same.
    groups: list[list] = [[False, False, False, -1, -1]]
    brackets = 0
    for t, tok in enumerate(tokens):
        if tok.__class__ is float:
            continue
        if tok == "(":
            groups.append([False, False, False, t, brackets])
            brackets += 1
        elif tok == ")":
            has_op, has_sum, has_product, left, left_no = groups.pop()
            brackets += 1
            if has_op and not _same_tree_without(tokens, left, t, has_sum, has_product):
                current[left] = current[t] = None
                try:
                    same = _same_value(evaluate([tok for tok in current if tok is not None], max_abs=MAX_ABS), target)
                except UnsafeExpression:
                    same = False  # e.g. the pair was needed for the syntax
                if not same:
                    current[left], current[t] = "(", ")"
                    continue
            current[left] = current[t] = None
            dropped += (left_no, brackets - 1)
            parent = groups[-1]  # its top level now holds the group's operators
            parent[0] |= has_op
            parent[1] |= has_sum
            parent[2] |= has_product
        else:
            group = groups[-1]
            group[0] = True
            if tok == "+" or tok == "-":
                before = tokens[t - 1] if t else None
                if before.__class__ is float or before == ")":
                    group[1] = True
            elif tok == "*" or tok == "/":
                group[2] = True
    if not dropped:
        return expr
    where = [m.start() for m in _BRACKET.finditer(expr)]
    parts, start = [], 0
    for column in sorted(where[n] for n in dropped):
        parts.append(expr[start:column])
        start = column + 1
    parts.append(expr[start:])
    return "".join(parts)


def _same_tree_without(tokens: list, left: int, right: int, has_sum: bool, has_product: bool) -> bool:
    """Whether dropping the brackets at ``left`` and ``right`` keeps the parse tree.

    For E, the bracketed expression, with operators at its top level (E a single number or
    group needs no check). Only sure cases answer True (the caller evaluates the others): E
    with no binary operator at its top level (a signed value or a power), not followed by
    ``**``; E a product, not followed by ``**``, after the start, ``(`` or a binary ``+``/``-``;
    E a sum, after the start or ``(`` and before the end, ``)``, ``+`` or ``-``. The tokens
    next to the pair are never dropped ones (no pair closed so far holds them), so the
    original tokens serve.
    """
    after = tokens[right + 1] if right + 1 < len(tokens) else None
    if not has_sum:
        if after == "**":
            return False
        if not has_product:
            return True
    before = tokens[left - 1] if left else None
    if before is None or before == "(":
        return not has_sum or after is None or after == ")" or after == "+" or after == "-"
    if has_sum or (before != "+" and before != "-"):
        return False
    sign_prev = tokens[left - 2] if left >= 2 else None  # a sign after a number or ')' is binary
    return sign_prev.__class__ is float or sign_prev == ")"


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
        equation_value, equation_tokens = safe_eval_tokens(norm_equation, max_abs=MAX_ABS)
    except UnsafeExpression as err:
        raise ProblemDropped(f"equation_error: {err} in {norm_equation!r}") from err
    try:
        answer_value, _ = safe_eval_tokens(norm_answer, max_abs=MAX_ABS)
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
        "equation": _minimal_brackets(norm_equation, equation_tokens, equation_value),
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
