"""CLUE classification with a transformer encoder: inputs, datasets, the Trainer setup, predictions.

Shaped like Hugging Face's ``run_glue.py``, for the prepared CLUE Parquet (:data:`zhnlp.clue.CLUE_SCHEMA`):

**Inputs** follow the published CLUE baselines (bojone/CLUE-bert4keras, techniques §5):

- single sentence (TNEWS, IFLYTEK): ``[CLS] text_a [SEP]``;
- pairs (AFQMC, OCNLI, CMNLI) and CSL (keywords, already joined with ``；`` in ``text_a``,
  then the abstract in ``text_b``): ``[CLS] text_a [SEP] text_b [SEP]``, truncated
  longest-first to ``max_seq_len`` by the tokenizer's own pair encoding;
- WSC: one sequence, the text with span1 (the candidate) wrapped as ``_span1_`` and
  span2 (the pronoun) as ``[span2]`` (:func:`mark_spans`; markers are inserted at the
  original offsets, right to left, so the prep-validated offsets stay valid).

**Segment ids are all 0** (``zero_segments=True``), as in the CLUE baselines: our own
backbones are pretrained on single sequences (type id 0 only), and RoBERTa-style
Chinese checkpoints have no NSP. The separator is still the tokenizer's pair template
([SEP] between the texts). Pass ``zero_segments=False`` to keep the tokenizer's 0/1 ids.

**Tokenizers** are loaded with :func:`zhnlp.tokenization.load_tokenizer`, which reads
``zhnlp_tokenizer.json`` (any bare Hugging Face checkpoint counts as mode
``pretrained``). In ``word`` mode (WoBERT) each text is segmented with jieba by
``ZhTokenizer.pieces`` and the pieces go to the fast tokenizer with
``is_split_into_words=True`` — exactly how the pretraining data was encoded.

**Training** (:meth:`TransformerClassifier.fit`): ``AutoModelForSequenceClassification``
from a local directory (safetensors only, ``trust_remote_code=False``), the HF
``Trainer`` with dynamic padding (``DataCollatorWithPadding``), evaluation and a
checkpoint every epoch, ``load_best_model_at_end`` on dev accuracy,
``EarlyStoppingCallback(patience)``, ``save_total_limit=1`` in a temporary folder. The
seed is set before the classification head is created and again by the Trainer, so a
fixed seed gives identical results on CPU.

**Predictions** are full probability vectors (float64, labels.json order); see
:func:`write_predictions` for the file schema shared with the TF-IDF baseline.

torch and transformers are imported inside the functions that need them, so the input
building, metrics and prediction-file helpers (used by the TF-IDF baseline) stay light.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SPLITS = ("train", "dev", "test_public", "test")
LABELLED_EVAL_SPLITS = ("dev", "test_public")
SPAN1_MARKERS = ("_", "_")  # the candidate noun phrase: _x_
SPAN2_MARKERS = ("[", "]")  # the pronoun: [y]

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("label_id", pa.int32(), nullable=False),  # gold label
        pa.field("pred_id", pa.int32(), nullable=False),  # argmax of probs
        pa.field("probs", pa.list_(pa.float64()), nullable=False),  # over labels.json, sums to 1
    ]
)


# ---------------------------------------------------------------------------------------------
# inputs


def mark_spans(text: str, spans: Sequence[tuple[int, str, tuple[str, str]]]) -> str:
    """Wrap each ``(index, span_text, (open, close))`` span of ``text`` in its markers.

    Markers are placed at the original offsets (inserting right to left), so spans may
    even touch or nest. A span that is not at its index raises ValueError.
    """
    inserts: dict[int, tuple[list[str], list[str]]] = {}
    for index, span, (open_, close) in spans:
        if index < 0 or text[index : index + len(span)] != span:
            raise ValueError(f"span {span!r} is not at index {index} of {text!r}")
        inserts.setdefault(index, ([], []))[1].append(open_)
        inserts.setdefault(index + len(span), ([], []))[0].insert(0, close)
    out = text
    for pos in sorted(inserts, reverse=True):  # right to left: earlier offsets stay valid
        closes, opens = inserts[pos]
        out = out[:pos] + "".join(closes) + "".join(opens) + out[pos:]
    return out


def wsc_text(row: Mapping[str, Any]) -> str:
    """The WSC input: span1 as ``_x_`` and the pronoun (span2) as ``[y]``, in place."""
    return mark_spans(
        row["text_a"],
        [
            (row["span1_index"], row["span1_text"], SPAN1_MARKERS),
            (row["span2_index"], row["span2_text"], SPAN2_MARKERS),
        ],
    )


def input_texts(row: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(first, second)`` texts of one prepared row; second is None for single-sequence tasks."""
    if row.get("span1_text") is not None:
        return wsc_text(row), None
    return row["text_a"], row.get("text_b")


