"""zhnlp.tasks.predictions: the one owner of the predictions folder format (schema, write, read, checks, CAN rewrite)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zhnlp.errors import UserError
from zhnlp.tasks.predictions import (
    PREDICTION_SCHEMA,
    PredictionError,
    load_predictions,
    read_meta,
    read_predictions,
    replace_probs,
    training_prior,
    write_predictions,
)


def test_prediction_file_schema(tmp_path):
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    path = write_predictions(tmp_path / "dev.parquet", ["a", "7"], probs, gold=[2, 0])
    table = pq.read_table(path)
    assert table.schema.equals(PREDICTION_SCHEMA, check_metadata=False)
    assert table.column("label_id").to_pylist() == [2, 0]  # gold, for CAN and the leaderboard
    assert table.column("pred_id").to_pylist() == [1, 0]
    ids, back = read_predictions(path)
    assert ids == ["a", "7"] and np.array_equal(back, probs)
    with pytest.raises(ValueError, match="sum to 1"):
        write_predictions(tmp_path / "bad.parquet", ["a"], np.array([[0.5, 0.2, 0.1]]), gold=[0])
    table, labels, loaded = load_predictions(path, 3)
    assert labels.tolist() == [2, 0] and np.array_equal(loaded, probs) and table.num_rows == 2


def test_load_checks_the_contract_and_names_file_and_row(tmp_path):
    path = write_predictions(tmp_path / "dev.parquet", ["a", "b"], np.array([[0.5, 0.5], [1.0, 0.0]]), gold=[0, 1])
    with pytest.raises(PredictionError, match=r"dev.parquet: row 0 has 2 probabilities; the task has 3 labels"):
        load_predictions(path, 3)
    pq.write_table(pa.table({"id": ["a"], "label_id": pa.array([5], pa.int32()), "probs": [[0.5, 0.5]]}), tmp_path / "x.parquet")
    with pytest.raises(PredictionError, match=r"x.parquet: row 0 has label_id 5, outside \[0, 2\)"):
        load_predictions(tmp_path / "x.parquet", 2)
    pq.write_table(pa.table({"id": ["a"], "probs": [[0.5, 0.5]]}), tmp_path / "y.parquet")
    with pytest.raises(PredictionError, match=r"missing columns \['label_id'\]"):
        load_predictions(tmp_path / "y.parquet", 2)
    assert issubclass(PredictionError, UserError)  # a stage reports it as one error line


def test_replace_probs_keeps_the_schema_and_updates_pred_id(tmp_path):
    probs = np.array([[0.6, 0.4], [0.7, 0.3]])
    path = write_predictions(tmp_path / "dev.parquet", ["a", "b"], probs, gold=[1, 1])
    table, _, _ = load_predictions(path, 2)
    new = np.array([[0.4, 0.6], [0.7, 0.3]])
    out = pq.read_table(replace_probs(table, new, tmp_path / "can" / "dev.parquet"))
    assert out.schema.equals(table.schema) and out.column("id").to_pylist() == ["a", "b"]
    assert out.column("pred_id").to_pylist() == [1, 0] and np.array_equal(np.array(out.column("probs").to_pylist()), new)


def test_meta_and_training_prior(tmp_path):
    with pytest.raises(PredictionError, match="no meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(PredictionError, match="meta.json: not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"labels": ["a"]}), encoding="utf-8")
    with pytest.raises(PredictionError, match="labels must list the task's labels"):
        read_meta(tmp_path)
    prior, smoothed = training_prior({"train_label_counts": [3, 1]}, 2)
    assert prior.tolist() == [0.75, 0.25] and not smoothed
    prior, smoothed = training_prior({"train_label_counts": [2, 0]}, 2)
    assert prior.tolist() == [0.75, 0.25] and smoothed  # +1 (Laplace) when a class has no example
    with pytest.raises(PredictionError, match="must be numbers"):
        training_prior({"train_label_counts": ["3", 1]}, 2)
