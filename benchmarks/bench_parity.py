"""Parity: zhnlp's CLUE finetune against a plain transformers ``Trainer`` script, on real FewCLUE TNEWS.

One checkpoint (a tiny random BERT over the real 21,128-entry Chinese vocab), one task
(FewCLUE tnews from ../shared/data: 1,185 train / 1,098 dev rows), one recipe (:data:`RECIPE`),
finetuned in this process on each side (``repeat`` times each, alternating; the best time counts):

* **ours**: the calls ``stages/finetune_clue.py`` makes: the rows prepared by the real reader
  (``zhnlp.data.clue``, as ``stages/prepare_clue.py`` writes them) loaded with ``TaskData``,
  ``ClassifierTraining.from_params``, ``TransformerClassifier.from_pretrained``, ``fit``,
  ``predict_proba`` on dev, ``evaluate_probs``. ``fit`` logs per epoch only, so the per-step
  training loss is read with a torch forward hook on the model (the loss it returns in train
  mode, one forward per step); zhnlp is not changed;
* **reference**: :mod:`benchmarks.reference_text_classification` (the transformers
  text-classification example's recipe) on the raw JSON lines, with ``--logging_steps 1``.

Both get the same values for every hyperparameter (the reference's ``TrainingArguments`` flags
are derived from the resolved :class:`ClassifierTraining`); ``--optim adamw_torch`` is passed
explicitly because transformers' default on torch >= 2.8 is ``adamw_torch_fused`` while zhnlp
uses ``adamw_torch`` (measured with the fused default: loss curves differ by up to 2.4e-7 over 3
epochs, same accuracies; with it set, they are identical). Printed: dev accuracy of each side and the gap in points, the per-step
loss curves' max absolute and mean relative difference, per-epoch dev accuracy of both, and the
wall time ratio ours / reference (each side's whole run: load, encode, train, evaluate).

``python -m benchmarks bench_parity`` (results in benchmarks/results/bench_parity.json) or
``python -m benchmarks.bench_parity [--epochs N] [--max-seq-len N]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import yaml

from benchmarks.common import ROOT, SHARED_DATA, format_table, write_results

TASK = "tnews"
# params.yaml finetune.recipes.tiny-cpu (lr 1e-3: clue-base's 2e-5 barely moves a random tiny model), without
# early stopping (the reference has none; patience 5 would not stop these 10 epochs either). ~15 s a side on 2 CPUs.
RECIPE = {
    "max_seq_len": 128,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "num_train_epochs": 10,
    "learning_rate": 1.0e-3,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
    "early_stopping_patience": None,
    "seed": 42,
}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "seed": 0}


# ---------------------------------------------------------------------------------------------
# inputs: checkpoint and prepared data


def checkpoint(out_dir: Path) -> Path:
    """A tiny random BERT (BertForMaskedLM, safetensors, tokenizer.json) over the real 21,128-entry Chinese vocab."""
    from benchmarks.checkpoint_layouts import build_checkpoint

    return build_checkpoint(out_dir, "tokenizer-json", source_dir=SHARED_DATA / "bert-chinese-layout", **TINY)


def prepare_task(clue_dir: Path, out_dir: Path, task: str = TASK) -> tuple[Path, dict[str, Path], list[str]]:
    """``data/prepared/clue/<task>/`` written as stages/prepare_clue.py writes it (its reader, schema, labels.json).

    Returns the folder, the raw split files (for the reference) and the label order.
    """
    from zhnlp.data.clue import CLUE_SCHEMA, ClueParams, iter_split, split_files
    from zhnlp.data.rows import ParquetSink, RowPolicy

    section = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["clue"]
    config = ClueParams.from_params(section | {"path": str(clue_dir)})
    spec = config.task(task)
    files = {s: p for s, p in split_files(clue_dir / spec.dir, spec, config.layouts).items() if s in ("train", "dev")}
    out_dir.mkdir(parents=True, exist_ok=True)
    with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
        for split, path in files.items():
            with ParquetSink(out_dir / f"{split}.parquet", CLUE_SCHEMA) as sink:
                for row in iter_split(path, spec, split, policy):
                    sink.write(row)
    (out_dir / "labels.json").write_text(json.dumps(list(spec.labels), ensure_ascii=False), encoding="utf-8")
    return out_dir, files, list(spec.labels)


# ---------------------------------------------------------------------------------------------
# the two sides


def run_ours(prepared: Path, ckpt: Path, training: dict, work_dir: Path) -> dict:
    """stages/finetune_clue.py's calls, plus the per-step training loss (a forward hook on the model).

    ``fit(work_dir=...)`` leaves only the best epoch's checkpoint there (``save_total_limit=1``), whose
    ``trainer_state.json`` logs per epoch (``logging_strategy="epoch"``) and stops at that epoch: no
    per-step losses, hence the hook. Its file list is returned as ``work_dir_files``.
    """
    from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
    from zhnlp.tasks.classification_data import TaskData, evaluate_probs

    t0 = time.perf_counter()
    data = TaskData.load(prepared)
    cfg = ClassifierTraining.from_params(training, None, TASK)
    clf = TransformerClassifier.from_pretrained(ckpt, data.labels, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    step_losses: list[float] = []

    def record(module, args, output):
        if module.training and getattr(output, "loss", None) is not None:
            step_losses.append(float(output.loss.detach()))

    epochs: list[dict] = []
    hook = clf.model.register_forward_hook(record)
    try:
        summary = clf.fit(data.splits["train"], data.splits["dev"], cfg, work_dir=work_dir, log_fn=lambda m, e: epochs.append({"epoch": e, **m}))
    finally:
        hook.remove()
    dev = data.splits["dev"]
    metrics = evaluate_probs(dev, clf.predict_proba(dev))
    seconds = time.perf_counter() - t0
    return {
        "labels": data.labels,
        "dev_accuracy": metrics["accuracy"],
        "step_losses": step_losses,
        "epoch_dev_accuracy": [e["epoch.dev.accuracy"] for e in epochs],
        "epoch_train_loss": [e["epoch.train.loss"] for e in epochs],  # fit logs per epoch: the epoch's mean step loss
        "train_seconds": summary.train_seconds,
        "best_epoch": summary.best_epoch,
        "work_dir_files": sorted(str(p.relative_to(work_dir)) for p in work_dir.rglob("*") if p.is_file()),
        "seconds": seconds,
    }


def reference_argv(training: dict, ckpt: Path, files: dict[str, Path], label_file: Path, out_dir: Path) -> list[str]:
    """The reference script's flags: every value from the same resolved ClassifierTraining."""
    import torch

    from zhnlp.tasks.classification import ClassifierTraining
    from zhnlp.train.arguments import cuda_bf16

    t = ClassifierTraining.from_params(training, None, TASK)
    values = {
        "model_name_or_path": ckpt, "train_file": files["train"], "validation_file": files["dev"],
        "label_file": label_file, "output_dir": out_dir, "max_seq_length": t.max_seq_len,
        "per_device_train_batch_size": t.per_device_train_batch_size,
        "per_device_eval_batch_size": t.per_device_eval_batch_size or t.per_device_train_batch_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps, "num_train_epochs": t.num_train_epochs,
        "max_steps": t.max_steps, "learning_rate": t.learning_rate, "weight_decay": t.weight_decay,
        "warmup_steps": t.warmup_ratio, "lr_scheduler_type": "linear", "optim": "adamw_torch",
        "adam_beta1": t.adam_beta1, "adam_beta2": t.adam_beta2, "adam_epsilon": t.adam_epsilon,
        "max_grad_norm": t.max_grad_norm, "seed": t.seed,
        "eval_strategy": "epoch", "save_strategy": "epoch", "logging_strategy": "steps", "logging_steps": 1,
        "metric_for_best_model": "accuracy", "save_total_limit": 1, "report_to": "none", "disable_tqdm": "true",
    }
    argv = [x for k, v in values.items() for x in (f"--{k}", str(v))]
    flags = ["do_train", "do_eval", "load_best_model_at_end"]
    flags += ["bf16"] if cuda_bf16() else []  # as zhnlp.train.arguments: bf16 where CUDA has it, else fp32
    flags += [] if torch.cuda.is_available() else ["use_cpu"]
    return argv + [f"--{f}" for f in flags]


