"""pretrain@<backbone>: BERT masked-LM pretraining with whole-word masking on the encoded shards.

Reads params ``pretrain.model``, ``pretrain.training`` and ``pretrain.backbones.<backbone>``
(``tokenizer``, optional ``init_from``: a local checkpoint dir to continue from), the tokenizer
``models/tokenizers/<tok>/`` and shards ``data/encoded/<tok>/{train,heldout}-*.parquet``.
Writes ``models/pretrain/<backbone>/`` (safetensors + tokenizer), checkpoints in
``models/pretrain/<backbone>-checkpoints/`` (kept between runs), metrics
``reports/pretrain/<backbone>.json`` and the loss curves ``reports/pretrain/<backbone>_loss.json`` (training) and
``reports/pretrain/<backbone>_eval_loss.json`` (held out).

Resume (:mod:`zhnlp.train.resume`): when the checkpoint dir holds a usable ``checkpoint-N`` and
its signature (params, tokenizer and shard contents, world size, library versions, training code)
matches this run's, training continues from it; a damaged newest checkpoint is skipped for the
previous one; otherwise the dir is emptied and training starts afresh.

Runs as one process or under ``torchrun --standalone --nproc_per_node N -m stages.pretrain <b>``
(gloo on CPU). Only rank 0 opens the MLflow run and writes outputs; the Trainer's MLflow
callback on rank 0 logs into that same run.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from stages.common import ROOT, StageRun, fail, resolve, run, setup_env, stage_item, stage_params, write_json

setup_env()  # offline, quiet, project-local HF home: before transformers is imported

from zhnlp.config import from_params  # noqa: E402
from zhnlp.tasks.pretraining import (  # noqa: E402
    BackboneSpec,
    ModelSettings,
    PretrainTraining,
    build_trainer,
    final_evaluation,
    final_metrics,
    mlm_tokenizer,
    run_components,
    save_backbone,
)
from zhnlp.train.callbacks import eval_curve, loss_curve  # noqa: E402
from zhnlp.train.distributed import die_with_launcher, rank_and_world  # noqa: E402
from zhnlp.text.shards import shard_paths  # noqa: E402
from zhnlp.train.resume import resume_or_train  # noqa: E402
from zhnlp.progress import write as progress_write  # noqa: E402


def say(message: str) -> None:
    progress_write(f"[pretrain] {message}")  # above an open progress bar, not glued to it


def main() -> None:
    backbone = stage_item("pretrain", "pretrain.backbones")  # a pretrain.backbones entry, check_name'd
    die_with_launcher()
    stage, where = f"pretrain@{backbone}", f"pretrain.backbones.{backbone}"
    params = stage_params("pretrain.model", "pretrain.training", where)
    spec = from_params(BackboneSpec, params[where], where)
    from_params(ModelSettings, params["pretrain.model"], "pretrain.model")
    training = from_params(PretrainTraining, params["pretrain.training"], "pretrain.training")
    init_from = resolve(spec.init_from) if spec.init_from else None

    rank, world_size = rank_and_world()
    is_main = rank == 0
    tok_dir = ROOT / "models" / "tokenizers" / spec.tokenizer
    data_dir = ROOT / "data" / "encoded" / spec.tokenizer
    out_dir = ROOT / "models" / "pretrain" / backbone
    ckpt_dir = ROOT / "models" / "pretrain" / f"{backbone}-checkpoints"
    report_dir = ROOT / "reports" / "pretrain"
    train_paths, eval_paths = shard_paths(data_dir, "train"), shard_paths(data_dir, "heldout")
    if not tok_dir.is_dir():
        fail(f"no tokenizer at {tok_dir} (run tokenizer@{spec.tokenizer})")
    if not train_paths:
        fail(f"no train shards {data_dir}/train-*.parquet (run encode@{spec.tokenizer})")
    tokenizer = mlm_tokenizer(tok_dir)
    components = run_components(params, tok_dir, data_dir, train_paths + eval_paths, init_from, world_size)

    t0 = time.perf_counter()
    setup = build_trainer(
        tokenizer, params["pretrain.model"], training, train_paths, eval_paths, ckpt_dir,
        init_from=init_from, report_to=["mlflow"], run_name=stage,
    )
    info = setup.model_info
    if is_main:
        for note in setup.notes:
            say(note)
        if not info["capacity"].ok:
            capacity = info["capacity"]
            say(f"capacity check: hidden_size {capacity.hidden_size} < 8.33 ln({capacity.vocab_size}) = {capacity.floor:.1f}")

    with StageRun(stage, params, model=backbone, task="pretraining", backbone=backbone) if is_main else nullcontext() as tracker:
        # The Trainer's MLflow callback logs into this run.
        outcome = resume_or_train(setup.trainer, components, on_decision=lambda d: say(f"{stage}: {d.reason}"))
        decision = outcome.decision
        final_eval = final_evaluation(setup)  # every rank: evaluation is collective under DDP
        if not is_main:
            return
        if outcome.finished_before:
            say(f"{decision.checkpoint.name} already reached max_steps: writing the outputs from it")
        save_backbone(setup, out_dir, tok_dir)
        metrics = final_metrics(setup, final_eval)
        write_json(report_dir / f"{backbone}.json", metrics)
        write_json(report_dir / f"{backbone}_loss.json", loss_curve(setup.trainer.state.log_history))
        write_json(report_dir / f"{backbone}_eval_loss.json", eval_curve(setup.trainer.state.log_history))

        throughput = setup.throughput.summary()
        speed = {  # how this run went: MLflow only
            "resumed": int(decision.resumed),
            "resumed_from_step": decision.step,
            "tokens_per_second": throughput["tokens_per_second"],
            "mfu": throughput["mfu"],
            "train_tokens_this_run": throughput["train_tokens"],
            "train_seconds_this_run": throughput["train_seconds"],
            "stage_wall_seconds": time.perf_counter() - t0,
        }
        tracker.log_metrics({f"final.{k}": v for k, v in (metrics | speed).items() if v is not None})
        tracker.log_text(
            f"{outcome.reason}\ncheckpoint: {decision.checkpoint}\nsignature: {outcome.signature}\n"
            f"device: {info['device']} (peak bf16 FLOP/s: {info['peak_bf16_flops'] or 'unknown'})\n"
            + "".join(f"{n}\n" for n in setup.notes),
            "pretrain_run.txt",
        )
        tracker.log_artifact(report_dir / f"{backbone}_loss.json")
        tracker.log_artifact(report_dir / f"{backbone}_eval_loss.json")
        mfu = f", MFU {speed['mfu']:.1%}" if speed["mfu"] is not None else (", MFU unknown" if info["device"] != "cpu" else "")
        acc = f", masked-token accuracy {metrics['masked_token_accuracy']:.4f}" if "masked_token_accuracy" in metrics else ""
        tps = f"{speed['tokens_per_second']:,.0f} tokens/s" if speed["tokens_per_second"] else "no steps trained in this run"
        say(f"{stage}: {setup.trainer.state.global_step} steps, {tps}{mfu}{acc}")


if __name__ == "__main__":
    run(main)
