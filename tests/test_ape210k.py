"""Ape210K normalisation, answer-check filter and bad-row handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared_data import shared_data_dir
from zhnlp.data.ape210k import (
    ProblemDropped,
    iter_problems,
    normalize_expression,
    normalize_problem,
    normalize_question,
    remove_redundant_brackets,
)
from zhnlp.data.rows import BadInputError, RowError, RowPolicy
from zhnlp.data.safe_eval import safe_eval


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
