"""pretrain@<backbone>: BERT masked-LM pretraining with whole-word masking on the encoded shards.

Reads params ``pretrain.model``, ``pretrain.training`` and ``pretrain.backbones.<backbone>``
(``tokenizer``, optional ``init_from``: a local checkpoint dir to continue from), the tokenizer
``models/tokenizers/<tok>/`` and shards ``data/encoded/<tok>/{train,heldout}-*.parquet``.
Writes ``models/pretrain/<backbone>/`` (safetensors + tokenizer), checkpoints in
``models/pretrain/<backbone>-checkpoints/`` (kept between runs), metrics
``reports/pretrain/<backbone>.json`` and the loss curve ``reports/pretrain/<backbone>_loss.json``.

Resume: when the checkpoint dir holds a complete ``checkpoint-N`` and its signature (params,
tokenizer and shard contents, world size, library versions, training code) matches this run's,
training continues from it (weights, optimizer, scheduler, RNG, data position); otherwise the
dir is emptied and training starts afresh.

Runs as one process or under ``torchrun --standalone --nproc_per_node N -m stages.pretrain <b>``
(gloo on CPU). Only rank 0 opens the MLflow run and writes outputs; the Trainer's MLflow
callback on rank 0 logs into that same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from stages.common import ROOT, StageRun, fail, resolve, setup_env, stage_params, write_json

setup_env()  # offline, quiet, project-local HF home: before transformers is imported

from zhnlp.pretraining import (  # noqa: E402
    build_trainer,
    code_identity,
    files_identity,
    load_tokenizer,
    loss_curve,
    prepare_checkpoint_dir,
    restore_finished_run,
    run_signature,
    shard_paths,
)


class _NoRun:
    """Stands in for StageRun on ranks other than 0: no MLflow run, nothing logged."""

    def __enter__(self) -> "_NoRun":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def log_metrics(self, *args, **kwargs) -> None:
        pass

    def log_text(self, *args, **kwargs) -> None:
        pass

    def log_artifact(self, *args, **kwargs) -> None:
        pass


def die_with_launcher() -> None:
    """Under torchrun every worker runs in a session of its own, so killing the launcher's process
    group (SIGKILL, or a dvc repro being killed) would leave the workers training on, orphaned.
    Ask Linux to SIGKILL this worker when its launcher dies."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before we asked
        os._exit(1)


