"""The served form of a finetuned model (CLUE, Ape210K, LCCC): the MLflow pyfunc that ``stages/register.py`` logs from this file.

MLflow *models-from-code*: this file is copied into the model and run when the model loads (nothing is
pickled); the ``zhnlp`` package travels with it (``code_paths``). Artifacts: ``model``, the finetuned
folder (config.json, model.safetensors, tokenizer files, zhnlp_tokenizer.json), and ``serving``, a JSON
file with the task's kind, the recipe's ``max_seq_len`` and Ape210K's ``num_beams``. What each kind reads and answers, encoded
exactly as in training, is :mod:`zhnlp.tasks.serving`: e.g. a classifier reads ``text_a`` (``text_b``,
the WSC spans) and answers ``label`` and ``score``; a NER model reads ``text`` and answers ``entities``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd


class ServedModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from zhnlp.tasks.serving import load_predictor

        serving = json.loads(Path(context.artifacts["serving"]).read_text(encoding="utf-8"))
        self.kind = serving["kind"]
        self.predictor = load_predictor(context.artifacts["model"], self.kind, serving["max_seq_len"], serving.get("num_beams", 1))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # the signature validates the columns
        from zhnlp.tasks.serving import predict, rows_from_records

        rows = rows_from_records(self.kind, pd.DataFrame(model_input).to_dict(orient="records"))
        return pd.DataFrame(predict(self.predictor, self.kind, rows))


mlflow.models.set_model(ServedModel())
