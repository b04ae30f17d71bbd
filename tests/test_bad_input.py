"""Bad input to the corpus readers and their prep stages (issue 8): hostile rows, empty and
all-bad files, BOMs, strict types, directories where files belong, strict params.

Each case ends as a kept, dropped or rejected row with the right reason, or as one ``error:``
line and exit 2 from the stage program: never a traceback, a hang or a silent exit 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, make_project, project_env

sys.path.insert(0, str(ROOT))
from benchmarks.bench_hostile import cases, read_case  # noqa: E402
from zhnlp.data.ape210k import ApeParams, iter_problems  # noqa: E402
from zhnlp.data.clue import ClueParams, TaskSpec, iter_split, split_files  # noqa: E402
from zhnlp.config import ConfigError  # noqa: E402
from zhnlp.data.lccc import DialogueCleaner, LcccParams, iter_dialogues, iter_raw_dialogues  # noqa: E402
from zhnlp.data.rows import BadInputError, EmptySplitError, InputFileError, RowPolicy  # noqa: E402

HOSTILE = cases()
TNEWS = TaskSpec.from_params("tnews", {"text_a": "sentence", "labels": [100, 101]})


def ape_row(i: int, equation: str = "x=1+1", ans: str = "2") -> dict:
    return {"id": str(i), "original_text": f"问题{i}", "equation": equation, "ans": ans}


def write_lines(path: Path, rows: list, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode(encoding) for r in rows))
    return path


# ---------------------------------------------------------------- hostile rows (the benchmark's cases)


@pytest.mark.parametrize("case", HOSTILE, ids=[f"{c.reader}: {c.name}" for c in HOSTILE])
def test_hostile_row_is_bounded_and_has_the_expected_outcome(tmp_path, case):
    path = tmp_path / f"hostile{case.suffix}"
    path.write_bytes(case.data)
    outcome, rows = read_case(case, path)
    assert outcome.startswith(case.expect), outcome
    if case.name == "UTF-8 BOM":  # kept, and the mark is nowhere in the row
        assert rows and "\ufeff" not in json.dumps(rows, ensure_ascii=False)


def test_hostile_cases_cover_every_reader():
    assert {c.reader for c in HOSTILE} == {"clue", "ape210k", "lccc_json", "lccc_txt"} and len(HOSTILE) >= 30


def test_too_long_line_is_skipped_without_losing_line_numbers(tmp_path):
    path = tmp_path / "train.json"
    good = (json.dumps({"sentence": "好", "label": 100}) + "\n").encode()
    path.write_bytes(good + b'{"sentence": "' + b"x" * (3 << 20) + b'"}\n' + good)
    with RowPolicy("skip") as policy:
        rows = list(iter_split(path, TNEWS, "train", policy))
    assert [r["id"] for r in rows] == ["0", "2"]  # default ids are line - 1: the third line is line 3
    assert policy.metrics()["bad_rows.line_too_long"] == 1
    with pytest.raises(BadInputError, match=r"train\.json:2: line too long"):
        list(iter_split(path, TNEWS, "train", RowPolicy("fail")))


# ---------------------------------------------------------------- BOMs, the same in every reader


def test_bom_is_removed_the_same_way_in_every_reader(tmp_path):
    bom = b"\xef\xbb\xbf"
    clue = tmp_path / "c.json"
    clue.write_bytes(bom + b'{"sentence": "\xe5\xa5\xbd", "label": 100}\n')
    ape = write_lines(tmp_path / "a.ape.json", [ape_row(1)])
    ape.write_bytes(bom + ape.read_bytes())
    txt, js = tmp_path / "d.txt", tmp_path / "d.json"
    txt.write_bytes(bom + "你 好\t在\n".encode())
    js.write_bytes(bom + json.dumps([["你 好", "在"]], ensure_ascii=False).encode())
    assert [r["text_a"] for r in iter_split(clue, TNEWS, "train", RowPolicy())] == ["好"]
    assert [r["id"] for r in iter_problems(ape, RowPolicy())] == ["1"]
    for path in (txt, js):
        assert list(iter_raw_dialogues(path, RowPolicy())) == [(1, ["你 好", "在"])], path


# ---------------------------------------------------------------- strict types


def test_a_list_is_accepted_only_in_a_declared_list_field(tmp_path):
    row = {"keyword": ["神经网络", "深度学习"], "abst": ["本文", "研究"], "label": "1"}
    path = write_lines(tmp_path / "csl.json", [row])
    csl = TaskSpec.from_params("csl", {"text_a": "keyword", "text_b": "abst", "labels": [0, 1], "list_fields": ["keyword"]})
    with pytest.raises(BadInputError, match=r"csl\.json:1: mistyped field: abst: expected string, got list"):
        list(iter_split(path, csl, "train", RowPolicy()))
    undeclared = TaskSpec.from_params("csl", {"text_a": "keyword", "text_b": "abst", "labels": [0, 1]})
    with pytest.raises(BadInputError, match="mistyped field: keyword: expected string, got list"):
        list(iter_split(path, undeclared, "train", RowPolicy()))
    write_lines(path, [row | {"abst": "本文研究"}, row | {"abst": "x", "keyword": ["a", 3]}])
    with RowPolicy("skip") as policy:
        (out,) = iter_split(path, csl, "train", policy)
    assert out["text_a"] == "神经网络；深度学习" and policy.last_reason["bad"].startswith("mistyped field: keyword: expected a list of strings")


def test_params_declare_csl_keyword_as_the_only_list_field():
    tasks = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["clue"]["tasks"]
    assert {name: entry["list_fields"] for name, entry in tasks.items() if "list_fields" in entry} == {"csl": ["keyword"]}


# ---------------------------------------------------------------- empty and mostly bad splits


def test_check_split_fails_empty_all_dropped_and_mostly_bad_splits(tmp_path):
    empty = tmp_path / "empty.ape.json"
    empty.write_bytes(b"\n  \n")  # (a 0-byte file is refused before reading: see the stage tests)
    policy = RowPolicy("skip")
    mark = policy.mark()
    assert list(iter_problems(empty, policy)) == []
    with pytest.raises(EmptySplitError, match=r"empty\.ape\.json: split 'train': empty input: no rows$"):
        policy.check_split(empty, "train", 0, mark, 0.1)
    dropped = write_lines(tmp_path / "dropped.ape.json", [ape_row(1, ans="3")])
    mark = policy.mark()
    assert list(iter_problems(dropped, policy)) == []
    with pytest.raises(EmptySplitError, match=r"no rows kept \(0 bad, 1 dropped\)"):
        policy.check_split(dropped, "train", 0, mark, 0.1)
    gbk = write_lines(tmp_path / "gbk.ape.json", [ape_row(i) for i in range(9)] + [ape_row(9, ans="2")], encoding="gbk")
    mark = policy.mark()
    assert list(iter_problems(gbk, policy)) == []
    with pytest.raises(EmptySplitError, match=r"10 of 10 rows are bad \(100% > max_bad_ratio 0\.1; most are invalid_utf-8: 10\): not UTF-8: wrong encoding"):
        policy.check_split(gbk, "train", 0, mark, 0.1)
    with pytest.raises(EmptySplitError, match=r"gbk\.ape\.json: split 'train': no rows kept \(10 bad, 0 dropped\)$"):
        policy.check_split(gbk, "train", 0, mark, 1.0)  # all bad fails even when any share is allowed


def test_bad_ratio_counts_only_this_split(tmp_path):
    rows = [ape_row(i) for i in range(9)]
    ok = write_lines(tmp_path / "ok.ape.json", rows + [ape_row(9, equation=5)])  # 1 bad of 10: at the limit
    policy = RowPolicy("skip")
    for _ in range(2):
        mark = policy.mark()
        kept = len(list(iter_problems(ok, policy)))
        policy.check_split(ok, "train", kept, mark, 0.1)  # the first file's bad row is not counted twice
    bad = write_lines(tmp_path / "bad.ape.json", rows[:8] + [ape_row(8, equation=5), ape_row(9, equation=6)])
    mark = policy.mark()
    kept = len(list(iter_problems(bad, policy)))
    with pytest.raises(EmptySplitError, match=r"2 of 10 rows are bad .* most are mistyped_field: 2\): field types differ"):
        policy.check_split(bad, "train", kept, mark, 0.1)


# ---------------------------------------------------------------- a directory where a file belongs


def test_a_directory_where_a_file_belongs_is_named(tmp_path):
    (tmp_path / "tnews" / "train.json").mkdir(parents=True)
    write_lines(tmp_path / "tnews" / "dev.json", [{"sentence": "a", "label": 100}])
    with pytest.raises(InputFileError, match=r"tnews/train\.json is a directory, expected a file"):
        split_files(tmp_path / "tnews", TNEWS)
    for name in ("a.ape.json", "d.txt", "d.json"):
        (tmp_path / name).mkdir()
    with pytest.raises(InputFileError, match=r"a\.ape\.json is a directory, expected a file"):
        list(iter_problems(tmp_path / "a.ape.json", RowPolicy()))
    for name in ("d.txt", "d.json"):
        with pytest.raises(InputFileError, match=rf"{name.replace('.', '[.]')} is a directory, expected a file"):
            list(iter_dialogues(tmp_path / name, RowPolicy(), DialogueCleaner()))
    with pytest.raises(InputFileError, match=r"missing\.txt not found"):
        list(iter_dialogues(tmp_path / "missing.txt", RowPolicy(), DialogueCleaner()))


# ---------------------------------------------------------------- strict params


PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "section, change, message",
    [
        ("clue", {"on_bad_rows": "Skip"}, "clue.on_bad_rows: 'Skip' is not allowed; use one of fail, skip"),
        ("clue", {"max_bad_ratio": 1.5}, "clue.max_bad_ratio: 1.5 is not allowed; use a number in [0.0, 1.0]"),
        ("clue", {"tasks": {"a;touch X": {"text_a": "s", "labels": [0, 1]}}}, "clue.tasks: name 'a;touch X' is not allowed"),
        ("clue", {"tasks": {"t": {"text_a": "s", "labels": [0, 1], "lable": "x"}}}, "clue.tasks.t: unknown key 'lable'; allowed keys:"),
        ("clue", {"tasks": {"t": {"text_a": "s", "labels": [0, 1], "list_fields": ["k"]}}}, "clue.tasks.t.list_fields: 'k' is not allowed; use one of s"),
        ("clue", {"tasks": {"t": {"text_a": "s", "labels": [0, 1], "layout": "x"}}}, "clue.tasks.t.layout: 'x' is not allowed; use one of auto, fewclue, clue"),
        ("clue", {"layouts": {"mine": {"dev": "d.json"}}}, "clue.layouts.mine: missing required split 'train'"),
        ("clue", {"pth": "x"}, "clue: unknown key 'pth'; allowed keys: layouts, max_bad_ratio, on_bad_rows, path, tasks"),
        ("ape210k", {"on_bad_rows": "Skip"}, "ape210k.on_bad_rows: 'Skip' is not allowed; use one of fail, skip"),
        ("ape210k", {"splits": {"../x": "a.json"}}, "ape210k.splits: name '../x' is not allowed"),
        ("ape210k", {"splits": {}}, "ape210k.splits: no splits"),
        ("lccc", {"limits": {"max_turn": 3}}, "lccc.limits: unknown key 'max_turn'; allowed keys: dedupe, max_turn_chars, max_turns, min_turns"),
        ("lccc", {"limits": {"min_turns": 4, "max_turns": 2}}, "lccc.limits.max_turns: 2 is not allowed; use a number in [4, 1024]"),
        ("lccc", {"splits": {"train": {"file": "d.json", "kye": "train"}}}, "lccc.splits.train: unknown key 'kye'; allowed keys: file, key"),
        ("lccc", {"on_bad_rows": "Skip"}, "lccc.on_bad_rows: 'Skip' is not allowed; use one of fail, skip"),
    ],
)
def test_params_mistakes_are_one_line_config_errors(section, change, message):
    cls = {"clue": ClueParams, "ape210k": ApeParams, "lccc": LcccParams}[section]
    with pytest.raises(ConfigError) as err:
        cls.from_params(PARAMS[section] | change)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"clue\.tasks: unknown task 'nope'; known tasks: tnews, iflytek"):
        ClueParams.from_params(PARAMS["clue"]).task("nope")


# ---------------------------------------------------------------- end to end through the stage programs


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("bad-input") / "project")


def run_stage(project: Path, module: str, *args: str, **sections) -> subprocess.CompletedProcess:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for name, change in sections.items():
        params[name] = params[name] | change
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", f"stages.{module}", *args]
    return subprocess.run(cmd, cwd=project, env=project_env(project), capture_output=True, text=True, timeout=120)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(errors) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stdout + proc.stderr
    return errors[0]


def test_stage_config_mistakes_exit_2_with_one_line(project):
    proc = run_stage(project, "prepare_clue", "tnews", clue={"on_bad_rows": "Skip"})
    assert one_error_line(proc) == "error: clue.on_bad_rows: 'Skip' is not allowed; use one of fail, skip"
    proc = run_stage(project, "prepare_clue", "nope")
    assert one_error_line(proc).startswith("error: clue.tasks: no entry 'nope'; defined: tnews, iflytek")
    proc = run_stage(project, "prepare_lccc", lccc={"limits": {"min_turn": 2}})
    assert one_error_line(proc).startswith("error: lccc.limits: unknown key 'min_turn'")
    proc = run_stage(project, "prepare_ape210k", ape210k={"splits": {"train": ["a.json"]}})
    assert one_error_line(proc) == "error: ape210k.splits.train: ['a.json'] is not allowed; expected a file name"


def test_stage_input_mistakes_exit_2_with_one_line(project):
    data = project / "bad"
    (data / "clue" / "tnews" / "train.json").mkdir(parents=True)
    write_lines(data / "clue" / "tnews" / "dev.json", [{"sentence": "a", "label": 100}])
    proc = run_stage(project, "prepare_clue", "tnews", clue={"path": "bad/clue"})
    assert one_error_line(proc) == "error: clue task 'tnews': bad/clue/tnews/train.json is a directory, expected a file"
    (data / "ape" / "train.ape.json").mkdir(parents=True)
    proc = run_stage(project, "prepare_ape210k", ape210k={"path": "bad/ape", "splits": {"train": "train.ape.json"}})
    assert one_error_line(proc) == "error: ape210k split 'train': bad/ape/train.ape.json is a directory, expected a file"
    (data / "lccc" / "d.json").mkdir(parents=True)
    proc = run_stage(project, "prepare_lccc", lccc={"path": "bad/lccc", "splits": {"train": {"file": "d.json", "key": "train"}}})
    assert one_error_line(proc) == "error: lccc split 'train': bad/lccc/d.json is a directory, expected a file"
    proc = run_stage(project, "prepare_lccc", lccc={"path": "bad/lccc", "splits": {"train": {"file": "nothing.txt"}}})
    assert one_error_line(proc) == "error: lccc split 'train': bad/lccc/nothing.txt not found"


def test_stage_fails_an_empty_input_file(project):
    (project / "empty").mkdir()
    (project / "empty" / "train.txt").write_bytes(b"")
    proc = run_stage(project, "prepare_lccc", lccc={"path": "empty", "splits": {"train": {"file": "train.txt"}}})
    assert one_error_line(proc) == "error: lccc split 'train': empty/train.txt is empty (0 bytes)"
    (project / "empty" / "train.txt").write_bytes(b"\xef\xbb\xbf\n  \n")  # no row either: found by reading
    proc = run_stage(project, "prepare_lccc", lccc={"path": "empty", "splits": {"train": {"file": "train.txt"}}})
    assert one_error_line(proc) == "error: empty/train.txt: split 'train': empty input: no rows"


GBK_ROWS = [{"sentence": f"新闻{i}", "label": 100 + i % 2} for i in range(20)]


def test_stage_fails_an_all_bad_gbk_file_under_skip(project):
    task_dir = project / "gbk" / "tnews"
    write_lines(task_dir / "train.json", GBK_ROWS, encoding="gbk")
    write_lines(task_dir / "dev.json", GBK_ROWS)
    proc = run_stage(project, "prepare_clue", "tnews", clue={"path": "gbk", "on_bad_rows": "skip"})
    assert one_error_line(proc) == (
        "error: gbk/tnews/train.json: split 'train': 20 of 20 rows are bad (100% > max_bad_ratio 0.1;"
        " most are invalid_utf-8: 20): not UTF-8: wrong encoding (e.g. GBK)?"
    )


def test_stage_quarantines_and_counts_a_hostile_row_under_skip(project):
    task_dir = project / "hostile" / "tnews"
    hostile = next(c for c in HOSTILE if c.reader == "clue" and c.name == "2 MB line").data
    write_lines(task_dir / "dev.json", GBK_ROWS)
    (task_dir / "train.json").write_bytes(write_lines(task_dir / "dev.json", GBK_ROWS).read_bytes() + hostile)
    proc = run_stage(project, "prepare_clue", "tnews", clue={"path": "hostile", "on_bad_rows": "skip"})
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    metrics = json.loads((project / "reports" / "prepare_clue" / "tnews.json").read_text())
    assert pq.read_metadata(project / "data/prepared/clue/tnews/train.parquet").num_rows == 20
    assert metrics["bad_rows"] == 1 and metrics["bad_rows.line_too_long"] == 1 and metrics["train"]["rows"] == 20, metrics
    (record,) = [json.loads(x) for x in (project / "data/prepared/clue/tnews/quarantine.jsonl").read_text().splitlines()]
    assert record["line"] == 21 and record["reason"].startswith("line too long")