def run_reference(argv: list[str]) -> dict:
    from benchmarks import reference_text_classification

    t0 = time.perf_counter()
    curves = reference_text_classification.main(argv)
    seconds = time.perf_counter() - t0
    losses = curves["train_loss"]
    epoch_of = [math.ceil(x["epoch"] - 1e-9) for x in losses]  # as zhnlp's fit: a step ending epoch 1 belongs to it
    return {
        "labels": curves["labels"],
        "dev_accuracy": curves["final_dev_accuracy"],
        "step_losses": [x["loss"] for x in losses],
        "steps": [x["step"] for x in losses],
        "epoch_dev_accuracy": [x["accuracy"] for x in curves["dev_accuracy"]],
        "epoch_train_loss": [_mean([x["loss"] for x, e in zip(losses, epoch_of) if e == epoch]) for epoch in sorted(set(epoch_of))],
        "train_seconds": curves["train_seconds"],
        "seconds": seconds,
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------
# the comparison


def compare(ours: dict, ref: dict) -> dict:
    a, b = ours["step_losses"], ref["step_losses"]
    n = min(len(a), len(b))
    diffs = [abs(x - y) for x, y in zip(a, b)]
    return {
        "labels_same_order": ours["labels"] == ref["labels"],
        "dev_accuracy_ours": ours["dev_accuracy"],
        "dev_accuracy_reference": ref["dev_accuracy"],
        "gap_points": 100 * (ours["dev_accuracy"] - ref["dev_accuracy"]),
        "steps_ours": len(a),
        "steps_reference": len(b),
        "loss_max_abs_diff": max(diffs) if diffs else None,
        "loss_mean_rel_diff": sum(abs(x - y) / abs(y) for x, y in zip(a[:n], b[:n])) / n if n else None,
        "first_step_over_1e-6": next((i + 1 for i, d in enumerate(diffs) if d > 1e-6), None),
        "epoch_dev_accuracy_ours": ours["epoch_dev_accuracy"],
        "epoch_dev_accuracy_reference": ref["epoch_dev_accuracy"],
        "epoch_train_loss_ours": ours["epoch_train_loss"],
        "epoch_train_loss_reference": ref["epoch_train_loss"],
        "seconds_ours": ours["seconds"],
        "seconds_reference": ref["seconds"],
        "time_ratio": ours["seconds"] / ref["seconds"] if ref["seconds"] else None,
        "train_seconds_ours": ours["train_seconds"],
        "train_seconds_reference": ref["train_seconds"],
    }


def parity(tmp: Path, training: dict = RECIPE, clue_dir: Path | None = None, repeat: int = 1) -> dict:
    """Build the checkpoint and prepared data under ``tmp``, run both sides, compare (plus each side's raw curves).

    With ``repeat`` > 1 the sides run alternately that many times each: the times are each side's best
    (a shared machine's load hits both alike), and ``repeats_identical`` says every run gave the same curves.
    """
    clue_dir = clue_dir or SHARED_DATA / "clue"
    ckpt = checkpoint(tmp / "checkpoint")
    prepared, files, labels = prepare_task(clue_dir, tmp / "prepared" / TASK)
    refs, ours_runs = [], []
    for i in range(repeat):
        refs.append(run_reference(reference_argv(training, ckpt, files, clue_dir / TASK / "labels.json", tmp / f"reference-{i}")))
        ours_runs.append(run_ours(prepared, ckpt, training, tmp / f"ours-{i}"))
    ref, ours = refs[0], ours_runs[0]
    for key in ("seconds", "train_seconds"):
        ref[key], ours[key] = min(r[key] for r in refs), min(r[key] for r in ours_runs)
    same = all(r["step_losses"] == ref["step_losses"] and r["dev_accuracy"] == ref["dev_accuracy"] for r in refs + ours_runs)
    out = compare(ours, ref) | {"recipe": dict(training), "params_labels": labels, "repeat": repeat, "repeats_identical": same}
    out["curves"] = {"ours": ours["step_losses"], "reference": ref["step_losses"]}
    out["ours_work_dir_files"] = ours["work_dir_files"]
    return out


def run(repeat: int, tmp: Path, training: dict = RECIPE) -> dict:
    """Both sides ``repeat`` times (best time of each; the curves must not change between runs)."""
    if not (SHARED_DATA / "clue" / TASK).is_dir():
        print(f"SKIP bench_parity: {SHARED_DATA / 'clue' / TASK} not found")
        return {"skipped": f"{SHARED_DATA / 'clue' / TASK} not found"}
    return parity(tmp, training, repeat=repeat)


def summary(r: dict) -> str:
    if "skipped" in r:
        return f"bench_parity: SKIPPED ({r['skipped']})"
    rec = r["recipe"]
    head = (
        f"Parity, FewCLUE tnews (1,185 train / 1,098 dev), tiny random BERT (real vocab): ours (zhnlp fit) vs "
        f"plain transformers Trainer; lr {rec['learning_rate']}, batch {rec['per_device_train_batch_size']}, "
        f"max len {rec['max_seq_len']}, {rec['num_train_epochs']} epochs, warmup {rec['warmup_ratio']}, wd {rec['weight_decay']}, seed {rec['seed']}"
    )
    rows = [
        ["dev accuracy", r["dev_accuracy_ours"], r["dev_accuracy_reference"], f"gap {r['gap_points']:+.2f} points"],
        ["logged steps", r["steps_ours"], r["steps_reference"],
         f"labels same order: {r['labels_same_order']}; {r['repeat']} runs a side identical: {r['repeats_identical']}"],
        ["loss curve", None, None, f"max |diff| {r['loss_max_abs_diff']:.2e}, mean rel diff {r['loss_mean_rel_diff']:.2e}"],
        ["epoch dev acc", _fmt(r["epoch_dev_accuracy_ours"]), _fmt(r["epoch_dev_accuracy_reference"]), ""],
        ["epoch train loss", _fmt(r["epoch_train_loss_ours"]), _fmt(r["epoch_train_loss_reference"]), ""],
        ["best wall s (whole side)", r["seconds_ours"], r["seconds_reference"], f"ratio ours/reference {r['time_ratio']:.2f}"],
        ["train s (fit / train)", r["train_seconds_ours"], r["train_seconds_reference"],
         "reference logs every step and saves optimizer state"],
    ]
    return head + "\n" + format_table(["", "ours", "reference", ""], rows)


def _fmt(xs: list[float]) -> str:
    return " ".join(f"{x:.4f}" for x in xs)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=RECIPE["num_train_epochs"])
    parser.add_argument("--max-seq-len", type=int, default=RECIPE["max_seq_len"])
    parser.add_argument("--repeat", type=int, default=1, help="runs a side (best time)")
    args = parser.parse_args()
    training = RECIPE | {"num_train_epochs": args.epochs, "max_seq_len": args.max_seq_len}
    with tempfile.TemporaryDirectory(prefix="zhnlp-bench-parity-") as tmp:
        results = run(args.repeat, Path(tmp), training)
    if "skipped" not in results:
        results = {"benchmark": "bench_parity"} | results
        print(f"results: {write_results('bench_parity', results)}")
    print(summary(results))


if __name__ == "__main__":
    main()
