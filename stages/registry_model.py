"""The served form of a finetuned CLUE classifier: the MLflow pyfunc that ``stages/register.py`` logs from this file.

MLflow *models-from-code*: this file is copied into the model and run when the model loads (nothing is
pickled); the ``zhnlp`` package travels with it (``code_paths``). Artifacts: ``model``, the finetuned
folder (config.json, model.safetensors, tokenizer files, zhnlp_tokenizer.json), and ``serving``, a JSON
file with the label names and the recipe's ``max_seq_len``. Inputs are encoded exactly as in training
(:class:`zhnlp.tasks.classification.TransformerClassifier`: zero segment ids, jieba pieces for word
backbones, WSC span markers).

Input: a table of prepared CLUE rows (``text_a``; ``text_b`` for pairs; the ``span*`` columns for WSC).
Output: per row the predicted ``label`` (a name of the task's label list) and its probability ``score``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd


class ClueClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from zhnlp.tasks.classification import TransformerClassifier

        serving = json.loads(Path(context.artifacts["serving"]).read_text(encoding="utf-8"))
        self.clf = TransformerClassifier.from_pretrained(context.artifacts["model"], serving["labels"], max_seq_len=serving["max_seq_len"])

    def predict(self, context, model_input, params=None):
        from zhnlp.tasks.registry import rows_from_records

        rows = rows_from_records(pd.DataFrame(model_input).to_dict(orient="records"))
        probs = self.clf.predict_proba(rows)
        best = probs.argmax(axis=1)
        return pd.DataFrame({"label": [self.clf.labels[i] for i in best], "score": probs[range(len(best)), best]})


mlflow.models.set_model(ClueClassifier())
