"""CLUE classification with a transformer encoder: inputs, datasets, the Trainer setup, predictions.

Shaped like Hugging Face's ``run_glue.py``, for the prepared CLUE Parquet (:data:`zhnlp.data.clue.CLUE_SCHEMA`):

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

**Tokenizers** come from the checkpoint (:meth:`zhnlp.models.checkpoint.Checkpoint.load_tokenizer`):
``zhnlp_tokenizer.json`` through :func:`zhnlp.text.tokenization.load_tokenizer`, else a bare Hugging
Face ``tokenizer.json`` or ``vocab.txt`` (mode ``pretrained``; a WoBERT word ``vocab.txt``: ``word``). In ``word`` mode (WoBERT) each text is segmented with jieba by
``ZhTokenizer.pieces`` and the pieces go to the fast tokenizer with
``is_split_into_words=True`` — exactly how the pretraining data was encoded.

**Training** (:meth:`TransformerClassifier.fit`): ``AutoModelForSequenceClassification``
from a local directory (safetensors only, ``trust_remote_code=False``), the HF
``Trainer`` with dynamic padding (``DataCollatorWithPadding``), evaluation and a
checkpoint every epoch, ``load_best_model_at_end`` on dev accuracy,
``EarlyStoppingCallback(patience)``, ``save_total_limit=1`` in a temporary folder; the
``TrainingArguments`` come from :func:`zhnlp.train.arguments.training_arguments`, as for
every other training stage (:class:`ClassifierTraining` is a strict ``finetune.recipes.<name>``).
The seed is set before the classification head is created and again by the Trainer, so a
fixed seed gives identical results on CPU.

**Predictions** are full probability vectors (float64, labels.json order); see
:mod:`zhnlp.tasks.predictions` for the file schema shared with the TF-IDF baseline.

torch and transformers are imported inside the functions that need them, so the input
building, metrics and prediction-file helpers (used by the TF-IDF baseline) stay light.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zhnlp.config import ConfigError, from_params, require_mapping
from zhnlp.tasks.classification_data import SPAN1_MARKERS, SPAN2_MARKERS, classification_metrics, softmax, split_inputs
from zhnlp.train.arguments import TrainingSettings
from zhnlp.train.epochs import FitSummary

# ---------------------------------------------------------------------------------------------
# training config


@dataclass(frozen=True, kw_only=True)
class ClassifierTraining(TrainingSettings):
    """A finetune recipe (``finetune.recipes.<name>``) with the task's ``finetune.overrides.<task>`` applied (strict): the shared keys plus these.

    Evaluation and checkpoints follow the epochs; the best dev-accuracy epoch is kept.
    """

    max_seq_len: int = 128
    per_device_eval_batch_size: int | None = 64
    num_train_epochs: float = 10
    learning_rate: float = 5e-5
    early_stopping_patience: int | None = 3  # None or 0: no early stopping
    full_determinism: bool = False  # also torch.use_deterministic_algorithms (GPU); CPU is exact without it
    doc_stride: int | None = None  # span extraction: tokens shared by consecutive passage windows (None: max_seq_len // 4)

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.max_seq_len < 3:
            raise ConfigError(f"{where}.max_seq_len: {self.max_seq_len!r} is not allowed; use a number >= 3")
        if self.doc_stride is not None and not 0 <= self.doc_stride < self.max_seq_len // 2:
            raise ConfigError(f"{where}.doc_stride: {self.doc_stride!r} is not allowed; use 0 <= doc_stride < max_seq_len / 2, or null")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 0:
            raise ConfigError(f"{where}.early_stopping_patience: {self.early_stopping_patience!r} is not allowed; use a number >= 0 or null")

    @classmethod
    def from_params(
        cls, training: Mapping[str, Any], override: Mapping[str, Any] | None = None, task: str = "<task>", where: str = "finetune.recipes.<recipe>"
    ) -> "ClassifierTraining":
        """A recipe (``where``, e.g. ``finetune.recipes.clue-base``) checked on its own, then with the
        recipe's own ``tasks.<task>`` changes (settings that belong to this recipe only, such as more
        epochs for a tiny model on a small task), then ``finetune.overrides.<task>`` (every recipe) on
        top; errors name the right key."""
        training = dict(require_mapping(where, training))
        per_task = require_mapping(f"{where}.tasks", training.pop("tasks", None) or {})
        values = dict(training)
        from_params(cls, values, where)
        for key, change in ((f"{where}.tasks.{task}", per_task.get(task)), (f"finetune.overrides.{task}", override)):
            if change:
                values |= dict(require_mapping(key, change))
                from_params(cls, values, key)
        return from_params(cls, values, where)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# the classifier


class TransformerClassifier:
    """A sequence classifier over a local backbone directory. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, labels: Sequence[str], max_seq_len: int = 128, zero_segments: bool = True):
        self.model = model
        self.tokenizer = tokenizer  # a zhnlp.text.tokenization.ZhTokenizer
        self.labels = list(labels)
        self.max_seq_len = max_seq_len
        self.zero_segments = zero_segments
        self.source_dir: Path | None = None

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, labels: Sequence[str], *, seed: int = 42, max_seq_len: int = 128, zero_segments: bool = True
    ) -> "TransformerClassifier":
        """Any local BERT-style checkpoint (e.g. a saved BertForMaskedLM) with a new classification head.

        The folder is resolved by :func:`zhnlp.models.checkpoint.inspect_checkpoint` (its tokenizer;
        its config, with the model type inferred from the weights when config.json has none). The seed is set first, so the freshly initialised head (and pooler) is reproducible.
        """
        from transformers import AutoModelForSequenceClassification, set_seed

        from zhnlp.models.checkpoint import inspect_checkpoint

        model_dir = Path(model_dir)
        checkpoint = inspect_checkpoint(model_dir)  # model_type inferred when config.json has none; safetensors only
        tokenizer = checkpoint.load_tokenizer()
        set_seed(seed)
        labels = [str(x) for x in labels]
        config = copy.deepcopy(checkpoint.config)
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {lab: i for i, lab in enumerate(labels)}
        config.problem_type = "single_label_classification"
        model = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            config=config,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=True,
        )
        clf = cls(model, tokenizer, labels, max_seq_len=max_seq_len, zero_segments=zero_segments)
        clf.source_dir = model_dir
        return clf

    # -- encoding

    def encode(self, rows: Sequence[Mapping[str, Any]], with_labels: bool = True) -> list[dict]:
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
        return items

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
        cfg: ClassifierTraining,
        *,
        work_dir: str | Path | None = None,
        log_fn: Callable[[dict[str, float], int], None] | None = None,
    ) -> FitSummary:
        """Train on ``train_rows``, evaluate on ``dev_rows`` each epoch, keep the best epoch's weights.

        ``log_fn(metrics, epoch)`` receives per-epoch ``epoch.train.loss``,
        ``epoch.dev.accuracy`` and ``epoch.dev.macro_f1`` (the stage passes MLflow logging).
        Checkpoints go to ``work_dir`` (a temporary folder by default, removed afterwards).
        """
        from zhnlp.train.epochs import fit_by_epoch

        self.max_seq_len = cfg.max_seq_len
        if any(r.get("span1_text") is not None for r in train_rows):
            self.add_missing_tokens([*SPAN1_MARKERS, *SPAN2_MARKERS])

        def compute_metrics(pred) -> dict[str, float]:
            return classification_metrics(pred.label_ids, np.asarray(pred.predictions).argmax(axis=1))

        self.model, summary = fit_by_epoch(
            self.model,
            train_dataset=self.encode(train_rows),
            dev_dataset=self.encode(dev_rows),
            collator=self._collator(),
            tokenizer=self.tokenizer.hf,
            cfg=cfg,
            metric="accuracy",
            compute_metrics=compute_metrics,
            early_stopping_patience=cfg.early_stopping_patience,
            full_determinism=cfg.full_determinism,
            log_fn=log_fn,
            work_dir=work_dir,
        )
        return summary

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
        self.tokenizer.save(out)  # the tokenizer files and zhnlp_tokenizer.json (zhnlp.text.tokenization.save_tokenizer)
        return out