def split_inputs(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str] | None]:
    """Firsts and seconds (None for a single-sequence task) of a list of rows, checked for consistency."""
    pairs = [input_texts(r) for r in rows]
    firsts = [a for a, _ in pairs]
    seconds = [b for _, b in pairs]
    has_second = [b is not None for b in seconds]
    if any(has_second) and not all(has_second):
        raise ValueError("rows mix single texts and text pairs (text_b is null in some rows only)")
    return firsts, (seconds if rows and all(has_second) else None)


# ---------------------------------------------------------------------------------------------
# prepared data, metrics, prediction files


@dataclass
class TaskData:
    """A prepared CLUE task: its labels and the splits present (rows as dicts)."""

    labels: list[str]
    splits: dict[str, list[dict]]

    @classmethod
    def load(cls, task_dir: str | Path) -> "TaskData":
        task_dir = Path(task_dir)
        labels_path = task_dir / "labels.json"
        if not labels_path.is_file():
            raise FileNotFoundError(f"{labels_path} not found (run prepare_clue first)")
        labels = [str(x) for x in json.loads(labels_path.read_text(encoding="utf-8"))]
        splits = {s: read_split(task_dir / f"{s}.parquet") for s in SPLITS if (task_dir / f"{s}.parquet").is_file()}
        for required in ("train", "dev"):
            if required not in splits:
                raise FileNotFoundError(f"{task_dir / (required + '.parquet')} not found")
        return cls(labels, splits)

    def label_counts(self, split: str = "train") -> list[int]:
        """Rows per label (labels.json order) in a labelled split: the prior for CAN."""
        return label_counts(self.splits[split], len(self.labels))


