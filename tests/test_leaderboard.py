"""Leaderboards: one task set for every row, exclusions stated, means, ranks, agreement, CAN rows, outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from zhnlp.config import ConfigError, from_params
from zhnlp.tasks.leaderboard import LeaderboardConfig, LeaderboardError, build_leaderboard, extra_columns_from, leaderboard_from_reports, mean_gammas
from zhnlp.tasks.leaderboard_charts import render_chart, render_task_chart
from zhnlp.tasks.leaderboard_report import flat_metrics, plot_rows, render_markdown
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
    extra = {"char": {"ape210k.accuracy": 0.41, "lccc.bleu4": 21.23, "lccc.distinct2": 0.4828, "lccc.perplexity": 35.2}, "ghost": {"x": 1.0}}
    board = build_leaderboard(scores(), TASKS, extra_metrics=extra)
    assert board["extra_columns"] == ["ape210k.accuracy", "lccc.bleu4", "lccc.distinct2", "lccc.perplexity"]
    assert board["models"]["char"]["means"] == build_leaderboard(scores(), TASKS)["models"]["char"]["means"]
    md = render_markdown(board)
    assert "## Other tasks (not part of the CLUE means)" in md
    # one unit per column, named in its header: fractions shown in %, BLEU in its own 0-100, perplexity as is
    assert ("| model | ape210k: accuracy (%) | lccc: BLEU-4 (0–100) | lccc: distinct-2 (%) | lccc: perplexity (≥ 1, lower is better) |") in md
    assert "| char | 41.00 | 21.23 | 48.28 | 35.20 |" in md
    assert board["extra_units"]["lccc.distinct2"] == {"title": "lccc: distinct-2 (%)", "scale": 100.0}
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
        # the prepare report's label distribution: tnews' majority class holds 45% of each split
        share = 0.45 if task == "tnews" else 0.3
        (root / "reports" / "prepare_clue").mkdir(parents=True, exist_ok=True)
        (root / "reports" / "prepare_clue" / f"{task}.json").write_text(
            json.dumps({split: {"labels": 3, "majority_share": share, "rows": 100} for split in ("train", "dev", "test_public")})
        )


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

    # tfidf's tnews (0.43, +CAN 0.434) is at or below tnews' majority baseline (0.45); nothing else is
    assert board["baselines"]["tnews"] == {"value": 0.45, "kind": "majority", "source": "reports/prepare_clue/tnews.json[test_public].majority_share"}
    table = render_markdown(board).split("## Macro-F1")[0]
    assert "| *baseline* | 45.00 (maj) | 30.00 (maj) | 30.00 (maj) | – | – | – | – | – | – |" in table
    assert "| tfidf | 43.00 ▼ | 48.00 | 53.00 |" in table and "| tfidf+CAN | 43.40 ▼ | 48.40 | 53.40 |" in table
    assert "| word | 46.00 | 51.00 | 56.00 |" in table and "▼ marks a score at or below it" in table

    paths = write_outputs(board, tmp_path / "reports")
    for key in ("markdown", "json", "png", "plot", "tasks_png"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    png = paths["tasks_png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and b"matplotlib" not in png  # no library version in a tracked output
    first = {k: paths[k].read_bytes() for k in ("markdown", "png", "tasks_png")}
    write_outputs(json.loads(paths["json"].read_text()), tmp_path / "reports")
    assert {k: paths[k].read_bytes() for k in first} == first  # a rerun (from the JSON) gives the same bytes
    assert json.loads(paths["json"].read_text())["models"]["word+CAN"]["can"] is True
    names = flat_metrics(board)
    assert names["leaderboard.char_CAN.score.am"] == pytest.approx(board["models"]["char+CAN"]["means"]["score"]["am"])
    assert {n.split(".")[1] for n in names if n.endswith(".score.am")} == {"char", "char_CAN", "word", "word_CAN", "tfidf", "tfidf_CAN"}
    assert names["leaderboard.baseline.tnews"] == 0.45 and names["leaderboard.tfidf_CAN.tasks_at_or_below_baseline"] == 1
    assert names["leaderboard.char.tasks_at_or_below_baseline"] == 0


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
            shares = {}
            for split in ("dev", "test_public"):
                y = rng.choice(m, size=300, p=prior / prior.sum())
                shares[split] = {"majority_share": round(float(np.bincount(y).max() / len(y)), 4)}
                z = (2.5 - 0.5 * model_i) * np.eye(m)[y] + rng.normal(size=(300, m))
                P = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
                pq.write_table(pa.table({"id": [str(i) for i in range(300)], "label_id": y.astype(np.int32), "probs": P.tolist()}, schema=schema), d / f"{split}.parquet")
                report[split] = {"accuracy": accuracy(y, P.argmax(1)), "macro_f1": macro_f1(y, P.argmax(1))}
            (d / "meta.json").write_text(json.dumps({"model": model, "task": task, "labels": list(range(m)), "train_label_counts": prior.astype(int).tolist()}))
            (tmp_path / "reports" / "finetune" / model).mkdir(parents=True, exist_ok=True)
            (tmp_path / "reports" / "finetune" / model / f"{task}.json").write_text(json.dumps(report))
        (tmp_path / "reports" / "prepare_clue").mkdir(parents=True, exist_ok=True)
        (tmp_path / "reports" / "prepare_clue" / f"{task}.json").write_text(json.dumps(shares))  # the last model's draw
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
        assert set(report) == {"char", "word", "tfidf"} and set(report["char"]) == {"dev", "test_public", "dev_selected"}
        assert (tmp_path / "reports" / "can" / f"{task}.md").read_text().startswith(f"# CAN on {task}")
        assert (tmp_path / "data" / "predictions_can" / "clue" / task / "tfidf" / "test_public.parquet").is_file()
        rel = json.loads((tmp_path / "reports" / "can" / f"{task}_reliability.json").read_text())
        png = (tmp_path / "reports" / "can" / f"{task}_reliability.png").read_bytes()
        assert png.startswith(b"\x89PNG") and b"Matplotlib" not in png, "no library version in a DVC-tracked image"
        assert sum(r["count"] for r in rel if r["model"] == "word" and r["when"] == "after") == 300
    lb_stage.main()
    board = json.loads((tmp_path / "reports" / "leaderboard.json").read_text())
    for name in ("leaderboard.md", "leaderboard.png", "leaderboard_plot.json"):
        assert (tmp_path / "reports" / name).is_file()
    assert board["order"] == ["char", "char+CAN", "word", "word+CAN", "tfidf", "tfidf+CAN"] and not board["notes"]
    assert board["splits"] == {t: "test_public" for t in TASKS}
    assert set(board["can"]) == {"char", "word", "tfidf"} and board["can"]["char"]["tnews"]["reference_rows"] > 0
    assert (tmp_path / "reports" / "leaderboard_tasks.png").is_file()
    assert "## CAN: what stands behind each +CAN score" in (tmp_path / "reports" / "leaderboard.md").read_text()

    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name("zhnlp")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])}
    lb = runs["leaderboard"]
    assert lb.data.metrics["leaderboard.word_CAN.score.am"] == pytest.approx(board["models"]["word+CAN"]["means"]["score"]["am"])
    assert "leaderboard/leaderboard.png" in {a.path for a in client.list_artifacts(lb.info.run_id, "leaderboard")}
    can_run = runs["can@afqmc"]
    assert "char.test_public.accuracy_after" in can_run.data.metrics
    assert "reliability.png" in {a.path for a in client.list_artifacts(can_run.info.run_id)}


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
    score_table = table[: table.index("## Macro-F1")]
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1] for line in score_table if line.startswith("| ") and " | " in line}
    assert rows["bert"] == rows["bert+CAN"] == "clue-base" and rows["char"] == "tiny-cpu" and rows["tfidf"] == "–"


# --------------------------------------------------------------------------- baselines and what stands behind +CAN


def test_each_task_kind_gets_its_majority_or_chance_baseline(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zhnlp.errors import UserError
    from zhnlp.tasks.task_baselines import at_or_below, task_baselines

    prep = tmp_path / "reports" / "prepare_clue"
    prep.mkdir(parents=True)
    (prep / "tnews.json").write_text(json.dumps({"dev": {"majority_share": 0.25}, "test_public": {"majority_share": 0.4}}))
    data = tmp_path / "data" / "prepared" / "clue"
    for task in ("iflytek", "c3", "chid"):
        (data / task).mkdir(parents=True)
    (data / "iflytek" / "task.json").write_text(json.dumps({"kind": "classification", "labels": ["a", "b", "c", "d", "e"]}))
    pq.write_table(pa.table({"choices": [["x", "y"], ["x", "y", "z"], list("wxyz"), list("wxyz")]}), data / "c3" / "test_public.parquet")
    pq.write_table(pa.table({"candidates": [list("abcdefg")] * 3}), data / "chid" / "dev.parquet")
    kinds = {"tnews": "classification", "iflytek": "classification", "afqmc": "classification", "c3": "multiple_choice",
             "chid": "idiom_cloze", "cmrc2018": "span_extraction", "cluener": "ner"}
    splits = {t: "dev" if t in ("chid", "afqmc") else "test_public" for t in kinds}
    base, notes = task_baselines(tmp_path, list(kinds), splits, kinds)
    assert base["tnews"] == {"value": 0.4, "kind": "majority", "source": "reports/prepare_clue/tnews.json[test_public].majority_share"}
    assert base["iflytek"]["value"] == pytest.approx(0.2) and base["iflytek"]["kind"] == "chance"  # no prepare report: 1/#labels
    assert base["c3"]["value"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4 + 1 / 4) / 4) and base["c3"]["kind"] == "chance"
    assert base["chid"]["value"] == pytest.approx(1 / 7)
    assert base["cmrc2018"] is None and base["cluener"] is None and base["afqmc"] is None
    assert notes == ["no majority/chance baseline for afqmc: reports/prepare_clue/<task>.json and data/prepared/clue/<task>/ do not give it; those cells are not marked"]
    assert at_or_below(0.4, base["tnews"]) and at_or_below(0.40004, base["tnews"]) and not at_or_below(0.401, base["tnews"])
    assert not at_or_below(0.0, None)
    (prep / "tnews.json").write_text("{broken")
    with pytest.raises(UserError, match=r"reports/prepare_clue/tnews.json: not valid JSON"):
        task_baselines(tmp_path, ["tnews"], splits, kinds)


def write_can_case(root: Path):
    """Real CAN on small constructed predictions for tnews (3 balanced classes, 60 rows per split).

    char is collapsed: it predicts class 0 everywhere, so its accuracy is the majority share (20/60); only
    5 of its rows are confident and 1 of those is right. tfidf is confident on every row and 54 of 60 right.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.can import run_task
    from zhnlp.metrics import accuracy, macro_f1
    from zhnlp.tasks.can_select import CanParams

    y = np.array([0, 1, 2, 1, 2] + [0] * 19 + [1] * 18 + [2] * 18)
    char = np.array([[0.96, 0.02, 0.02]] * 5 + [[0.36, 0.33, 0.31]] * 55)
    tfidf = np.full((60, 3), 0.05)
    tfidf[np.arange(60), (y + (np.arange(60) % 10 == 0)) % 3] = 0.9  # every 10th row wrong
    schema = pa.schema([("id", pa.string()), ("label_id", pa.int32()), ("probs", pa.list_(pa.float64()))])
    for model, P in (("char", char), ("tfidf", tfidf)):
        d = root / "data" / "predictions" / "clue" / "tnews" / model
        d.mkdir(parents=True)
        for split in ("dev", "test_public"):
            pq.write_table(pa.table({"id": [str(i) for i in range(60)], "label_id": y.astype(np.int32), "probs": P.tolist()}, schema=schema), d / f"{split}.parquet")
        (d / "meta.json").write_text(json.dumps({"labels": ["a", "b", "c"], "train_label_counts": [20, 20, 20]}))
        report = {s: {"accuracy": accuracy(y, P.argmax(1)), "macro_f1": macro_f1(y, P.argmax(1))} for s in ("dev", "test_public")}
        (root / "reports" / "finetune" / model).mkdir(parents=True)
        (root / "reports" / "finetune" / model / "tnews.json").write_text(json.dumps(report))
    metrics, _, _ = run_task(root / "data" / "predictions" / "clue" / "tnews", root / "data" / "predictions_can" / "clue" / "tnews", CanParams())
    (root / "reports" / "can").mkdir(parents=True)
    (root / "reports" / "can" / "tnews.json").write_text(json.dumps(metrics))
    (root / "reports" / "prepare_clue").mkdir(parents=True)
    (root / "reports" / "prepare_clue" / "tnews.json").write_text(json.dumps({s: {"majority_share": round(20 / 60, 4)} for s in ("dev", "test_public")}))
    return metrics


