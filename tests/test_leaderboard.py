"""Leaderboards: one task set for every row, exclusions stated, means, ranks, agreement, CAN rows, outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from zhnlp.config import ConfigError, from_params
from zhnlp.tasks.leaderboard import LeaderboardConfig, LeaderboardError, build_leaderboard, extra_columns_from, leaderboard_from_reports, mean_gammas
from zhnlp.tasks.leaderboard_report import flat_metrics, plot_rows, render_chart, render_markdown
from zhnlp.metrics import power_mean

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`): make `stages` importable
    sys.path.insert(0, str(ROOT))

TASKS = ["tnews", "iflytek", "afqmc"]


def s(acc, f1=None):
    return {"accuracy": acc, "macro_f1": acc - 0.05 if f1 is None else f1}


def scores():
    return {
        "char": {"tnews": s(0.56), "iflytek": s(0.60), "afqmc": s(0.72)},
        "char+CAN": {"tnews": s(0.57), "iflytek": s(0.61), "afqmc": s(0.72)},
        "tfidf": {"tnews": s(0.50), "iflytek": s(0.52), "afqmc": s(0.69)},
        "tfidf+CAN": {"tnews": s(0.50), "iflytek": s(0.53), "afqmc": s(0.69)},
    }


def test_missing_task_is_an_error_naming_model_and_tasks():
    sc = scores()
    del sc["tfidf"]["iflytek"], sc["tfidf"]["afqmc"], sc["char+CAN"]["tnews"]
    with pytest.raises(LeaderboardError) as err:
        build_leaderboard(sc, TASKS)
    msg = str(err.value)
    assert "model 'tfidf' lacks tasks ['iflytek', 'afqmc']" in msg and "model 'char+CAN' lacks tasks ['tnews']" in msg
    assert "exclude_tasks" in msg
    sc = scores()
    del sc["char"]["afqmc"]["macro_f1"]
    with pytest.raises(LeaderboardError, match="model 'char' task 'afqmc' lacks a numeric macro_f1"):
        build_leaderboard(sc, TASKS)
    with pytest.raises(LeaderboardError, match=r"not in the task set: \['wsc'\]"):
        build_leaderboard(scores(), TASKS, exclude_tasks=["wsc"])
    with pytest.raises(LeaderboardError, match="every task is excluded"):
        build_leaderboard(scores(), TASKS, exclude_tasks=TASKS)


def test_excluded_tasks_leave_every_mean_and_are_named_in_the_report():
    sc = scores()
    for row in ("tfidf", "tfidf+CAN"):
        del sc[row]["iflytek"]  # allowed: iflytek is excluded for everyone
    board = build_leaderboard(sc, TASKS, exclude_tasks=["iflytek"])
    assert board["tasks"] == ["tnews", "afqmc"] and board["excluded_tasks"] == ["iflytek"]
    assert board["models"]["char"]["means"]["accuracy"]["am"] == pytest.approx((0.56 + 0.72) / 2)
    assert "iflytek" not in board["models"]["char"]["scores"]  # char's iflytek score is not used either
    md = render_markdown(board)
    assert "**Excluded from every mean:** iflytek" in md
    assert "Excluded tasks: none." in render_markdown(build_leaderboard(scores(), TASKS))


def test_means_ranks_can_rows_and_agreement():
    board = build_leaderboard(scores(), TASKS, gammas=[1, 0, -1, 2], splits={t: "dev" for t in TASKS})
    assert list(board["means"]) == ["am", "gm", "hm", "m_2"]
    assert board["order"] == ["char", "char+CAN", "tfidf", "tfidf+CAN"]
    e = board["models"]["char+CAN"]
    assert e["can"] and e["base"] == "char" and not board["models"]["char"]["can"]
    accs = [0.57, 0.61, 0.72]
    for name, g in board["means"].items():
        assert e["means"]["accuracy"][name] == pytest.approx(power_mean(accs, g))
    assert {r: board["models"][r]["ranks"]["accuracy"]["am"] for r in board["order"]} == {"char": 2, "char+CAN": 1, "tfidf": 4, "tfidf+CAN": 3}
    assert board["agreement"]["accuracy"]["identical"] is True
    assert board["agreement"]["accuracy"]["pairs"]["am_vs_hm"] == {"kendall_tau": 1.0, "swapped": []}
    md = render_markdown(board)
    assert "| char+CAN | 57.00 | 61.00 | 72.00 |" in md and "identical ranking under AM, GM, HM, M_2: **yes**" in md
    assert "## Accuracy" in md and "## Macro-F1" in md and "Split per task: tnews: dev" in md


def test_rankings_that_disagree_report_the_swapped_pairs():
    sc = {"spiky": {"a": s(0.95), "b": s(0.15)}, "flat": {"a": s(0.50), "b": s(0.50)}}
    board = build_leaderboard(sc, ["a", "b"])
    ranks = {r: board["models"][r]["ranks"]["accuracy"] for r in sc}
    assert ranks["spiky"]["am"] == 1 and ranks["spiky"]["hm"] == 2
    ag = board["agreement"]["accuracy"]
    assert ag["identical"] is False
    assert ag["pairs"]["am_vs_hm"] == {"kendall_tau": -1.0, "swapped": [["spiky", "flat"]]}
    assert "**no**" in render_markdown(board) and "spiky ↔ flat" in render_markdown(board)


def test_undefined_geometric_mean_is_reported_not_hidden():
    sc = {"m1": {"a": s(0.0, 0.0), "b": s(0.8)}, "m2": {"a": s(0.4), "b": s(0.6)}}
    board = build_leaderboard(sc, ["a", "b"])
    assert board["models"]["m1"]["means"]["accuracy"]["gm"] is None
    assert board["models"]["m1"]["ranks"]["accuracy"]["gm"] is None
    assert board["agreement"]["accuracy"]["means_compared"] == ["am"]
    assert any("GM of Accuracy is undefined for m1" in n for n in board["notes"])


def test_extra_columns_are_shown_apart_from_the_clue_means():
    extra = {"char": {"ape210k.accuracy": 0.41, "lccc.perplexity": 35.2}, "ghost": {"x": 1.0}}
    board = build_leaderboard(scores(), TASKS, extra_metrics=extra)
    assert board["extra_columns"] == ["ape210k.accuracy", "lccc.perplexity"]
    assert board["models"]["char"]["means"] == build_leaderboard(scores(), TASKS)["models"]["char"]["means"]
    md = render_markdown(board)
    assert "## Other tasks (not part of the CLUE means)" in md and "| char | 0.41 | 35.2 |" in md
    assert any("'ghost'" in n for n in board["notes"])
    found, notes = extra_columns_from("ape210k", {"model": "char", "test": {"accuracy": 0.4, "beam": "x"}}, ["char"])
    assert found == {"char": {"ape210k.test.accuracy": 0.4}} and not notes
    found, _ = extra_columns_from("lccc", {"char": {"perplexity": 30.0}, "word": {"perplexity": 31.0}}, ["char", "word"])
    assert found == {"char": {"lccc.perplexity": 30.0}, "word": {"lccc.perplexity": 31.0}}
    assert extra_columns_from("lccc", {"perplexity": 3.0}, ["char"])[0] == {}


def test_the_three_outputs(tmp_path):
    board = build_leaderboard(scores(), TASKS)
    render_chart(board, tmp_path / "lb.png")
    assert (tmp_path / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = plot_rows(board)
    assert [r["model"] for r in rows] == board["order"] and rows[1]["accuracy_am"] == pytest.approx(100 * (0.57 + 0.61 + 0.72) / 3)
    assert render_markdown(json.loads(json.dumps(board))) == render_markdown(board)  # reports/leaderboard.json renders too
    assert mean_gammas([1, 0, -1]) == {"am": 1.0, "gm": 0.0, "hm": -1.0}


# --------------------------------------------------------------------------- the leaderboard stage


def write_reports(root: Path, models, tasks, *, skip=(), test_public=True):
    for model_i, model in enumerate(models):
        for task_i, task in enumerate(tasks):
            if (model, task) in skip:
                continue
            base = 0.5 + 0.05 * task_i - 0.03 * model_i
            report = {"dev": {"accuracy": base, "macro_f1": base - 0.1}}
            if test_public:
                report["test_public"] = {"accuracy": base - 0.01, "macro_f1": base - 0.11}
            path = root / "reports" / "finetune" / model / f"{task}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(report))
    for task_i, task in enumerate(tasks):
        can = {}
        for model_i, model in enumerate(models):
            base = 0.5 + 0.05 * task_i - 0.03 * model_i
            can[model] = {
                split: {"accuracy_before": base - d, "accuracy_after": base - d + 0.004, "macro_f1_before": base - d - 0.1, "macro_f1_after": base - d - 0.09}
                for split, d in (("dev", 0.0), ("test_public", 0.01))
            }
        (root / "reports" / "can").mkdir(parents=True, exist_ok=True)
        (root / "reports" / "can" / f"{task}.json").write_text(json.dumps(can))


def stage_params(tasks, exclude=()):
    return {
        "leaderboard": {"exclude_tasks": list(exclude), "gammas": [1, 0, -1]},
        "finetune.models": ["char", "word"],
        "finetune.baselines": ["tfidf"],
        "clue.tasks": {t: {"dir": t} for t in tasks},
    }


def build(root, params):
    """What the stage does with its params: the strict config, then the leaderboard from the reports."""
    cfg = from_params(LeaderboardConfig, params["leaderboard"], "leaderboard")
    return leaderboard_from_reports(root, params["finetune.models"] + params["finetune.baselines"], list(params["clue.tasks"]), cfg)


def test_stage_builds_from_reports_with_can_rows_and_writes_outputs(tmp_path):
    from stages.leaderboard import write_outputs

    write_reports(tmp_path, ["char", "word", "tfidf"], TASKS)
    (tmp_path / "reports" / "finetune_ape210k").mkdir()
    (tmp_path / "reports" / "finetune_ape210k" / "metrics.json").write_text(
        json.dumps({"backbone": "char", "trained": {"test": {"accuracy_beam1": 0.3, "seconds": 9.0}}})
    )
    board = build(tmp_path, stage_params(TASKS))
    assert board["order"] == ["char", "char+CAN", "word", "word+CAN", "tfidf", "tfidf+CAN"]
    assert board["splits"] == {t: "test_public" for t in TASKS}
    assert board["models"]["char+CAN"]["scores"]["tnews"]["score"] == pytest.approx(0.494)  # a classification task's score: accuracy
    assert board["models"]["char"]["scores"]["tnews"]["score"] == pytest.approx(0.49)
    # only the headline generation figures become columns
    assert board["models"]["char"]["extra"] == {"ape210k.trained.test.accuracy_beam1": 0.3} and not board["notes"]

    paths = write_outputs(board, tmp_path / "reports")
    for key in ("markdown", "json", "png", "plot"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert json.loads(paths["json"].read_text())["models"]["word+CAN"]["can"] is True
    names = flat_metrics(board)
    assert names["leaderboard.char_CAN.score.am"] == pytest.approx(board["models"]["char+CAN"]["means"]["score"]["am"])
    assert {n.split(".")[1] for n in names if n.endswith(".score.am")} == {"char", "char_CAN", "word", "word_CAN", "tfidf", "tfidf_CAN"}


def test_stage_reports_missing_tasks_and_honours_exclusions(tmp_path):
    write_reports(tmp_path, ["char", "word", "tfidf"], TASKS, skip={("word", "afqmc")}, test_public=False)
    with pytest.raises(LeaderboardError) as err:
        build(tmp_path, stage_params(TASKS))
    assert "model 'word' lacks tasks ['afqmc']" in str(err.value)
    assert "reports/finetune/word/afqmc.json is missing" in str(err.value)
    board = build(tmp_path, stage_params(TASKS, exclude=["afqmc"]))
    assert board["excluded_tasks"] == ["afqmc"] and board["splits"] == {"tnews": "dev", "iflytek": "dev"}
    path = tmp_path / "reports" / "finetune" / "char" / "tnews.json"
    path.write_text(json.dumps({"dev": {"accuracy": 90.0, "macro_f1": 0.8}}))
    with pytest.raises(LeaderboardError, match=r"score must be a fraction in \[0, 1\]; got 90.0"):
        build(tmp_path, stage_params(TASKS, exclude=["afqmc"]))


@pytest.mark.slow
def test_predictions_to_can_to_leaderboard_through_both_stage_mains(tmp_path, monkeypatch):
    """can@<task> for every task, then leaderboard, in-process, logging to the session's MLflow store."""
    import mlflow
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import stages.can as can_stage
    import stages.common.params as common_params
    import stages.common.tracking as common
    from zhnlp.metrics import accuracy, macro_f1

    rng = np.random.default_rng(0)
    schema = pa.schema([("id", pa.string()), ("label_id", pa.int32()), ("probs", pa.list_(pa.float64()))])
    for task_i, task in enumerate(TASKS):
        m = 3 + 2 * task_i
        prior = np.arange(m, 0, -1, dtype=float) ** 2
        for model_i, model in enumerate(["char", "word", "tfidf"]):
            d = tmp_path / "data" / "predictions" / "clue" / task / model
            d.mkdir(parents=True)
            report = {}
            for split in ("dev", "test_public"):
                y = rng.choice(m, size=300, p=prior / prior.sum())
                z = (2.5 - 0.5 * model_i) * np.eye(m)[y] + rng.normal(size=(300, m))
                P = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
                pq.write_table(pa.table({"id": [str(i) for i in range(300)], "label_id": y.astype(np.int32), "probs": P.tolist()}, schema=schema), d / f"{split}.parquet")
                report[split] = {"accuracy": accuracy(y, P.argmax(1)), "macro_f1": macro_f1(y, P.argmax(1))}
            (d / "meta.json").write_text(json.dumps({"model": model, "task": task, "labels": list(range(m)), "train_label_counts": prior.astype(int).tolist()}))
            (tmp_path / "reports" / "finetune" / model).mkdir(parents=True, exist_ok=True)
            (tmp_path / "reports" / "finetune" / model / f"{task}.json").write_text(json.dumps(report))
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["clue"]["tasks"] = {t: params["clue"]["tasks"][t] for t in TASKS}
    params["finetune"]["models"], params["finetune"]["baselines"] = ["char", "word"], ["tfidf"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    import stages.leaderboard as lb_stage

    for module in (common_params, common, can_stage, lb_stage):
        monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv(common.PIPELINE_RUN_ENV, raising=False)
    monkeypatch.setattr(common, "_dvc_ancestor", lambda: None)

    for task in TASKS:
        monkeypatch.setattr(sys, "argv", ["stages.can", task])
        can_stage.main()
        report = json.loads((tmp_path / "reports" / "can" / f"{task}.json").read_text())
        assert set(report) == {"char", "word", "tfidf"} and set(report["char"]) == {"dev", "test_public"}
        assert (tmp_path / "data" / "predictions_can" / "clue" / task / "tfidf" / "test_public.parquet").is_file()
        rel = json.loads((tmp_path / "reports" / "can" / f"{task}_reliability.json").read_text())
        assert sum(r["count"] for r in rel if r["model"] == "word" and r["when"] == "after") == 300
    lb_stage.main()
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    for name in ("leaderboard.md", "leaderboard.png", "leaderboard_plot.json"):
        assert (tmp_path / "reports" / name).is_file()
    assert board["order"] == ["char", "char+CAN", "word", "word+CAN", "tfidf", "tfidf+CAN"] and not board["notes"]
    assert board["splits"] == {t: "test_public" for t in TASKS}

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("zhnlp")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])}
    lb = runs["leaderboard"]
    assert lb.data.metrics["leaderboard.word_CAN.score.am"] == pytest.approx(board["models"]["word+CAN"]["means"]["score"]["am"])
    assert "leaderboard/leaderboard.png" in {a.path for a in client.list_artifacts(lb.info.run_id, "leaderboard")}
    can_run = runs["can@afqmc"]
    assert "char.test_public.accuracy_after" in can_run.data.metrics
    pngs = {a.path for a in client.list_artifacts(can_run.info.run_id, "reliability")}
    assert "reliability/reliability_afqmc_char_test_public.png" in pngs


