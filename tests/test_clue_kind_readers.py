"""The readers of the new CLUE task kinds (CMRC2018, C3, CHID, CLUENER): every real file in
../shared/data/clue, the answer-offset and duplicate-choice rules, both CHID layouts, and bad rows
(one-line file:line: reason under fail, counted quarantine under skip)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from shared_data import shared_data_dir

from zhnlp.data import c3, chid, cluener, cmrc2018
from zhnlp.data.clue import TaskSpec
from zhnlp.data.rows import BadInputError, InputFileError, ParquetSink, RowPolicy

TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization", "position", "scene")


def spec(name: str, labels: tuple[str, ...] = ()) -> TaskSpec:
    kind = {"cmrc2018": "span_extraction", "c3": "multiple_choice", "chid": "idiom_cloze", "cluener": "ner"}[name]
    return TaskSpec(name=name, kind=kind, labels=labels)


SPECS = {"cmrc2018": spec("cmrc2018"), "c3": spec("c3"), "chid": spec("chid"), "cluener": spec("cluener", TYPES)}
MODULES = {"cmrc2018": cmrc2018, "c3": c3, "chid": chid, "cluener": cluener}


def read(name: str, paths, split: str, policy: RowPolicy, tmp_path: Path, counters: Counter | None = None) -> list[dict]:
    """All rows of a split, also written through ParquetSink with the module's SCHEMA and read back."""
    mod = MODULES[name]
    rows = list(mod.iter_split([Path(p) for p in paths], split, policy, SPECS[name], counters=counters))
    out = tmp_path / f"{name}-{split}-{len(rows)}.parquet"
    with ParquetSink(out, mod.SCHEMA) as sink:
        for row in rows:
            sink.write(row)
    assert pq.read_table(out).to_pylist() == rows
    return rows


def write_lines(path: Path, rows: list) -> Path:
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def expect_fail(name: str, path: Path, split: str, tmp_path: Path, where: str) -> str:
    """The fail-policy error: one line starting with ``where`` (``file:line:``); returns the reason."""
    with pytest.raises(BadInputError) as err:
        read(name, [path], split, RowPolicy("fail"), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}:{where}: "), msg
    return err.value.reason


def skip_counts(name: str, path: Path, split: str, tmp_path: Path) -> tuple[list[dict], Counter, list[dict]]:
    quarantine = tmp_path / f"{name}-quarantine.jsonl"
    with RowPolicy("skip", quarantine) as policy:
        rows = read(name, [path], split, policy, tmp_path)
    records = [json.loads(x) for x in quarantine.read_text(encoding="utf-8").splitlines()]
    assert sum(policy.bad.values()) == len(records) and all(r["kind"] == "bad_row" for r in records)
    return rows, policy.bad, records


# -- real files (../shared/data/clue)


@pytest.mark.shared_data
def test_cmrc2018_trial_all_questions_with_offsets_fixed(tmp_path):
    path = shared_data_dir() / "clue/cmrc2018/trial.json"
    counters = Counter()
    rows = read("cmrc2018", [path], "dev", RowPolicy("fail"), tmp_path, counters)
    assert len(rows) == 1002 and len({r["id"] for r in rows}) == 1002
    assert len({r["context"] for r in rows}) == 256
    assert counters == Counter(fixed_answer_offsets=5, empty_questions=2)
    for row in rows:
        assert len(row["answers"]) == len(row["answer_starts"]) == 1
        for text, start in zip(row["answers"], row["answer_starts"]):
            assert row["context"][start : start + len(text)] == text
    by_id = {r["id"]: r for r in rows}
    assert by_id["TRIAL_210_QUERY_0"]["answer_starts"] == [13]  # file says 14: moved one back
    assert by_id["TRIAL_800_QUERY_0"]["answers"] == ["踢爆"] and by_id["TRIAL_800_QUERY_0"]["answer_starts"] == [127]
    assert by_id["TRIAL_20_QUERY_0"]["question"] == ""  # kept, counted as empty_questions


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("split", "questions", "passages", "duplicates"),
    [("train", 5856, 4885, 3), ("dev", 1825, 1628, 1), ("test", 1890, 1627, 0)],
)
def test_c3_dialogue_files(tmp_path, split, questions, passages, duplicates):
    path = shared_data_dir() / f"clue/c3/c3-d-{split}.json"
    counters = Counter()
    rows = read("c3", [path], split, RowPolicy("fail"), tmp_path, counters)
    assert len(rows) == questions and len({r["id"].rsplit("-", 1)[0] for r in rows}) == passages
    assert len({r["id"] for r in rows}) == questions
    assert counters["duplicate_choices"] == duplicates
    assert all(2 <= len(r["choices"]) <= 4 and len(set(r["choices"])) == len(r["choices"]) for r in rows)
    assert all(r["label_id"] is not None and 0 <= r["label_id"] < len(r["choices"]) for r in rows)  # c3-d-test has answers
    if split == "dev":
        first = rows[0]
        assert first["id"] == "47-275-0" and first["choices"][first["label_id"]] == "工作"
        assert first["passage"].split("\n")[0] == "男：听说你们公司要派你去南方工作?"
        dup = next(r for r in rows if r["id"] == "47-277-0")
        assert dup["choices"] == ["可爱", "认真", "马虎"] and dup["label_id"] == 2


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("split", "fname", "n"),
    [("train", "train_few_all", 202), ("dev", "dev_few_all", 202), ("test_public", "test_public", 2002), ("test", "test", 2000)],
)
def test_chid_fewclue_files(tmp_path, split, fname, n):
    rows = read("chid", [shared_data_dir() / f"clue/chid/{fname}.json"], split, RowPolicy("fail"), tmp_path)
    assert len(rows) == n and len({r["id"] for r in rows}) == n
    assert all(r["text"].count("#idiom#") == 1 and len(r["candidates"]) == 7 and r["group"] == r["id"] for r in rows)
    labels = [r["label_id"] for r in rows]
    if split == "test":
        assert labels == [None] * n
    else:
        assert all(0 <= x < 7 for x in labels) and len(set(labels)) > 1