def test_the_leaderboard_shows_the_can_reference_and_marks_collapsed_and_small_reference_cells(tmp_path):
    from zhnlp.tasks.leaderboard_charts import task_panels

    metrics = write_can_case(tmp_path)
    assert metrics["char"]["test_public"]["reference_rows"] == 5 and metrics["char"]["test_public"]["reference_accuracy"] == pytest.approx(0.2)
    params = {"leaderboard": {}, "finetune.models": ["char"], "finetune.baselines": ["tfidf"], "clue.tasks": {"tnews": {}}}
    board = build(tmp_path, params)
    char, tfidf = board["can"]["char"]["tnews"], board["can"]["tfidf"]["tnews"]
    assert (char["reference_rows"], char["reference_min_rows"], char["reference_too_small"], char["classes"]) == (5, 30, True, 3)
    assert char["reference_accuracy"] == pytest.approx(0.2) and char["split"] == "test_public"
    assert (tfidf["reference_rows"], tfidf["reference_too_small"], tfidf["reference_accuracy"]) == (60, False, pytest.approx(0.9))

    md = render_markdown(board)
    score_table = md.split("## Macro-F1")[0]
    assert "| *baseline* | 33.33 (maj) |" in score_table
    assert "| char | 33.33 ▼ |" in score_table  # the collapsed model sits on the majority line
    char_can = next(line for line in score_table.splitlines() if line.startswith("| char+CAN |"))
    assert char_can.split(" | ")[1].endswith(" †") and "| tfidf+CAN | 90.00 |" in score_table
    assert "† marks a +CAN score whose CAN reference" in score_table
    sel = metrics["char"]["dev_selected"]
    after = metrics["char"]["test_public"]["accuracy_after"]
    assert (f"| char | tnews | test_public | 3 | 5 / 30 † | 20.00 | 33.33 → {100 * after:.2f} | "
            f"{metrics['char']['test_public']['fixed']} / {metrics['char']['test_public']['broken']} | τ={sel['tau']:g}, α={sel['alpha']:g} | "
            f"33.33 → {100 * sel['test_public']['accuracy_after']:.2f}") in md
    assert "| tfidf | tnews | test_public | 3 | 60 / 30 | 90.00 | 90.00 → 90.00 | 0 / 0 |" in md
    assert "the reference was below the minimum on 1 of them" in md and "Su's fixed defaults (τ=0.9, α=1)" in md

    (panel,) = task_panels(board)
    assert panel["baseline"] == {"value": pytest.approx(33.33), "kind": "majority"}  # the prepare report rounds to 4 decimals
    bars = {b["row"]: b for b in panel["bars"]}
    assert bars["char"]["low"] and not bars["char"]["small_reference"]
    assert bars["char+CAN"]["small_reference"] and not bars["tfidf+CAN"]["small_reference"] and not bars["tfidf"]["low"]
    names = flat_metrics(board)
    assert names["leaderboard.can.reference_too_small"] == 1 and names["leaderboard.can.pairs"] == 2
    assert names["leaderboard.char.tasks_at_or_below_baseline"] == 1 and names["leaderboard.tfidf.tasks_at_or_below_baseline"] == 0
    render_task_chart(board, tmp_path / "tasks.png")
    assert (tmp_path / "tasks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_old_can_reports_without_reference_fields_still_render(tmp_path):
    """Reports from before the reference fields: the size comes from rows - uncertain_rows, nothing is flagged."""
    write_reports(tmp_path, ["char", "word", "tfidf"], TASKS)
    path = tmp_path / "reports" / "can" / "tnews.json"
    report = json.loads(path.read_text())
    report["char"]["test_public"] |= {"rows": 80, "uncertain_rows": 75, "accuracy_confident": 0.2}
    path.write_text(json.dumps(report))
    board = build(tmp_path, stage_params(TASKS))
    e = board["can"]["char"]["tnews"]
    assert (e["reference_rows"], e["reference_accuracy"], e["reference_too_small"], e["dev_selected"]) == (5, 0.2, False, None)
    assert "| char | tnews | test_public | – | 5 / – | 20.00 |" in render_markdown(board)
