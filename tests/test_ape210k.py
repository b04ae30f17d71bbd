"""Ape210K normalisation, answer-check filter and bad-row handling."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from shared_data import shared_data_dir
from test_safe_eval import hostile_expressions, outcome, reference_evaluate, reference_safe_eval, reference_tokenize
from zhnlp.data.ape210k import (
    MAX_ABS,
    MAX_BRACKET_WORK,
    MAX_FIELD_CHARS,
    ProblemDropped,
    iter_problems,
    normalize_expression,
    normalize_problem,
    normalize_question,
    remove_redundant_brackets,
)
from zhnlp.data.rows import BadInputError, RowError, RowPolicy
from zhnlp.data.safe_eval import UnsafeExpression, safe_eval


def raw_problem(**overrides) -> dict:
    row = {"id": "1", "original_text": "3个苹果加2个苹果是几个？", "equation": "x=3+2", "ans": "5"}
    row.update(overrides)
    return row


# --- normalisation steps -------------------------------------------------------


def test_mixed_number_everywhere() -> None:
    assert normalize_question("长1(5/6)米") == "长(1+5/6)米"
    assert normalize_expression("x=1(5/6)*6", is_equation=True) == "(1+5/6)*6"
    assert normalize_expression("2(1/3)", is_equation=False) == "(2+1/3)"


def test_digit_bracket_becomes_plus_in_equation_and_answer_only() -> None:
    assert normalize_expression("x=2(3+4)", is_equation=True) == "2+(3+4)"
    assert normalize_expression("2(3+4)", is_equation=False) == "2+(3+4)"
    assert normalize_question("第2(3)班") == "第2(3)班"


def test_bracketed_fraction_in_question_only() -> None:
    assert normalize_question("完成了(1/5)，又完成(2/3)") == "完成了1/5，又完成2/3"
    assert normalize_expression("x=1-(1/5)", is_equation=True) == "1-(1/5)"


def test_percentages() -> None:
    assert normalize_expression("x=200*(1+20%)", is_equation=True) == "200*(1+(20/100))"
    assert normalize_expression("12.5%", is_equation=False) == "(12.5/100)"
    assert normalize_expression("x=(1+2)%", is_equation=True) == "(1+2)/100"  # leftover %


def test_colon_and_leading_x() -> None:
    assert normalize_expression("x=3:4", is_equation=True) == "3/4"
    assert normalize_expression("3:4", is_equation=False) == "3/4"
    assert normalize_expression("(60*45)/100", is_equation=True) == "(60*45)/100"  # no x=


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("(1+2)*3", "(1+2)*3"),
        ("(1*2)+3", "1*2+3"),
        ("1-(2+3)", "1-(2+3)"),
        ("1+(2+3)", "1+2+3"),
        ("((1/2))*4", "1/2*4"),
        ("6/(2*3)", "6/(2*3)"),
        ("(-1)**6", "(-1)**6"),
        ("1-(1/5)-(1/4)", "1-1/5-1/4"),
        ("6000/(1+(3/5))", "6000/(1+3/5)"),
    ],
)
def test_remove_redundant_brackets(expr: str, expected: str) -> None:
    out = remove_redundant_brackets(expr)
    assert out == expected
    assert safe_eval(out) == pytest.approx(safe_eval(expr), rel=1e-12)


def test_normalize_problem_output() -> None:
    raw = raw_problem(id=42, original_text="一根绳子长1(1/2)米，用去(1/3)米", equation="x=1(1/2)-(1/3)", ans="1(1/6)")
    out = normalize_problem(raw)
    assert out == {
        "id": "42",
        "question": "一根绳子长(1+1/2)米，用去1/3米",
        "equation": "1+1/2-1/3",
        "answer": "(1+1/6)",
        "answer_value": pytest.approx(7 / 6),
        "original_equation": "x=1(1/2)-(1/3)",
        "original_answer": "1(1/6)",
    }


def test_percent_answer_is_checked() -> None:
    out = normalize_problem(raw_problem(equation="x=47.1/(3.14*(4/2)**2*5)", ans="75%"))
    assert out["answer"] == "(75/100)" and out["answer_value"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"ans": "6"}, "answer_mismatch"),
        ({"equation": "x=1/0"}, "equation_error"),
        ({"ans": "大约5"}, "answer_error"),
    ],
)
def test_problem_dropped(overrides: dict, key: str) -> None:
    with pytest.raises(ProblemDropped, match=rf"^{key}: "):
        normalize_problem(raw_problem(**overrides))


def test_answer_agreement_is_rounded_to_6_decimals() -> None:
    assert normalize_problem(raw_problem(equation="x=1/3", ans="0.3333333"))["answer"] == "0.3333333"
    with pytest.raises(ProblemDropped, match="^answer_mismatch: 0.333333 != 0.333334"):
        normalize_problem(raw_problem(equation="x=1/3", ans="0.333334"))


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"id": "1", "equation": "x=1", "ans": "1"}, "missing field: original_text"),
        (raw_problem(equation=5), "mistyped field: equation"),
        (raw_problem(ans=5), "mistyped field: ans"),
        (raw_problem(id=1.5), "mistyped field: id"),
        (raw_problem(original_text="  "), "empty text: original_text"),
    ],
)
def test_malformed_rows(raw: dict, message: str) -> None:
    with pytest.raises(RowError, match=f"^{message}"):
        normalize_problem(raw)


# --- bad rows through iter_problems -----------------------------------------------


def good_line() -> bytes:
    return json.dumps(raw_problem(), ensure_ascii=False).encode("utf-8")


BAD_LINES = {
    "malformed_json": (b'{"id": "2", "original_text": ', "malformed json"),
    "missing_field": (json.dumps({"id": "2", "original_text": "q", "ans": "1"}).encode(), "missing field: equation"),
    "mistyped_field": (json.dumps(raw_problem(ans=5)).encode(), "mistyped field: ans"),
    "empty_text": (json.dumps(raw_problem(original_text="")).encode(), "empty text: original_text"),
    "invalid_utf8": (b'{"id": "2", "original_text": "\xff\xfe", "equation": "x=1", "ans": "1"}', "invalid utf-8"),
}


@pytest.mark.parametrize("kind", BAD_LINES)
def test_bad_row_fails_with_file_line_and_reason(tmp_path: Path, kind: str) -> None:
    bad, reason = BAD_LINES[kind]
    path = tmp_path / f"{kind}.ape.json"
    path.write_bytes(good_line() + b"\n" + bad + b"\n" + good_line() + b"\n")
    with pytest.raises(BadInputError) as info:
        list(iter_problems(path, RowPolicy("fail")))
    message = str(info.value)
    assert path.name in message and ":2:" in message and reason in message
    assert info.value.line == 2


def test_bad_rows_skipped_counted_and_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "mixed.ape.json"
    dropped = json.dumps(raw_problem(ans="6")).encode()
    lines = [good_line()] + [bad for bad, _ in BAD_LINES.values()] + [dropped, good_line()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    quarantine = tmp_path / "q.jsonl"
    with RowPolicy("skip", quarantine=quarantine) as policy:
        rows = list(iter_problems(path, policy))
        metrics = policy.metrics()
    assert [row["line"] for row in rows] == [1, len(lines)]
    assert metrics == {
        "bad_rows": 5,
        "dropped_rows": 1,
        "bad_rows.empty_text": 1,
        "bad_rows.invalid_utf-8": 1,
        "bad_rows.malformed_json": 1,
        "bad_rows.missing_field": 1,
        "bad_rows.mistyped_field": 1,
        "dropped_rows.answer_mismatch": 1,
    }
    records = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()]
    assert [(r["kind"], r["line"]) for r in records] == [("bad_row", n) for n in range(2, 7)] + [("dropped", 7)]
    assert all(r["file"] == str(path) for r in records)
    assert records[-1]["reason"].startswith("answer_mismatch: 5 != 6")


# --- real data -----------------------------------------------------------------


def test_valid_split_matches_published_count(tmp_path: Path) -> None:
    path = shared_data_dir() / "ape210k" / "valid.ape.json"
    with RowPolicy("skip", quarantine=tmp_path / "q.jsonl") as policy:
        rows = list(iter_problems(path, policy))
        metrics = policy.metrics()
    assert len(rows) == 4999  # published: valid 5,000 -> 4,999
    assert metrics == {"bad_rows": 0, "dropped_rows": 1, "dropped_rows.answer_mismatch": 1}
    (record,) = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text(encoding="utf-8").splitlines()]
    # 八折 (80% of the price) written as (1-80%) in the source equation.
    assert record["raw"]["id"] == "1219785" and record["line"] == 4879
    assert record["reason"].startswith("answer_mismatch: 48 != 192")
    # Every kept equation evaluates to its answer and is free of the raw notations.
    for row in rows:
        assert round(safe_eval(row["equation"], max_abs=1e20), 6) == round(row["answer_value"], 6)
        assert not any(ch in row["equation"] for ch in "%:=x")
    assert len({row["id"] for row in rows}) == 4999


# --- the fast bracket minimisation against the reference ---------------------------
# A faithful copy of normalize_problem before the speed-up (one safe_eval per field and one
# full re-evaluation per bracket pair, on the reference tokenizer and parser of
# tests/test_safe_eval.py). benchmarks/bench_ape210k.py times it as "today's path".

_REF_MIXED_NUMBER = re.compile(r"(?<!\d)(\d+)\((\d+/\d+)\)")
_REF_DIGIT_BRACKET = re.compile(r"(?<!\d)(\d+)\(")
_REF_BRACKETED_FRACTION = re.compile(r"\((\d+/\d+)\)")
_REF_PERCENT = re.compile(r"(?<![.\d])([.\d]+)%")


def reference_normalize_question(question: str) -> str:
    question = _REF_MIXED_NUMBER.sub(r"(\1+\2)", question)
    return _REF_BRACKETED_FRACTION.sub(r"\1", question)


def reference_normalize_expression(expr: str, *, is_equation: bool) -> str:
    expr = _REF_MIXED_NUMBER.sub(r"(\1+\2)", expr)
    expr = _REF_DIGIT_BRACKET.sub(r"\1+(", expr)
    expr = _REF_PERCENT.sub(r"(\1/100)", expr)
    expr = expr.replace("%", "/100").replace(":", "/")
    if is_equation and expr.startswith("x="):
        expr = expr[2:]
    return expr


def _reference_same_value(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _reference_bracket_pairs(expr: str) -> list[tuple[int, int]]:
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


def reference_remove_redundant_brackets(expr: str) -> str:
    target = reference_safe_eval(expr, max_abs=MAX_ABS)
    pairs = _reference_bracket_pairs(expr)
    tokens = reference_tokenize(expr)
    if len(pairs) * len(tokens) > MAX_BRACKET_WORK:
        raise RowError(f"too_long: equation: {len(pairs)} bracket pairs x {len(tokens)} tokens > MAX_BRACKET_WORK={MAX_BRACKET_WORK}")
    brackets = [t for t, tok in enumerate(tokens) if tok in ("(", ")")]
    index = dict(zip((i for i, ch in enumerate(expr) if ch in "()"), brackets))
    chars, keep = list(expr), [True] * len(tokens)
    for left, right in pairs:
        trial = keep.copy()
        trial[index[left]] = trial[index[right]] = False
        try:
            if _reference_same_value(reference_evaluate([tok for tok, k in zip(tokens, trial) if k], max_abs=MAX_ABS), target):
                keep = trial
                chars[left] = chars[right] = ""
        except UnsafeExpression:
            pass
    return "".join(chars)


def _reference_text_field(raw: dict, name: str) -> str:
    if name not in raw:
        raise RowError(f"missing field: {name}")
    value = raw[name]
    if not isinstance(value, str):
        raise RowError(f"mistyped field: {name} must be a string, got {type(value).__name__}")
    return _reference_bounded(name, value)


def _reference_bounded(name: str, value: str) -> str:
    if len(value) > MAX_FIELD_CHARS[name]:
        raise RowError(f"too_long: {name}: {len(value):,} > {MAX_FIELD_CHARS[name]:,} characters")
    return value


def _reference_id_field(raw: dict) -> str:
    if "id" not in raw:
        raise RowError("missing field: id")
    value = raw["id"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RowError(f"mistyped field: id must be an int or a string, got {type(value).__name__}")
    return _reference_bounded("id", str(value))


def _reference_fmt(value: float) -> str:
    return f"{round(value, 6):.15g}"


def reference_normalize_problem(raw: dict) -> dict:
    problem_id = _reference_id_field(raw)
    question = _reference_text_field(raw, "original_text")
    equation = _reference_text_field(raw, "equation")
    answer = _reference_text_field(raw, "ans")
    if not question.strip():
        raise RowError("empty text: original_text")
    norm_equation = reference_normalize_expression(equation, is_equation=True)
    norm_answer = reference_normalize_expression(answer, is_equation=False)
    try:
        equation_value = reference_safe_eval(norm_equation, max_abs=MAX_ABS)
    except UnsafeExpression as err:
        raise ProblemDropped(f"equation_error: {err} in {norm_equation!r}") from err
    try:
        answer_value = reference_safe_eval(norm_answer, max_abs=MAX_ABS)
    except UnsafeExpression as err:
        raise ProblemDropped(f"answer_error: {err} in {norm_answer!r}") from err
    if round(equation_value, 6) != round(answer_value, 6):
        raise ProblemDropped(
            f"answer_mismatch: {_reference_fmt(equation_value)} != {_reference_fmt(answer_value)}"
            f" ({norm_equation} vs {norm_answer})"
        )
    return {
        "id": problem_id,
        "question": reference_normalize_question(question),
        "equation": reference_remove_redundant_brackets(norm_equation),
        "answer": norm_answer,
        "answer_value": answer_value,
        "original_equation": equation,
        "original_answer": answer,
    }


def test_reference_is_wired_to_the_old_parser() -> None:
    # The reference really minimises, and really keeps needed pairs (not a copy of the new code).
    assert reference_remove_redundant_brackets("((1*2))+(3)") == "1*2+3"
    assert reference_remove_redundant_brackets("(1+2)*(1)") == "1+2*1"  # needed pair, same value: dropped
    assert reference_remove_redundant_brackets("(1+2)*3") == "(1+2)*3"


def problem_outcome(normalize, raw: dict):
    """The normalised dict (answer_value as its repr) or the error type and message."""
    try:
        out = normalize(raw)
    except (RowError, ProblemDropped) as err:
        return (type(err).__name__, str(err))
    return out | {"answer_value": repr(out["answer_value"])}


def test_normalize_problem_matches_reference_on_real_data() -> None:
    path = shared_data_dir() / "ape210k" / "valid.ape.json"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 5000
    changed = 0
    for raw in rows:
        new = problem_outcome(normalize_problem, raw)
        assert new == problem_outcome(reference_normalize_problem, raw), raw["id"]
        changed += isinstance(new, dict) and new["equation"] != normalize_expression(raw["equation"], is_equation=True)
    assert changed > 1000  # the minimisation is really exercised


def _hostile_rows() -> list[dict]:
    rng = random.Random(2024)
    rows = []
    for expr in hostile_expressions(4000, seed=7):
        try:
            value = reference_safe_eval(expr, max_abs=MAX_ABS)
            ans = rng.choice([f"{value:.12g}", f"{value:.3f}", "1", "(1/2)", "50%", "1(1/2)", "x"])
        except UnsafeExpression:
            ans = rng.choice(["1", "1/0", ""])
        equation = rng.choice(["x=", "x=", "", "x=1(1/2)+", "x=2(", "x=(1+2)%*"]) + expr + rng.choice(["", "", "%", ":2", "*0"])
        rows.append({"id": len(rows), "original_text": "问题(1/2)", "equation": equation, "ans": ans})
    rows += [
        {"id": "a", "original_text": "q", "equation": "x=" + "(1)+" * 99 + "1", "ans": "100"},  # over MAX_BRACKET_WORK
        {"id": "b", "original_text": "q", "equation": "x=" + "(1)+" * 70 + "1", "ans": "71"},
        {"id": "c", "original_text": "q", "equation": "x=" + "(" * 63 + "1" + ")" * 63, "ans": "1"},
        {"id": "d", "original_text": "q", "equation": "x=" + "-(" * 31 + "1" + ")" * 31, "ans": "-1"},
        {"id": "e", "original_text": "q", "equation": "x=" + "(" * 64 + "1" + ")" * 64, "ans": "1"},
        {"id": "f", "original_text": "q", "equation": "x=1" * 400, "ans": "1"},
        {"id": "g", "original_text": "q", "equation": "x=(1+2)*(1)-(2**(3))**(2)/(-(4))", "ans": "-13"},
        {"id": "h", "original_text": "q", "equation": "x=1111111111*1111111111/(1111111111*1111111111)", "ans": "1"},
        {"id": "i", "original_text": "q", "equation": "x=(0.1+0.2)+0.3-(0.1+(0.2+0.3))", "ans": "0"},
        {"id": "j", "original_text": "q", "equation": "x=" + "1" * 2000, "ans": "1"},
        {"id": True, "original_text": "q", "equation": "x=1", "ans": "1"},
    ]
    return rows


def test_normalize_problem_matches_reference_on_hostile_rows() -> None:
    kinds = set()
    for raw in _hostile_rows():
        new = problem_outcome(normalize_problem, raw)
        assert new == problem_outcome(reference_normalize_problem, raw), raw
        kinds.add("kept" if isinstance(new, dict) else new[1].split(":")[0])
    assert {"kept", "equation_error", "answer_error", "answer_mismatch", "too_long", "mistyped field"} <= kinds


def test_remove_redundant_brackets_matches_reference() -> None:
    kept = 0
    for expr in hostile_expressions(4000, seed=99) + ["(" * 63 + "1" + ")" * 63, "-(" * 40 + "2" + ")" * 40, "(1)+" * 99 + "1"]:
        new = outcome(remove_redundant_brackets, expr)
        assert new == outcome(reference_remove_redundant_brackets, expr), expr
        kept += new[0] == "value" and new[1] != expr
    assert kept > 300
