"""A plain transformers text-classification finetune: the reference zhnlp's CLUE stage is compared against.

Written in the style of transformers' ``examples/pytorch/text-classification/run_classification.py``
(our own code, not a copy): dataclass arguments parsed by ``HfArgumentParser`` together with
``TrainingArguments``, ``AutoTokenizer`` / ``AutoModelForSequenceClassification``, truncation to
``max_seq_length``, dynamic padding with ``DataCollatorWithPadding``, a ``Trainer`` that evaluates
every epoch and keeps the best dev accuracy (``--load_best_model_at_end --metric_for_best_model accuracy``).

Data: JSON lines (``{"sentence": ..., "label": ...}``, CLUE's format). The example reads them with
``datasets.load_dataset("json", ...)``; ``datasets`` is not installed in this project, so this script
reads the lines with the standard library into a small ``torch.utils.data.Dataset`` of encoded rows.

Labels are mapped in the order of ``--label_file`` (CLUE's ``labels.json``: JSON lines with a
``label`` field, or one JSON array) when given, else in sorted order of the train labels (as the example).

Besides the model and ``all_results.json`` it writes ``curves.json`` in ``--output_dir``: the
training loss at every logged step (``--logging_steps 1`` for per-step), dev accuracy per epoch,
the final dev accuracy and the training wall time.

``python -m benchmarks.reference_text_classification --model_name_or_path CKPT --train_file train.json
--validation_file dev.json --label_file labels.json --output_dir OUT --do_train --do_eval
--eval_strategy epoch --save_strategy epoch --load_best_model_at_end --metric_for_best_model accuracy ...``
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    Trainer,
    TrainingArguments,
    set_seed,
)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "a local checkpoint directory (safetensors weights)"})


@dataclass
class DataTrainingArguments:
    train_file: str = field(metadata={"help": "JSON lines training file"})
    validation_file: str = field(metadata={"help": "JSON lines dev file"})
    label_file: str | None = field(default=None, metadata={"help": "labels.json: the label id order (default: sorted train labels)"})
    text_column: str = field(default="sentence", metadata={"help": "the text field of each line"})
    label_column: str = field(default="label", metadata={"help": "the label field of each line"})
    max_seq_length: int = field(default=128, metadata={"help": "longer inputs are truncated to this many tokens"})


class EncodedRows(torch.utils.data.Dataset):
    """Tokenized rows (dicts of lists) for the Trainer's DataLoader."""

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def read_json_lines(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_labels(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8").strip()
    if text.startswith("["):
        return [str(x) for x in json.loads(text)]
    return [str(json.loads(line)["label"]) for line in text.splitlines() if line.strip()]


def encode(rows: list[dict], tokenizer, data_args: DataTrainingArguments, label_to_id: dict[str, int], max_length: int) -> EncodedRows:
    enc = tokenizer([r[data_args.text_column] for r in rows], truncation=True, max_length=max_length)
    items = []
    for i, row in enumerate(rows):
        item = {k: enc[k][i] for k in enc.keys()}
        item["labels"] = label_to_id[str(row[data_args.label_column])]
        items.append(item)
    return EncodedRows(items)


def compute_metrics(pred) -> dict[str, float]:
    return {"accuracy": float((np.asarray(pred.predictions).argmax(axis=1) == pred.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)

    set_seed(training_args.seed)  # before the model: the new classification head is reproducible

    train_rows = read_json_lines(data_args.train_file)
    dev_rows = read_json_lines(data_args.validation_file)
    if data_args.label_file:
        label_list = read_labels(data_args.label_file)
    else:
        label_list = sorted({str(r[data_args.label_column]) for r in train_rows})
    label_to_id = {label: i for i, label in enumerate(label_list)}

    config = AutoConfig.from_pretrained(model_args.model_name_or_path, num_labels=len(label_list), local_files_only=True)
    config.problem_type = "single_label_classification"
    config.label2id = dict(label_to_id)
    config.id2label = {i: label for label, i in label_to_id.items()}
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
    )

    max_length = min(data_args.max_seq_length, tokenizer.model_max_length)
    train_ds = encode(train_rows, tokenizer, data_args, label_to_id, max_length)
    dev_ds = encode(dev_rows, tokenizer, data_args, label_to_id, max_length)

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=dev_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )

    results: dict = {"labels": label_list}
    history: list[dict] = []
    if training_args.do_train:
        t0 = time.perf_counter()
        train_result = trainer.train()
        results["train_seconds"] = time.perf_counter() - t0
        trainer.save_model()
        trainer.save_state()
        history = list(trainer.state.log_history)  # the training run's logs (the final evaluate below adds one more)
        results["train_metrics"] = train_result.metrics
    if training_args.do_eval:
        metrics = trainer.evaluate(eval_dataset=dev_ds)
        results["eval_accuracy"] = metrics["eval_accuracy"]
        results["eval_loss"] = metrics["eval_loss"]

    curves = {
        "labels": label_list,
        "train_loss": [{"step": h["step"], "epoch": h["epoch"], "loss": h["loss"]} for h in history if "loss" in h],
        "dev_accuracy": [{"step": h["step"], "epoch": h["epoch"], "accuracy": h["eval_accuracy"]} for h in history if "eval_accuracy" in h],
        "final_dev_accuracy": results.get("eval_accuracy"),
        "train_seconds": results.get("train_seconds"),
    }
    if training_args.should_save:
        out = Path(training_args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "all_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (out / "curves.json").write_text(json.dumps(curves, indent=2) + "\n", encoding="utf-8")
    return curves


if __name__ == "__main__":
    main(sys.argv[1:])
