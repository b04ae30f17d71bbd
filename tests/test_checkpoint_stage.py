"""A local checkpoint is a model (issue 10): ``dvc repro`` finetunes checkpoints in the layouts users
download, with no pretraining stage, and replacing a checkpoint folder reruns exactly its stages.

Real DVC, real MLflow (SQLite), real FewCLUE tnews from ../shared/data, checkpoints in the Chinese BERT
layout (the real 21,128-entry vocab and the original configs without ``model_type``, tiny random weights).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import make_project, project_env
from shared_data import shared_data_dir

from benchmarks.checkpoint_layouts import build_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]

BERT, LARGE = "bert-base-chinese", "chinese-roberta-wwm-ext-large"


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=project, env=project_env(project), capture_output=True, text=True, timeout=1800)


def set_params(project: Path, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(params)
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Two downloaded checkpoints outside the project, linked in as checkpoints/<name>; tnews only."""
    shared = shared_data_dir()
    base = tmp_path_factory.mktemp("checkpoint-stage")
    hub = base / "hub"  # where a user keeps downloads
    for layout in ("bert-base-chinese", "roberta-wwm-ext-large"):
        build_checkpoint(hub, layout, source_dir=shared / "bert-chinese-layout")
    project = make_project(base / "project")
    (project / "dvc.lock").unlink()  # the lock then lists exactly the stages this test ran
    (project / "checkpoints").mkdir(exist_ok=True)
    for name in (BERT, LARGE):
        (project / "checkpoints" / name).symlink_to(hub / name, target_is_directory=True)

    def edit(p):
        p["clue"]["path"] = str(shared / "clue")
        p["clue"]["tasks"] = {"tnews": p["clue"]["tasks"]["tnews"]}
        p["finetune"]["checkpoints"] = [BERT, LARGE]
        p["finetune"]["recipes"]["clue-base"].update(num_train_epochs=1, max_seq_len=32, learning_rate=5e-4)

    set_params(project, edit)
    done = dvc(project, "repro", "finetune_checkpoint")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return project


def lock_entry(project: Path, stage: str) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"][stage]


def test_checkpoints_are_finetuned_with_no_pretraining_stage(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    assert set(lock) == {"prepare_clue@tnews", f"finetune_checkpoint@{BERT}-tnews", f"finetune_checkpoint@{LARGE}-tnews"}
    assert not list((project / "models").glob("pretrain/*/config.json")) and not list((project / "models").glob("tokenizers/*/tokenizer.json"))
    for name in (BERT, LARGE):
        deps = {d["path"]: d for d in lock[f"finetune_checkpoint@{name}-tnews"]["deps"]}
        assert deps[f"checkpoints/{name}"]["md5"].endswith(".dir") and deps[f"checkpoints/{name}"]["nfiles"] == 3  # config, vocab, weights
        report = json.loads((project / "reports" / "finetune" / name / "tnews.json").read_text(encoding="utf-8"))
        assert report["recipe"] == "clue-base" and report["dev"]["rows"] == 1098 and 0 <= report["dev"]["accuracy"] <= 1
        saved = project / "models" / "finetune" / name / "tnews"
        config = json.loads((saved / "config.json").read_text(encoding="utf-8"))
        assert config["model_type"] == "bert" and config["vocab_size"] == 21128 and (saved / "model.safetensors").is_file()
        meta = json.loads((project / "data" / "predictions" / "clue" / "tnews" / name / "meta.json").read_text(encoding="utf-8"))
        assert meta["recipe"] == "clue-base" and meta["kind"] == "transformer"


def test_mlflow_records_the_recipe_and_how_the_checkpoint_was_read(project):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("zhnlp")
    runs = {r.data.tags["dvc.stage"]: r for r in client.search_runs([exp.experiment_id]) if "dvc.stage" in r.data.tags}  # not the pipeline parent
    large = runs[f"finetune_checkpoint@{LARGE}-tnews"].data.params
    assert large["recipe"] == "clue-base" and large["finetune.recipes.clue-base.learning_rate"] == "0.0005"
    # the folder name says RoBERTa; the weights say BERT, and the config had no model_type
    assert large["checkpoint.model_type"] == "bert" and large["checkpoint.inferred_model_type"] == "True"
    assert large["checkpoint.tokenizer_source"] == "vocab.txt" and large["checkpoint.mlm_head"] == "untrained"


def test_replacing_a_checkpoint_folder_reruns_exactly_its_stages(project):
    shared = shared_data_dir()
    assert json.loads(dvc(project, "status", "--json", "finetune_checkpoint").stdout) == {}
    hub = (project / "checkpoints" / BERT).resolve().parent
    shutil.rmtree(hub / BERT)
    build_checkpoint(hub, "bert-base-chinese", source_dir=shared / "bert-chinese-layout", seed=1)  # a new download
    status = dvc(project, "status", "--json", "finetune_checkpoint")
    assert set(json.loads(status.stdout)) == {f"finetune_checkpoint@{BERT}-tnews"}, status.stdout


def test_a_pickle_only_checkpoint_is_refused_in_one_line(project, tmp_path):
    shared = shared_data_dir()
    folder = build_checkpoint(tmp_path, "bin-only", source_dir=shared / "bert-chinese-layout")
    (project / "checkpoints" / folder.name).symlink_to(folder, target_is_directory=True)
    set_params(project, lambda p: p["finetune"].update(checkpoints=[BERT, LARGE, folder.name]))
    done = dvc(project, "repro", f"finetune_checkpoint@{folder.name}-tnews")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pytorch_model.bin" in errors[0] and "safetensors" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (project / "reports" / "finetune" / folder.name).exists()


def test_a_generation_head_on_a_checkpoint_with_a_random_mlm_head_says_so(project):
    """UniLM seq2seq on the HIT-style checkpoint (MLM head as released: untrained), on the real Ape210K
    sample, which ships only valid: the carve params make train and test, and no pretraining runs."""
    shared = shared_data_dir()

    def edit(p):
        p["ape210k"].update(path=str(shared / "ape210k"), splits={"valid": "valid.ape.json"},
                            carve={"train": {"of": "valid", "share": 0.8}, "test": {"of": "valid", "share": 0.1}})
        p["finetune_ape210k"].update(backbone=f"checkpoints/{LARGE}", max_steps=4, save_steps=4, logging_steps=2, beams=[1])

    set_params(project, edit)
    done = dvc(project, "repro", "finetune_ape210k")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    warnings = [line for line in done.stdout.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "untrained (randomly initialised) MLM head" in warnings[0], done.stdout[-3000:]
    metrics = json.loads((project / "reports" / "finetune_ape210k" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["model"] == LARGE and metrics["backbone_mlm_head"] == "untrained"
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    assert f"checkpoints/{LARGE}" in {d["path"] for d in lock["finetune_ape210k"]["deps"]}
    assert not any(name.startswith(("pretrain", "tokenizer", "encode")) for name in lock)