@pytest.mark.shared_data
@pytest.mark.parametrize(("split", "n", "n_entities"), [("train", 10748, 23972), ("dev", 1343, 3072)])
def test_cluener_files(tmp_path, split, n, n_entities):
    counters = Counter()
    rows = read("cluener", [shared_data_dir() / f"clue/cluener/{split}.json"], split, RowPolicy("fail"), tmp_path, counters)
    assert len(rows) == n and [r["id"] for r in rows[:3]] == ["0", "1", "2"]
    assert counters["overlapping_entities"] == (2 if split == "train" else 0)  # train line 1507: 2 companies in a book title
    entities = [e for r in rows for e in r["entities"]]
    assert len(entities) == n_entities and {e["type"] for e in entities} == set(TYPES)
    for row in rows:
        assert row["entities"] == sorted(row["entities"], key=lambda e: (e["start"], e["end"], e["type"]))
        assert all(row["text"][e["start"] : e["end"] + 1] == e["text"] for e in row["entities"])
    if split == "train":
        assert rows[0]["entities"][:2] == [
            {"type": "company", "start": 0, "end": 3, "text": "浙商银行"},
            {"type": "name", "start": 9, "end": 11, "text": "叶老桂"},
        ]


# -- CMRC2018 rules and bad input


def cmrc_file(path: Path, articles: list) -> Path:
    path.write_text(json.dumps({"version": "v1.0", "data": articles}, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def article(qas: list, context: str = "北京是中国的首都，上海是中国最大的城市。") -> dict:
    return {"id": "A", "title": "t", "paragraphs": [{"id": "P", "context": context, "qas": qas}]}


def qa(qid: str, text: str, start: int, question: str = "哪里？") -> dict:
    return {"id": qid, "question": question, "answers": [{"text": text, "answer_start": start}]}


def test_cmrc2018_offset_rule_exact_nearest_or_bad(tmp_path):
    ctx = "中国中国，中国"  # occurrences of 中国 at 0, 2, 5
    path = cmrc_file(tmp_path / "c.json", [article([qa("q0", "中国", 2), qa("q1", "中国", 4), qa("q2", "中国", 99)], ctx)])
    counters = Counter()
    rows = read("cmrc2018", [path], "train", RowPolicy("fail"), tmp_path, counters)
    assert [r["answer_starts"] for r in rows] == [[2], [5], [5]]  # 4 -> 5 (nearer than 2), 99 -> 5
    assert counters["fixed_answer_offsets"] == 2
    bad = cmrc_file(tmp_path / "bad.json", [article([qa("ok", "北京", 0)]), article([qa("good", "上海", 9), qa("Q7", "广州", 0)])])
    line = [i + 1 for i, x in enumerate(bad.read_text(encoding="utf-8").splitlines()) if x == "  {"][1]  # 2nd article
    reason = expect_fail("cmrc2018", bad, "train", tmp_path, str(line))
    assert reason.startswith("answer offset mismatch: question Q7: answer '广州' is not in the context")
    rows, counts, records = skip_counts("cmrc2018", bad, "train", tmp_path)
    assert [r["id"] for r in rows] == ["ok", "good"] and counts == Counter(answer_offset_mismatch=1)
    assert records[0]["line"] == line and records[0]["raw"]["id"] == "Q7"


def test_cmrc2018_unlabelled_and_malformed_articles(tmp_path):
    path = cmrc_file(tmp_path / "test.json", [article([{"id": "t0", "question": "哪里？"}])])
    (row,) = read("cmrc2018", [path], "test", RowPolicy("fail"), tmp_path)
    assert row["answers"] == [] and row["answer_starts"] == []
    assert expect_fail("cmrc2018", path, "dev", tmp_path, "4").startswith("missing field: question t0: answers")
    bad = cmrc_file(tmp_path / "bad.json", [{"paragraphs": "x"}, article([qa("q", "北京", "0")]), article([qa("k", "上海", 9)])])
    assert expect_fail("cmrc2018", bad, "dev", tmp_path, "4") == "mistyped field: paragraphs: expected a list"
    rows, counts, _ = skip_counts("cmrc2018", bad, "dev", tmp_path)
    assert [r["id"] for r in rows] == ["k"] and counts == Counter(mistyped_field=2)


# -- C3


def test_c3_ids_labels_and_bad_questions(tmp_path):
    data = [
        [["男：你好", "女：你好"], [{"question": "他们在做什么?", "choice": ["吃饭", "问好"], "answer": "问好"},
                                    {"question": "几个人?", "choice": ["一", "二", "二", "三"], "answer": "三"}], "1-1"],
        [["女：走吧"], [{"question": "去哪?", "choice": ["家", "店"], "answer": "学校"}], "1-2"],
        {"not": "a passage"},
    ]
    path = tmp_path / "c3-m-dev.json"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    lines = path.read_text(encoding="utf-8").splitlines()
    second = [i + 1 for i, x in enumerate(lines) if x == " ["][1]
    reason = expect_fail("c3", path, "dev", tmp_path, str(second))
    assert reason == "answer not among choices: question 1-2-0: '学校' is none of 2 choices"
    rows, counts, records = skip_counts("c3", path, "dev", tmp_path)
    assert counts == Counter(answer_not_among_choices=1, mistyped_field=1)
    assert [r["id"] for r in rows] == ["1-1-0", "1-1-1"] and rows[0]["passage"] == "男：你好\n女：你好"
    assert rows[0]["label_id"] == 1 and rows[1]["choices"] == ["一", "二", "三"] and rows[1]["label_id"] == 2
    assert records[1]["line"] == lines.index(" {") + 1
    counters = Counter()
    unl = tmp_path / "c3-d-test.json"
    unl.write_text(json.dumps([[["甲"], [{"question": "问", "choice": ["a", "b", "c"]}], 7]]), encoding="utf-8")
    (row,) = read("c3", [unl], "test", RowPolicy("fail"), tmp_path, counters)
    assert row["id"] == "7-0" and row["label_id"] is None and c3.row_chars(row) == 1 + 1 + 3
    with RowPolicy("skip") as policy:  # a split of several files (dialogue + mixed): rows in list order
        both = read("c3", [unl, path], "test", policy, tmp_path)
    assert [r["id"] for r in both] == ["7-0", "1-1-0", "1-1-1"] and sum(policy.bad.values()) == 2


# -- CHID


CANDS = ["一心一意", "三心二意", "七上八下", "九牛一毛", "十全十美", "百发百中", "千方百计"]


def test_chid_fewclue_bad_rows(tmp_path):
    good = {"id": 5, "candidates": CANDS, "content": "他做事#idiom#。", "answer": 0}
    path = write_lines(
        tmp_path / "dev_few_all.json",
        [good, good | {"id": 6, "content": "#idiom#和#idiom#"}, good | {"id": 7, "answer": 7},
         good | {"id": 8, "candidates": CANDS[:6] + [CANDS[0]]}, "{oops\n", good | {"id": 9}],
    )
    assert expect_fail("chid", path, "dev", tmp_path, "2") == "bad blanks: content has 2 #idiom# blanks, expected exactly 1"
    rows, counts, records = skip_counts("chid", path, "dev", tmp_path)
    assert [r["id"] for r in rows] == ["5", "9"] and rows[0]["group"] == "5" and rows[0]["label_id"] == 0
    assert counts == Counter(bad_blanks=1, answer_out_of_range=1, bad_candidates=1, malformed_json=1)
    assert [r["line"] for r in records] == [2, 3, 4, 5]
    no_answer = write_lines(tmp_path / "test.json", [{k: v for k, v in good.items() if k != "answer"}])
    assert read("chid", [no_answer], "test", RowPolicy("fail"), tmp_path)[0]["label_id"] is None
    assert expect_fail("chid", no_answer, "train", tmp_path, "1") == "missing field: answer"


def clue_layout(tmp_path: Path, answers: dict | None) -> Path:
    lines = [
        {"candidates": CANDS, "content": ["甲#idiom000000#乙#idiom000001#丙", "丁#idiom000002#戊#idiom000003#己#idiom000004#"]},
        {"candidates": CANDS[:5], "content": ["#idiom000005#，然后#idiom000006#。"]},
    ]
    path = write_lines(tmp_path / "train.json", lines)
    if answers is not None:
        (tmp_path / "train_answer.json").write_text(json.dumps(answers, indent=1), encoding="utf-8")
    return path


def test_chid_clue_layout_groups_blanks_and_answers(tmp_path):
    answers = {f"#idiom00000{i}#": a for i, a in enumerate([3, 0, 6, 1, 2, 4, 0])}
    path = clue_layout(tmp_path, answers)
    rows = read("chid", [path], "train", RowPolicy("fail"), tmp_path)
    assert [r["id"] for r in rows] == [f"#idiom00000{i}#" for i in range(7)]
    assert [r["label_id"] for r in rows] == [3, 0, 6, 1, 2, 4, 0]
    assert [r["group"] for r in rows] == ["train:1"] * 5 + ["train:2"] * 2
    assert [r["text"] for r in rows] == [
        "甲#idiom#乙#other#丙", "甲#other#乙#idiom#丙",
        "丁#idiom#戊#other#己#other#", "丁#other#戊#idiom#己#other#", "丁#other#戊#other#己#idiom#",
        "#idiom#，然后#other#。", "#other#，然后#idiom#。",
    ]
    assert rows[0]["candidates"] == CANDS and rows[5]["candidates"] == CANDS[:5]
    # the unlabelled split needs no answer file; a labelled one does
    (tmp_path / "train_answer.json").unlink()
    assert [r["label_id"] for r in read("chid", [path], "test", RowPolicy("fail"), tmp_path)] == [None] * 7
    with pytest.raises(InputFileError, match=r"train_answer\.json, not found"):
        read("chid", [path], "train", RowPolicy("fail"), tmp_path)


def test_chid_clue_layout_bad_blanks_and_answer_file(tmp_path):
    answers = {"#idiom000000#": 3, "#idiom000001#": 0, "#idiom000002#": 6, "#idiom000003#": 1, "#idiom000004#": 2, "#idiom000005#": 5}
    path = clue_layout(tmp_path, answers)  # #idiom000006# has no answer; 5 is out of range for line 2's 5 candidates
    assert expect_fail("chid", path, "dev", tmp_path, "2") == "answer out of range: answer of #idiom000005#: 5 is not an index of 5 candidates"
    rows, counts, records = skip_counts("chid", path, "dev", tmp_path)
    assert len(rows) == 5 and counts == Counter(answer_out_of_range=1, missing_field=1)
    assert records[1]["reason"] == "missing field: answer of #idiom000006#" and records[1]["line"] == 2
    (tmp_path / "train_answer.json").write_text('{\n"#idiom000000#": "3"}', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"train_answer\.json:1: malformed answer file: '#idiom000000#': expected an integer"):
        read("chid", [path], "dev", RowPolicy("fail"), tmp_path)
    (tmp_path / "train_answer.json").write_text('{\n"#idiom000000#": 3,\n}', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"train_answer\.json:3: malformed json"):
        read("chid", [path], "dev", RowPolicy("fail"), tmp_path)


# -- CLUENER


def test_cluener_bad_rows_and_unlabelled_test(tmp_path):
    ok = {"text": "叶老桂在浙商银行", "label": {"name": {"叶老桂": [[0, 2]]}, "company": {"浙商银行": [[4, 7]]}}}
    path = write_lines(
        tmp_path / "dev.json",
        [ok, {"text": "叶老桂", "label": {"person": {"叶老桂": [[0, 2]]}}}, {"text": "叶老桂", "label": {"name": {"叶老桂": [[0, 1]]}}},
         {"text": "叶老桂", "label": {"name": {"叶老桂": [[2, 0]]}}}, {"text": "叶老桂"}, ok],
    )
    assert expect_fail("cluener", path, "dev", tmp_path, "2") == "unknown label: 'person' is not one of the 10 entity types"
    rows, counts, records = skip_counts("cluener", path, "dev", tmp_path)
    assert [r["id"] for r in rows] == ["0", "5"] and counts == Counter(unknown_label=1, entity_mismatch=2, missing_field=1)
    assert records[1]["reason"] == "entity mismatch: name '叶老桂' at [0, 1] reads '叶老'"
    assert rows[0]["entities"] == [
        {"type": "name", "start": 0, "end": 2, "text": "叶老桂"},
        {"type": "company", "start": 4, "end": 7, "text": "浙商银行"},
    ]
    test = write_lines(tmp_path / "test.json", [{"id": 0, "text": "浙江"}, {"text": "上海"}])
    rows = read("cluener", [test], "test", RowPolicy("fail"), tmp_path)
    assert rows == [{"id": "0", "text": "浙江", "entities": []}, {"id": "1", "text": "上海", "entities": []}]
    assert cluener.row_chars(rows[0]) == 2
