"""GPU check (`make gpu-check`): the CUDA paths that CPU CI never runs, with their figures.

1. **Pretraining, bf16.** A BERT-base-sized masked LM (hidden 768, 12 layers, 12 heads; the real
   21,128-entry Chinese BERT vocab when ``--vocab`` is given, else a synthetic one of that size) on
   synthetic token shards, trained through zhnlp's own setup (``zhnlp.tasks.pretraining.build_trainer``:
   the Trainer, bf16 where CUDA has it, AdamW, the whole-word-masking collator, the shard sampler)
   and, in the same process, through a bare PyTorch loop with the same model, batch, bf16 autocast
   and AdamW. Prints tokens/s, MFU and the ratio ours / bare.
2. **bf16 against fp32**: the base-sized model's loss on one batch, both ways (they must agree to 1%).
3. **Finetuning**: one epoch of FewCLUE tnews on a base-sized checkpoint built in the Chinese BERT
   layout (``--layout-dir``: the real vocab and the original config without ``model_type``), through
   the stage's classifier and the ``clue-base`` recipe (bf16 on CUDA): samples/s and peak memory.
4. **Generation, bf16.** Beam search (3 beams) with the UniLM head on a batch of 32 prompts.

Every figure is printed as one JSON line (``"check": ...``) and written to ``--out`` when given.
Exit status 1 when there is no CUDA device; ``--dry-run`` checks the script on the CPU with tiny
models (it measures nothing).

On a GPU host whose Python lacks the project's pins, carry wheels for transformers 5.23.0,
tokenizers 0.23.3, huggingface_hub 2.4.0 (with httpx2, httpcore2, truststore) and jieba 0.42.1,
install them with ``pip install --no-deps --target /tmp/site`` and run
``PYTHONPATH=/tmp/site:. python -m benchmarks.gpu_check --vocab <bert vocab.txt> --out gpu.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

SEQ_LEN = 128
BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "max_position_embeddings": 512}


def _emit(record: dict, out: list[dict]) -> None:
    out.append(record)
    print(json.dumps(record), flush=True)


def _vocab_file(path: str | None, tmp: Path) -> Path:
    if path and Path(path).is_file():
        return Path(path)
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += [chr(0x4E00 + i) for i in range(21128 - len(tokens))]
    out = tmp / "vocab.txt"
    out.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return out


def _shards(tmp: Path, vocab: int, rows: int, seed: int = 0) -> tuple[list[Path], list[Path]]:
    from zhnlp.text.shards import Row, ShardWriter, shard_schema

    rng = np.random.default_rng(seed)
    paths = {}
    for split, n in (("train", rows), ("heldout", 256)):
        writer = ShardWriter(tmp, split, shard_schema(True), shard_rows=1 << 20)
        for _ in range(n):
            body = rng.integers(104, vocab, size=SEQ_LEN - 2).tolist()
            ids = [101, *body, 102]
            words = [-1, *(i // 2 for i in range(SEQ_LEN - 2)), -1]  # two-token words
            writer.write(Row(ids, words, "synthetic", split, 0))
        writer.close()
        paths[split] = [tmp / name for name in writer.shards]
    return paths["train"], paths["heldout"]


def check_pretraining(args, tmp: Path, out: list[dict]) -> None:
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    from zhnlp.tasks.pretraining import build_trainer, flops_per_token, peak_bf16_flops

    tokenizer = BertTokenizerFast(vocab=str(_vocab_file(args.vocab, tmp)))  # transformers 5: `vocab`, not `vocab_file`
    model_params = TINY if args.dry_run else BASE
    dev = args.device
    batch, steps, skip = args.batch, args.steps, 10
    train, heldout = _shards(tmp, len(tokenizer), rows=batch * (steps + 2))
    training = {
        "max_steps": steps, "per_device_train_batch_size": batch, "learning_rate": 1e-4, "warmup_ratio": 0.1,
        "save_steps": 10 * steps, "logging_steps": 10, "eval_steps": 10 * steps, "seed": 42,
    }
    setup = build_trainer(tokenizer, model_params, training, train, heldout, tmp / "run", report_to=(), throughput_skip_steps=skip)
    _reset_memory(dev)
    setup.trainer.train()
    ours = setup.throughput.summary()
    ours_mem = _peak_gib(dev)
    device, peak = peak_bf16_flops()
    _emit({"check": "pretrain_ours", "device": device, "bf16": bool(setup.trainer.args.bf16), "batch": batch, "seq_len": SEQ_LEN,
           "parameters": setup.model_info["parameters"], "tokens_per_second": ours["tokens_per_second"], "mfu": ours["mfu"],
           "peak_gib": ours_mem, "final_loss": setup.trainer.state.log_history[-1].get("train_loss")}, out)
    del setup
    if dev == "cuda":
        torch.cuda.empty_cache()

    # The bare loop: same config, batch, bf16 autocast, AdamW, 15% of positions masked.
    torch.manual_seed(42)
    config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **model_params)
    model = BertForMaskedLM(config).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    gen = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(104, len(tokenizer), (batch, SEQ_LEN), device=dev, generator=gen)
    _reset_memory(dev)
    t0 = None
    for step in range(steps):
        if step == skip:
            _sync(dev)
            t0 = time.perf_counter()
        masked = torch.rand(ids.shape, device=dev, generator=gen) < 0.15
        labels = torch.where(masked, ids, torch.full_like(ids, -100))
        inputs = torch.where(masked, torch.full_like(ids, tokenizer.mask_token_id), ids)
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            loss = model(input_ids=inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(dev)
    bare_tps = batch * SEQ_LEN * (steps - skip) / (time.perf_counter() - t0)
    fpt = flops_per_token(model, SEQ_LEN)
    _emit({"check": "pretrain_bare", "tokens_per_second": bare_tps, "mfu": bare_tps * fpt / peak if peak else None,
           "peak_gib": _peak_gib(dev)}, out)
    _emit({"check": "pretrain_ratio", "ours_over_bare": ours["tokens_per_second"] / bare_tps}, out)


def check_bf16_step1(args, out: list[dict]) -> None:
    """The first loss of the base-sized masked LM in fp32 and under bf16 autocast: same weights, same batch."""
    from transformers import BertConfig, BertForMaskedLM

    dev, vocab = args.device, 21128
    torch.manual_seed(42)
    model = BertForMaskedLM(BertConfig(vocab_size=vocab, **(TINY if args.dry_run else BASE))).to(dev).eval()  # eval: no dropout
    gen = torch.Generator(device=dev).manual_seed(1)
    ids = torch.randint(104, vocab, (args.batch, SEQ_LEN), device=dev, generator=gen)
    masked = torch.rand(ids.shape, device=dev, generator=gen) < 0.15
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, 103), ids)
    losses = {}
    with torch.no_grad():
        for name, enabled in (("fp32", False), ("bf16", dev == "cuda")):
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=enabled):
                losses[name] = float(model(input_ids=inputs, labels=labels).loss)
    rel = abs(losses["bf16"] - losses["fp32"]) / losses["fp32"]
    _emit({"check": "bf16_vs_fp32_step1", "loss_fp32": losses["fp32"], "loss_bf16": losses["bf16"], "relative_difference": rel,
           "agree": rel < 1e-2}, out)


def check_finetune(args, tmp: Path, out: list[dict]) -> None:
    """One epoch of FewCLUE tnews on a base-sized checkpoint in the Chinese BERT layout (config without model_type,
    vocab.txt, safetensors), through the stage's classifier and the clue-base recipe; random weights, so the
    figure is speed (samples/s, bf16), not accuracy."""
    from benchmarks.bench_parity import prepare_task
    from benchmarks.checkpoint_layouts import build_checkpoint
    from zhnlp.tasks.classification import ClassifierTraining, TransformerClassifier
    from zhnlp.tasks.classification_data import TaskData, evaluate_probs

    if not (args.layout_dir and args.clue):
        _emit({"check": "finetune_tnews", "skipped": "needs --layout-dir and --clue (../shared/data)"}, out)
        return
    sizes = TINY if args.dry_run else BASE
    folder = build_checkpoint(tmp / "ckpt", "bert-base-chinese", source_dir=args.layout_dir,
                              **{k: sizes[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")})
    data = TaskData.load(prepare_task(Path(args.clue), tmp / "tnews")[0])
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text(encoding="utf-8"))["finetune"]["recipes"]["clue-base"]
    cfg = ClassifierTraining.from_params(recipe | {"num_train_epochs": 1}, None, "tnews", "finetune.recipes.clue-base")
    if args.dry_run:
        data.splits = {s: rows[:64] for s, rows in data.splits.items()}
    clf = TransformerClassifier.from_pretrained(folder, data.labels, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    _sync(args.device)
    t0 = time.perf_counter()
    summary = clf.fit(data.splits["train"], data.splits["dev"], cfg)
    _sync(args.device)
    seconds = time.perf_counter() - t0
    dev = evaluate_probs(data.splits["dev"], clf.predict_proba(data.splits["dev"]))
    _emit({"check": "finetune_tnews", "device": str(next(clf.model.parameters()).device), "train_rows": len(data.splits["train"]),
           "seconds": seconds, "train_samples_per_second": len(data.splits["train"]) / seconds, "dev_accuracy": dev["accuracy"],
           "best_epoch": summary.best_epoch, "peak_gib": _peak_gib(args.device)}, out)


def check_generation(args, out: list[dict]) -> None:
    """Beam search (3 beams, 32 new tokens) with the UniLM head: our batched search against ``model.generate()``."""
    from transformers import BertConfig

    from zhnlp.models.decoding import BertDecoder, Prompt, transformers_generate
    from zhnlp.models.search import beam_search
    from zhnlp.models.unilm import BertUniLM

    dev = args.device
    torch.manual_seed(0)
    sizes = TINY if args.dry_run else BASE
    model = BertUniLM(BertConfig(vocab_size=21128, type_vocab_size=2, pad_token_id=0, **sizes)).to(dev).eval()
    if dev == "cuda":
        model = model.to(torch.bfloat16)
    rng = np.random.default_rng(0)
    prompts = [Prompt([101, *rng.integers(104, 21128, size=int(rng.integers(20, 60))).tolist(), 102]) for _ in range(64)]
    kw = {"num_beams": 3, "max_new_tokens": 32, "eos_id": 102}
    runs = {
        "ours": lambda batch: [g for i in range(0, len(prompts), batch) for g in beam_search(BertDecoder(model), prompts[i : i + batch], **kw)],
        "generate": lambda batch: [g for i in range(0, len(prompts), batch) for g in transformers_generate(model, prompts[i : i + batch], **kw)],
    }
    for batch in (1, 32):
        times = {}
        for name, fn in runs.items():
            fn(batch)  # warm-up
            best = float("inf")
            for _ in range(args.repeat):
                _sync(dev)
                t0 = time.perf_counter()
                fn(batch)
                _sync(dev)
                best = min(best, time.perf_counter() - t0)
            times[name] = best
        _emit({"check": "beam_search", "batch": batch, "dtype": str(next(model.parameters()).dtype), "prompts": len(prompts),
               "prompts_per_second_ours": len(prompts) / times["ours"], "prompts_per_second_generate": len(prompts) / times["generate"],
               "ours_over_generate_speed": times["generate"] / times["ours"]}, out)


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _reset_memory(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(dev: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev == "cuda" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", help="a BERT vocab.txt (e.g. ../shared/data/bert-chinese-layout/vocab.txt)")
    parser.add_argument("--layout-dir", help="the Chinese BERT layout folder (vocab.txt and the original configs) for the finetune check")
    parser.add_argument("--clue", help="the CLUE folder holding tnews/ (FewCLUE files) for the finetune check")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="write the JSON records here")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: checks this script, measures nothing")
    args = parser.parse_args()
    args.device = "cpu" if args.dry_run else "cuda"
    if args.dry_run:
        args.batch, args.steps, args.repeat = 2, 12, 1
    elif not torch.cuda.is_available():
        sys.exit("error: no CUDA device: the GPU check needs one (CPU paths are covered by `make test`; --dry-run checks this script)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out: list[dict] = []
    cuda = args.device == "cuda"
    _emit({"check": "environment", "torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if cuda else "cpu",
           "bf16": torch.cuda.is_bf16_supported() if cuda else False}, out)
    with tempfile.TemporaryDirectory() as tmp:
        check_pretraining(args, Path(tmp), out)
    check_bf16_step1(args, out)
    with tempfile.TemporaryDirectory() as tmp:
        check_finetune(args, Path(tmp), out)
    check_generation(args, out)
    if args.out:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in out) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
