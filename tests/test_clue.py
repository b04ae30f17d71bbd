"""CLUE/FewCLUE reader: task registry, both layouts, bad rows, and all of ../shared/data/clue."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from shared_data import shared_data_dir

from zhnlp.data.clue import CLUE_SCHEMA, TaskSpec, iter_split, split_files
from zhnlp.data.rows import BadInputError, RowPolicy

ROOT = Path(__file__).resolve().parents[1]
TASKS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["clue"]["tasks"]


def spec(name: str) -> TaskSpec:
    return TaskSpec.from_params(name, TASKS[name])


def write_lines(path: Path, rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else (json.dumps(row, ensure_ascii=False) + "\n").encode())
    return path


def read_all(path: Path, task: TaskSpec, split: str, policy: RowPolicy) -> list[dict]:
    rows = list(iter_split(path, task, split, policy))
    pa.Table.from_pylist(rows, schema=CLUE_SCHEMA)  # every row fits the fixed schema
    return rows


def test_pair_task_reads_clue_layout_and_keeps_unlabelled_test(tmp_path):
    task_dir = tmp_path / "afqmc"
    write_lines(task_dir / "train.json", [{"sentence1": "花呗怎么还", "sentence2": "花呗如何还款", "label": "1"}])
    write_lines(task_dir / "dev.json", [{"sentence1": "借呗额度", "sentence2": "今天天气", "label": "0"}])
    write_lines(task_dir / "test.json", [{"id": 7, "sentence1": "怎么开通", "sentence2": "如何开通"}])
    files = split_files(task_dir, spec("afqmc"))
    assert sorted(files) == ["dev", "test", "train"]
    train = read_all(files["train"], spec("afqmc"), "train", RowPolicy())
    assert train == [{"id": "0", "text_a": "花呗怎么还", "text_b": "花呗如何还款", "label": "1", "label_id": 1,
                      "span1_text": None, "span1_index": None, "span2_text": None, "span2_index": None}]
    test = read_all(files["test"], spec("afqmc"), "test", RowPolicy())
    assert test[0]["id"] == "7" and test[0]["label"] is None and test[0]["label_id"] is None


def test_fewclue_layout_is_preferred_and_csl_joins_keywords(tmp_path):
    task_dir = tmp_path / "csl"
    row = {"id": 3, "abst": "本文研究神经网络", "keyword": ["神经网络", "深度学习"], "label": "1"}
    for name in ("train_few_all.json", "dev_few_all.json", "test_public.json"):
        write_lines(task_dir / name, [row])
    files = split_files(task_dir, spec("csl"))
    assert sorted(files) == ["dev", "test_public", "train"]
    (out,) = read_all(files["test_public"], spec("csl"), "test_public", RowPolicy())
    assert out["text_a"] == "神经网络；深度学习" and out["text_b"] == "本文研究神经网络" and out["label_id"] == 1


def test_wsc_spans_are_checked(tmp_path):
    good = {"target": {"span1_index": 0, "span1_text": "小明", "span2_index": 3, "span2_text": "他"}, "idx": 5,
            "label": "true", "text": "小明说他饿了"}
    bad = json.loads(json.dumps(good))
    bad["target"]["span2_index"] = 4
    path = write_lines(tmp_path / "wsc.json", [good, bad])
    with pytest.raises(BadInputError, match=r"wsc.json:2: span mismatch"):
        read_all(path, spec("cluewsc"), "train", RowPolicy())
    rows = read_all(path, spec("cluewsc"), "train", RowPolicy("skip"))
    assert rows[0]["id"] == "5" and rows[0]["span2_text"] == "他" and rows[0]["span2_index"] == 3


@pytest.mark.parametrize(
    "line, reason",
    [
        (b'{"sentence": "ok", "label": 101\n', "malformed json"),
        (b'["not", "an", "object"]\n', "malformed json"),
        (b'{"label": 101}\n', "missing field: sentence"),
        (b'{"sentence": 5, "label": 101}\n', "mistyped field: sentence"),
        (b'{"sentence": "  ", "label": 101}\n', "empty text: sentence"),
        (b'{"sentence": "ok", "label": 105}\n', "unknown label: '105'"),
        (b'{"sentence": "ok"}\n', "missing field: label"),
        (b'{"sentence": "\xff\xfe", "label": 101}\n', "invalid utf-8"),
    ],
)
def test_bad_rows_fail_with_file_line_reason_or_go_to_quarantine(tmp_path, line, reason):
    good = {"sentence": "好新闻", "label": 101}
    path = write_lines(tmp_path / "train.json", [good, line, good])
    with pytest.raises(BadInputError) as err:
        read_all(path, spec("tnews"), "train", RowPolicy("fail"))
    assert str(err.value).startswith(f"{path}:2: {reason}")
    quarantine = tmp_path / "q.jsonl"
    with RowPolicy("skip", quarantine) as policy:
        rows = read_all(path, spec("tnews"), "train", policy)
    assert len(rows) == 2
    assert policy.metrics()["bad_rows"] == 1
    (record,) = [json.loads(x) for x in quarantine.read_text(encoding="utf-8").splitlines()]
    assert record["line"] == 2 and record["reason"].startswith(reason) and record["file"] == str(path)


def test_drop_labels_are_recorded_not_lost(tmp_path):
    path = write_lines(tmp_path / "train.json", [
        {"sentence1": "a", "sentence2": "b", "label": "-"},
        {"sentence1": "a", "sentence2": "b", "label": "neutral"},
    ])
    with RowPolicy("fail", tmp_path / "q.jsonl") as policy:
        rows = read_all(path, spec("ocnli"), "train", policy)
    assert [r["label"] for r in rows] == ["neutral"]
    assert policy.metrics()["dropped_rows.dropped_label"] == 1


def test_new_task_of_known_shape_needs_params_only(tmp_path):
    bustm = TaskSpec.from_params("bustm", {"dir": "bustm", "text_a": "sentence1", "text_b": "sentence2", "labels": [0, 1]})
    path = write_lines(tmp_path / "train.json", [{"id": 1, "sentence1": "你好", "sentence2": "您好", "label": "1"}])
    assert read_all(path, bustm, "train", RowPolicy())[0]["label_id"] == 1


def test_task_spec_rejects_unknown_keys_and_missing_labels():
    with pytest.raises(ValueError, match="unknown key 'lable'"):
        TaskSpec.from_params("x", {"text_a": "s", "labels": ["a", "b"], "lable": "oops"})
    with pytest.raises(ValueError, match=r"clue.tasks.x.labels: \[\] is not allowed; use at least 2 distinct labels"):
        TaskSpec.from_params("x", {"text_a": "s"})
    with pytest.raises(ValueError, match="clue.tasks.x.text_a: missing; a classification task names its text field"):
        TaskSpec.from_params("x", {"labels": ["a", "b"]})
    with pytest.raises(ValueError, match="clue.tasks.x.kind: 'mrc' is not allowed; use one of classification, span_extraction"):
        TaskSpec.from_params("x", {"kind": "mrc"})
    with pytest.raises(ValueError, match="clue.tasks.x.labels: .* use at least 1 entity type"):
        TaskSpec.from_params("x", {"kind": "ner"})
    assert TaskSpec.from_params("x", {"kind": "span_extraction"}).kind == "span_extraction"  # no text field or labels needed


def test_missing_split_file_names_the_path(tmp_path):
    write_lines(tmp_path / "tnews" / "train.json", [{"sentence": "a", "label": 101}])
    with pytest.raises(FileNotFoundError, match="dev.json"):
        split_files(tmp_path / "tnews", spec("tnews"))


EXPECTED_SHARED = {  # split -> rows, per ../shared/data/README.md
    "tnews": {"train": 1185, "dev": 1098, "test_public": 2010},
    "iflytek": {"train": 3024, "dev": 1373, "test_public": 1749},
    "ocnli": {"train": 160, "dev": 160, "test_public": 2520},
    "csl": {"train": 160, "dev": 160, "test_public": 2838},
    "cluewsc": {"train": 160, "dev": 159, "test_public": 976},
}


@pytest.mark.parametrize("task", sorted(EXPECTED_SHARED))
def test_reads_every_shared_clue_file_without_bad_rows(task):
    task_dir = shared_data_dir() / "clue" / task
    files = split_files(task_dir, spec(task))
    policy = RowPolicy("fail")
    counts = {split: len(read_all(path, spec(task), split, policy)) for split, path in files.items()}
    for split, n in EXPECTED_SHARED[task].items():
        assert counts[split] == n, (task, split)
    if "test" in files:  # unlabelled, kept for submission files
        rows = read_all(files["test"], spec(task), "test", policy)
        assert rows and all(r["label"] is None and r["id"] for r in rows)
    assert policy.metrics()["bad_rows"] == 0