def test_leaderboard_params_are_strict():
    assert from_params(LeaderboardConfig, {"exclude_tasks": ["afqmc"], "gammas": [1, 0, -1, 2]}, "leaderboard") == LeaderboardConfig(("afqmc",), (1.0, 0.0, -1.0, 2.0))
    for entry, message in (
        ({"exclude_task": []}, "leaderboard: unknown key 'exclude_task'; allowed keys: exclude_tasks, gammas"),
        ({"exclude_tasks": "afqmc"}, "leaderboard.exclude_tasks: 'afqmc' is not allowed; expected a list of str"),
        ({"gammas": [1, "x"]}, r"leaderboard.gammas\[1\]: 'x' is not allowed; expected float"),
        ({"gammas": [float("nan")]}, "leaderboard.gammas: nan is not allowed"),
    ):
        with pytest.raises(ConfigError, match=message):
            from_params(LeaderboardConfig, entry, "leaderboard")


def test_bad_report_json_is_one_clear_error(tmp_path):
    write_reports(tmp_path, ["char", "word", "tfidf"], TASKS)
    (tmp_path / "reports" / "can" / "tnews.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LeaderboardError, match=r"reports/can/tnews.json: not valid JSON"):
        build(tmp_path, stage_params(TASKS))
    (tmp_path / "reports" / "can" / "tnews.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(LeaderboardError, match=r"model 'char\+CAN' lacks tasks \['tnews'\]"):
        build(tmp_path, stage_params(TASKS))


def test_the_leaderboard_names_each_models_finetune_recipe(tmp_path):
    from zhnlp.tasks.leaderboard_report import render_markdown

    write_reports(tmp_path, ["char", "bert", "tfidf"], TASKS)
    for task in TASKS:
        for model, recipe in (("char", "tiny-cpu"), ("bert", "clue-base")):
            path = tmp_path / "reports" / "finetune" / model / f"{task}.json"
            path.write_text(json.dumps(json.loads(path.read_text()) | {"recipe": recipe}))
    params = stage_params(TASKS) | {"finetune.models": ["char"], "finetune.baselines": ["bert", "tfidf"]}
    board = build(tmp_path, params)
    assert board["recipes"] == {"char": "tiny-cpu", "bert": "clue-base"}  # the baseline has none
    table = render_markdown(board).splitlines()
    assert "| model | recipe | " in next(line for line in table if line.startswith("| model |"))
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in table if line.startswith("| ") and " | " in line}
    assert rows["bert"] == rows["bert+CAN"] == "clue-base" and rows["char"] == "tiny-cpu" and rows["tfidf"] == "–"