def say(message: str) -> None:
    print(f"[pretrain] {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone")
    backbone = parser.parse_args().backbone
    die_with_launcher()
    stage = f"pretrain@{backbone}"
    keys = ("pretrain.model", "pretrain.training", f"pretrain.backbones.{backbone}")
    params = stage_params(*keys)
    spec = params[f"pretrain.backbones.{backbone}"] or {}
    if "tokenizer" not in spec:
        fail(f"pretrain.backbones.{backbone} needs a 'tokenizer' entry")
    tok_name = spec["tokenizer"]
    init_from = resolve(spec["init_from"]) if spec.get("init_from") else None
    training = params["pretrain.training"]

    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    is_main = rank == 0
    tok_dir = ROOT / "models" / "tokenizers" / tok_name
    data_dir = ROOT / "data" / "encoded" / tok_name
    out_dir = ROOT / "models" / "pretrain" / backbone
    ckpt_dir = ROOT / "models" / "pretrain" / f"{backbone}-checkpoints"
    report_dir = ROOT / "reports" / "pretrain"

    train_paths, eval_paths = shard_paths(data_dir, "train"), shard_paths(data_dir, "heldout")
    if not tok_dir.is_dir():
        fail(f"no tokenizer at {tok_dir} (run tokenizer@{tok_name})")
    if not train_paths:
        fail(f"no train shards {data_dir}/train-*.parquet (run encode@{tok_name})")
    tokenizer = load_tokenizer(tok_dir)

    import torch
    import transformers

    components = {
        "params": params,
        "tokenizer": files_identity(tok_dir),
        "shards": files_identity(data_dir, train_paths + eval_paths),
        "init_from": files_identity(init_from) if init_from else None,
        "world_size": world_size,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "code": code_identity(),
    }
    signature = run_signature(components)

    t0 = time.perf_counter()
    setup = build_trainer(
        tokenizer,
        params["pretrain.model"],
        training,
        train_paths,
        eval_paths,
        ckpt_dir,
        init_from=init_from,
        report_to=["mlflow"],
        run_name=stage,
    )
    trainer, info = setup.trainer, setup.model_info
    # Main process first: it decides and tidies the dir; the others then see the same state.
    with trainer.args.main_process_first(local=False, desc="checkpoint check"):
        decision = prepare_checkpoint_dir(ckpt_dir, signature, components, world_size=world_size, is_main=is_main)
    if is_main:
        say(f"{stage}: {decision.reason}" + (f" -> step {decision.step}" if decision.resumed else ""))
        for note in setup.notes:
            say(note)
        capacity = info["capacity"]
        if not capacity.ok:
            say(f"capacity check: hidden_size {capacity.hidden_size} < 8.33 ln({capacity.vocab_size}) = {capacity.floor:.1f}")

    with StageRun(stage, params) if is_main else _NoRun() as run:
        if decision.resumed and decision.step >= trainer.args.max_steps:
            # Killed after the last checkpoint but before the outputs were written.
            if is_main:
                say(f"{decision.checkpoint.name} already reached max_steps: writing the outputs from it")
            restore_finished_run(trainer, decision.checkpoint)
        else:
            trainer.train(resume_from_checkpoint=str(decision.checkpoint) if decision.resumed else None)
        final_eval = {}
        if setup.eval_dataset is not None:
            done = [e for e in trainer.state.log_history if "eval_masked_token_accuracy" in e and e.get("step") == trainer.state.global_step]
            final_eval = done[-1] if done else trainer.evaluate()
        if not is_main:
            return
        # Weights (safetensors), config and tokenizer only: no training_args.bin, whose absolute
        # paths would make the output differ from one checkout to the next.
        if out_dir.exists():
            shutil.rmtree(out_dir)
        trainer.model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
        marker = tok_dir / "zhnlp_tokenizer.json"  # the tokenizer mode (word mode pre-segments with jieba)
        if marker.is_file():
            shutil.copy2(marker, out_dir / marker.name)

        throughput = setup.throughput.summary()
        capacity = info["capacity"]
        history = trainer.state.log_history
        train_losses = [e["loss"] for e in history if "loss" in e]
        # The DVC metrics file holds what the run computed, not how fast: wall-clock figures
        # (tokens/s, MFU, seconds) go to MLflow only, so a rerun on the same machine rewrites it as is.
        metrics = {
            "global_step": trainer.state.global_step,
            "train_loss_last": train_losses[-1] if train_losses else None,
            "tokens_seen": trainer.state.num_input_tokens_seen,
            "parameters": info["parameters"],
            "vocab_size": info["vocab_size"],
            "capacity_ok": int(capacity.ok),
            "capacity_floor": round(capacity.floor, 2),
            "resumed": int(decision.resumed),
            "resumed_from_step": decision.step,
            "train_rows": len(setup.train_dataset),
        }
        if final_eval:
            metrics["masked_token_accuracy"] = final_eval["eval_masked_token_accuracy"]
            metrics["eval_loss"] = final_eval["eval_loss"]
            metrics["heldout_rows"] = len(setup.eval_dataset)
        metrics = {k: v for k, v in metrics.items() if v is not None}
        write_json(report_dir / f"{backbone}.json", metrics)
        curve = loss_curve(history)
        write_json(report_dir / f"{backbone}_loss.json", curve)

        speed = {
            "tokens_per_second": throughput["tokens_per_second"],
            "mfu": throughput["mfu"],
            "train_tokens_this_run": throughput["train_tokens"],
            "train_seconds_this_run": throughput["train_seconds"],
            "seconds": time.perf_counter() - t0,
        }
        run.log_metrics({f"final.{k}": v for k, v in (metrics | speed).items() if v is not None})
        run.log_text(
            f"{decision.reason}\ncheckpoint: {decision.checkpoint}\nsignature: {signature}\n"
            f"device: {info['device']} (peak bf16 FLOP/s: {info['peak_bf16_flops'] or 'unknown'})\n"
            + "".join(f"{n}\n" for n in setup.notes),
            "pretrain_run.txt",
        )
        run.log_artifact(report_dir / f"{backbone}_loss.json")
        mfu = f", MFU {speed['mfu']:.1%}" if speed["mfu"] is not None else (", MFU unknown" if info["device"] != "cpu" else "")
        acc = f", masked-token accuracy {metrics['masked_token_accuracy']:.4f}" if "masked_token_accuracy" in metrics else ""
        tps = f"{speed['tokens_per_second']:,.0f} tokens/s" if speed["tokens_per_second"] else "no steps trained in this run"
        say(f"{stage}: {trainer.state.global_step} steps, {tps}{mfu}{acc}")


if __name__ == "__main__":
    sys.exit(main())