def read_split(path: str | Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def label_ids(rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    ids = [r["label_id"] for r in rows]
    if any(i is None for i in ids):
        raise ValueError("rows without label_id cannot be used for training or evaluation")
    return np.asarray(ids, dtype=np.int64)


def label_counts(rows: Sequence[Mapping[str, Any]], num_labels: int) -> list[int]:
    return np.bincount(label_ids(rows), minlength=num_labels).astype(int).tolist()


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (over the labels present in ``y_true`` or ``y_pred``, as sklearn does)."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan")}
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def evaluate_probs(rows: Sequence[Mapping[str, Any]], probs: np.ndarray) -> dict[str, float]:
    """``{"accuracy", "macro_f1", "rows"}`` of probability rows against the rows' label_id."""
    return classification_metrics(label_ids(rows), np.asarray(probs).argmax(axis=1)) | {"rows": len(rows)}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predictions_table(ids: Sequence[str], probs: np.ndarray, gold: Sequence[int]) -> pa.Table:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(ids) != probs.shape[0] or len(gold) != len(ids):
        raise ValueError(f"{len(ids)} ids and {len(gold)} gold labels but probs of shape {probs.shape}")
    if len(ids) and not np.allclose(probs.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("probability rows must sum to 1")
    return pa.Table.from_pydict(
        {
            "id": [str(i) for i in ids],
            "label_id": np.asarray(gold, dtype=np.int32),
            "pred_id": probs.argmax(axis=1).astype(np.int32) if len(ids) else np.zeros(0, np.int32),
            "probs": [row.tolist() for row in probs],
        },
        schema=PREDICTION_SCHEMA,
    )


def write_predictions(path: str | Path, ids: Sequence[str], probs: np.ndarray, gold: Sequence[int]) -> Path:
    """One labelled split's predictions: ``id``, gold ``label_id``, ``pred_id`` (argmax) and ``probs``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(predictions_table(ids, probs, gold), path)
    return path


def read_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    """``(ids, probs)`` of a predictions file; probs as an (n, labels) float64 array."""
    table = pq.read_table(path, schema=PREDICTION_SCHEMA)
    probs = table.column("probs").to_pylist()
    return table.column("id").to_pylist(), np.asarray(probs, dtype=np.float64).reshape(len(probs), -1)


# ---------------------------------------------------------------------------------------------
# training config


@dataclass(frozen=True)
class TrainConfig:
    """``finetune.training`` with the task's ``finetune.overrides`` applied."""

    max_seq_len: int = 128
    per_device_train_batch_size: int = 32
    per_device_eval_batch_size: int = 64
    num_train_epochs: float = 10
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    early_stopping_patience: int | None = 3  # None or 0: no early stopping
    seed: int = 42
    full_determinism: bool = False  # also torch.use_deterministic_algorithms (GPU); CPU is exact without it

    @classmethod
    def from_params(cls, training: Mapping[str, Any], override: Mapping[str, Any] | None = None) -> "TrainConfig":
        merged = dict(training) | dict(override or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ValueError(f"unknown finetune training keys {unknown}; known: {sorted(known)}")
        cfg = cls(**merged)
        if not 0 <= cfg.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitSummary:
    """What happened in :meth:`TransformerClassifier.fit`: one history entry per evaluated epoch."""

    best_epoch: int
    epochs_run: int
    best_dev_accuracy: float
    train_seconds: float
    history: list[dict[str, float]]

    def metrics(self) -> dict[str, float | int]:
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "best_dev_accuracy": self.best_dev_accuracy,
            "seconds": round(self.train_seconds, 2),
        }


# ---------------------------------------------------------------------------------------------
# the classifier


class _Features:
    """A map-style dataset of encoded rows (dicts of lists), as the Trainer's DataLoader wants."""

    def __init__(self, items: list[dict[str, list[int] | int]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class TransformerClassifier:
    """A sequence classifier over a local backbone directory. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, labels: Sequence[str], max_seq_len: int = 128, zero_segments: bool = True):
        self.model = model
        self.tokenizer = tokenizer  # a zhnlp.tokenization.ZhTokenizer
        self.labels = list(labels)
        self.max_seq_len = max_seq_len
        self.zero_segments = zero_segments
        self.source_dir: Path | None = None

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, labels: Sequence[str], *, seed: int = 42, max_seq_len: int = 128, zero_segments: bool = True
    ) -> "TransformerClassifier":
        """Any local BERT-style checkpoint (e.g. a saved BertForMaskedLM) with a new classification head.

        The seed is set first, so the freshly initialised head (and pooler) is reproducible.
        """
        from transformers import AutoModelForSequenceClassification, set_seed

        from zhnlp.tokenization import load_tokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is not a model directory (no config.json)")
        tokenizer = load_tokenizer(model_dir)
        set_seed(seed)
        labels = [str(x) for x in labels]
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)},
            problem_type="single_label_classification",
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
        )
        clf = cls(model, tokenizer, labels, max_seq_len=max_seq_len, zero_segments=zero_segments)
        clf.source_dir = model_dir
        return clf

    # -- encoding

    def encode(self, rows: Sequence[Mapping[str, Any]], with_labels: bool = True) -> _Features:
        """Token ids (truncated to ``max_seq_len``), attention mask, segment ids and labels of rows."""
        firsts, seconds = split_inputs(rows)
        hf = self.tokenizer.hf
        limit = min(self.max_seq_len, getattr(self.model.config, "max_position_embeddings", None) or self.max_seq_len)
        kwargs: dict[str, Any] = {"truncation": True, "max_length": limit}
        if self.tokenizer.mode == "word":  # WoBERT: jieba pieces, then the fast tokenizer on pre-split words
            firsts = [self.tokenizer.pieces(t)[0] for t in firsts]
            seconds = [self.tokenizer.pieces(t)[0] for t in seconds] if seconds is not None else None
            kwargs["is_split_into_words"] = True
        enc = hf(firsts, seconds, **kwargs) if firsts else {"input_ids": []}
        items = []
        for i in range(len(firsts)):
            item = {k: list(v[i]) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            if self.zero_segments and "token_type_ids" in item:
                item["token_type_ids"] = [0] * len(item["token_type_ids"])
            if with_labels and rows[i].get("label_id") is not None:
                item["labels"] = int(rows[i]["label_id"])
            items.append(item)
        return _Features(items)

    def add_missing_tokens(self, tokens: Sequence[str]) -> list[str]:
        """Add the ``tokens`` the tokenizer maps to [UNK] (e.g. WSC's ``_`` and ``[ ]`` markers in a vocab
        trained on text without them) and grow the embedding matrix; the new rows are learnt in finetuning."""
        hf = self.tokenizer.hf
        missing = [t for t in dict.fromkeys(tokens) if hf.unk_token and self.tokenizer.tokenize(t) == [hf.unk_token]]
        if missing:
            hf.add_tokens(missing)
            self.model.resize_token_embeddings(len(hf))
        return missing

    def _collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer.hf, pad_to_multiple_of=None)

    # -- training

    def fit(
        self,
        train_rows: Sequence[Mapping[str, Any]],
        dev_rows: Sequence[Mapping[str, Any]],
        cfg: TrainConfig,
        *,
        work_dir: str | Path | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
    ) -> FitSummary:
        """Train on ``train_rows``, evaluate on ``dev_rows`` each epoch, keep the best epoch's weights.

        ``log_fn(metrics, epoch)`` receives per-epoch ``epoch.train.loss``,
        ``epoch.dev.accuracy`` and ``epoch.dev.macro_f1`` (the stage passes MLflow logging).
        Checkpoints go to ``work_dir`` (a temporary folder by default, removed afterwards).
        """
        import torch
        from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments

        self.max_seq_len = cfg.max_seq_len
        if any(r.get("span1_text") is not None for r in train_rows):
            self.add_missing_tokens([*SPAN1_MARKERS, *SPAN2_MARKERS])
        train_ds, dev_ds = self.encode(train_rows), self.encode(dev_rows)
        history: dict[int, dict[str, float]] = {}

        class _EpochLog(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or state.epoch is None:
                    return
                epoch = int(math.ceil(state.epoch - 1e-9))
                entry = history.setdefault(epoch, {"epoch": epoch})
                if "loss" in logs:
                    entry["train.loss"] = float(logs["loss"])
                if "eval_accuracy" in logs:
                    entry["dev.accuracy"] = float(logs["eval_accuracy"])
                    entry["dev.macro_f1"] = float(logs["eval_macro_f1"])
                    entry["step"] = state.global_step
                    if log_fn:
                        log_fn({f"epoch.{k}": v for k, v in entry.items() if k not in ("epoch", "step")}, epoch)

        def compute_metrics(pred) -> dict[str, float]:
            return classification_metrics(pred.label_ids, np.asarray(pred.predictions).argmax(axis=1))

        with tempfile.TemporaryDirectory(prefix="zhnlp-finetune-") as tmp:
            args = TrainingArguments(
                output_dir=str(work_dir or tmp),
                per_device_train_batch_size=cfg.per_device_train_batch_size,
                per_device_eval_batch_size=cfg.per_device_eval_batch_size,
                num_train_epochs=cfg.num_train_epochs,
                learning_rate=cfg.learning_rate,
                weight_decay=cfg.weight_decay,
                warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps in transformers 5
                eval_strategy="epoch",
                save_strategy="epoch",
                logging_strategy="epoch",
                save_total_limit=1,
                save_only_model=True,
                load_best_model_at_end=True,
                metric_for_best_model="accuracy",
                greater_is_better=True,
                seed=cfg.seed,
                data_seed=cfg.seed,
                full_determinism=cfg.full_determinism,
                report_to=[],
                disable_tqdm=True,
                dataloader_num_workers=0,
                dataloader_pin_memory=torch.cuda.is_available(),
            )
            callbacks: list = [_EpochLog()]
            if cfg.early_stopping_patience:
                callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
            trainer = Trainer(
                model=self.model,
                args=args,
                data_collator=self._collator(),
                train_dataset=train_ds,
                eval_dataset=dev_ds,
                processing_class=self.tokenizer.hf,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
            )
            t0 = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t0
            self.model = trainer.model
            best_step = trainer.state.best_global_step
        evaluated = [h for _, h in sorted(history.items()) if "dev.accuracy" in h]
        if not evaluated:
            raise RuntimeError("training ran no evaluation (empty train set?)")
        best = next((h for h in evaluated if h.get("step") == best_step), None)
        if best is None:  # should not happen; fall back to the first best accuracy
            best = max(evaluated, key=lambda h: h["dev.accuracy"])
        return FitSummary(
            best_epoch=int(best["epoch"]),
            epochs_run=len(evaluated),
            best_dev_accuracy=float(best["dev.accuracy"]),
            train_seconds=seconds,
            history=evaluated,
        )

    # -- inference

    def predict_proba(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 64) -> np.ndarray:
        """(rows, labels) float64 probabilities, in labels.json order."""
        import torch

        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float64)
        features = self.encode(rows, with_labels=False)
        collate = self._collator()
        device = next(self.model.parameters()).device
        self.model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(features), batch_size):
                batch = collate([features[i] for i in range(start, min(start + batch_size, len(features)))])
                batch = {k: v.to(device) for k, v in batch.items()}
                out.append(self.model(**batch).logits.double().cpu().numpy())
        return softmax(np.concatenate(out))

    def save(self, out_dir: str | Path) -> Path:
        """``save_pretrained`` (safetensors) of the model and tokenizer, plus ``zhnlp_tokenizer.json``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.hf.save_pretrained(str(out))
        meta = dict(self.tokenizer.meta) or {"mode": self.tokenizer.mode}
        (out / "zhnlp_tokenizer.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out
