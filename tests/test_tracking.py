"""MLflow tracking of stage runs: the experiment's kind, the labels stage runs carry, tables logged by stages."""

from __future__ import annotations

import pytest


def test_the_experiment_opens_on_model_training_and_runs_carry_their_labels(tmp_path, monkeypatch):
    import mlflow

    from stages.common.tracking import StageRun, ensure_experiment

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # an earlier test in this process may have set MLflow's global URI, which wins over the environment
    monkeypatch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp_id = client.create_experiment("zhnlp")  # made before the tag existed: ensure_experiment sets it
    assert ensure_experiment(client) == exp_id
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "custom_model_development"
    client.set_experiment_tag(exp_id, "mlflow.experimentKind", "genai_development")  # a user's own choice stays
    ensure_experiment(client)
    assert client.get_experiment(exp_id).tags["mlflow.experimentKind"] == "genai_development"

    with StageRun("labels_test@char-tnews", {"a": 1}, model="char", task="tnews", backbone=None) as run:
        run.log_table([{"model": "char", "tnews": 55.0}, {"model": "tfidf", "tnews": 50.0, "afqmc": 69.0}], "table.json")
    tags = client.get_run(run.run.info.run_id).data.tags
    assert (tags["zhnlp.model"], tags["zhnlp.task"], tags["zhnlp.stage_kind"]) == ("char", "tnews", "labels_test")
    assert "zhnlp.backbone" not in tags and "zhnlp.recipe" not in tags
    table = mlflow.load_table("table.json", run_ids=[run.run.info.run_id])
    assert list(table.columns) == ["model", "tnews", "afqmc"] and table["tnews"].tolist() == [55.0, 50.0]
    with pytest.raises(TypeError, match="labels are model, task, backbone, recipe"):
        StageRun("x", {}, modle="char")
