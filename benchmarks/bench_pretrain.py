"""Pretraining throughput: our Trainer setup against a bare PyTorch loop, measured in the same run.

Both sides train the same BertForMaskedLM (``pretrain.model`` from params.yaml, same seed) on
the same shards, sampler, whole-word-mask collator, batch size, precision (bf16 on a CUDA GPU
that has it, else fp32), AdamW (torch, decoupled weight decay on the same parameters), linear
warm-up/decay and gradient clipping. "Ours" is ``zhnlp.tasks.pretraining.build_trainer`` exactly as the
stage uses it, MLflow reporting included (to a scratch SQLite store); the bare loop is a
DataLoader, forward, backward, clip, step. Each run warms up for ``--warmup`` optimizer steps and
then measures ``--steps`` steps (non-pad tokens / wall time); runs alternate between the two
sides, and the best of ``--repeat`` runs counts. Target: ours / bare >= 0.9.

On a CUDA host a BERT-base-sized config (768 hidden, 12 layers, 12 heads, sequences packed to
128 tokens) is also measured in bf16, with estimated MFU against the GPU's peak bf16 FLOP/s.

Also: the masked-only vocabulary scoring the stage uses (``zhnlp.models.masked_lm``) against HF's
``BertForMaskedLM`` scoring every position, same config, initial weights and batches, in the bare loop:
tokens/s and the two loss curves (target: >= 1.8x, equal curves).

Data: ``models/tokenizers/char`` + ``data/encoded/char`` when the pipeline has built them, else
a WordPiece tokenizer and jieba-word-id shards made here from the demo corpora.

    python -m benchmarks.bench_pretrain [--repeat 3] [--steps 30] [--warmup 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, format_table, ratio, write_results

NAME = "bench_pretrain"
TARGET_RATIO = 0.9
BERT_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512}


# ---------------------------------------------------------------- data


def _demo_texts(root: Path) -> list[str]:
    from demo import write_demo_corpora

    write_demo_corpora(root, seed=0, scale=1.0)
    keys = ("sentence", "sentence1", "sentence2", "abst", "text", "original_text")
    texts: list[str] = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "labels.json" or path.name.endswith("_answer.json") or path.parent.name in ("cmrc2018", "c3"):
            continue  # not JSON lines (labels, CHID answers, SQuAD-style and C3 whole-file JSON)
        if path.name == "dialogues.json":
            for split in json.loads(path.read_text(encoding="utf-8")).values():
                texts += ["".join(t.split()) for d in split for t in d if t.strip()]
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [row[k] for k in keys if isinstance(row.get(k), str) and row[k].strip()]
    return texts


def build_demo_data(tmp: Path, max_len: int = 128) -> tuple[Path, Path]:
    """A BERT-style WordPiece tokenizer and train shards (jieba word ids) from the demo corpora."""
    import jieba
    import numpy as np
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    jieba.setLogLevel(logging.WARNING)
    jieba.dt.tmp_dir = str(tmp)
    texts = _demo_texts(tmp / "demo")
    wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=8000, min_frequency=2, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok_dir, enc_dir = tmp / "tokenizer", tmp / "encoded"
    tokenizer = BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(str(tok_dir))
    enc = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=True, max_length=max_len)
    rows = []
    for text, ids, offsets, special in zip(texts, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
        char_word = np.zeros(len(text), dtype=np.int64)
        pos = 0
        for w, word in enumerate(jieba.lcut(text, HMM=False)):
            char_word[pos : pos + len(word)] = w
            pos += len(word)
        rows.append((ids, [-1 if s else int(char_word[o[0]]) for o, s in zip(offsets, special)], "demo"))
    write_shards(rows, enc_dir)
    return tok_dir, enc_dir


def write_shards(rows: list[tuple[list[int], list[int], str]], folder: Path) -> list[Path]:
    """(input_ids, word_ids, source) rows as train shards, written as the encode stage writes them."""
    from zhnlp.text.shards import Row, ShardWriter, shard_schema
    from zhnlp.text.shards import shard_paths

    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, "train", shard_schema(True), shard_rows=50_000)
    for ids, wids, source in rows:
        writer.write(Row(ids, wids, source, "train", 0))
    writer.close()
    return shard_paths(folder, "train")


def pack_shards(src_paths: list[Path], dest: Path, cls_id: int, sep_id: int, length: int = 128) -> list[Path]:
    """Rows concatenated into [CLS] ... [SEP] sequences of exactly ``length`` tokens (word ids kept apart)."""
    import pyarrow.parquet as pq

    packed, ids, wids, next_word = [], [], [], 0
    for path in src_paths:
        for row in pq.read_table(path, columns=["input_ids", "word_ids"]).to_pylist():
            body = row["input_ids"][1:-1]
            words = [w + next_word for w in row["word_ids"][1:-1]]
            next_word = (max(words) + 1) if words else next_word
            ids += body
            wids += words
            while len(ids) >= length - 2:
                packed.append(([cls_id, *ids[: length - 2], sep_id], [-1, *wids[: length - 2], -1], "packed"))
                ids, wids = ids[length - 2 :], wids[length - 2 :]
    return write_shards(packed, dest)


# ---------------------------------------------------------------- the two sides


def _training_params(params: dict, batch: int | None) -> dict:
    training = dict(params["pretrain"]["training"])
    if batch:
        training["per_device_train_batch_size"] = batch
    return training


def run_trainer(tokenizer, model_params: dict, training: dict, paths: list[Path], out: Path, warmup: int, steps: int) -> dict:
    """Our setup (build_trainer, as the stage runs it): tokens/s over the steps after the warm-up."""
    from zhnlp.tasks.pretraining import build_trainer

    shutil.rmtree(out, ignore_errors=True)
    setup = build_trainer(
        tokenizer, model_params, training | {"max_steps": warmup + steps}, paths, [], out,
        report_to=["mlflow"], run_name="bench_pretrain", throughput_skip_steps=warmup, save_strategy="no",
    )
    setup.trainer.train()
    summary = setup.throughput.summary()
    return {"tokens_per_second": summary["tokens_per_second"], "mfu": summary["mfu"], "tokens": summary["train_tokens"], "seconds": summary["train_seconds"]}


def run_bare(tokenizer, model_params: dict, training: dict, paths: list[Path], warmup: int, steps: int, head: str = "masked",
             vocab_size: int | None = None) -> dict:
    """The same model, data, collator, optimizer, schedule, clipping and precision in a plain loop.

    ``head="masked"``: our model, vocabulary scored at the masked positions only (as the stage
    trains); ``head="full"``: HF ``BertForMaskedLM`` with the same config and initial weights,
    scoring every position. Per-step losses are returned to compare the loss curves."""
    import torch
    from transformers import get_linear_schedule_with_warmup, set_seed

    from zhnlp.tasks.pretraining import build_model, flops_per_token, peak_bf16_flops, pretrain_training
    from zhnlp.train.arguments import cuda_bf16
    from zhnlp.train.mlm import ShardedTokenDataset, ShardWindowSampler, WholeWordMaskCollator, masked_lm_loss

    cfg = pretrain_training(training | {"max_steps": warmup + steps})  # the same strict params the Trainer side reads
    seed = cfg.seed
    set_seed(seed)
    model, _ = build_model(tokenizer, model_params)
    if vocab_size:  # the same data, a model sized for a bigger vocabulary (e.g. Chinese BERT's 21,128)
        from transformers import BertConfig

        model = type(model)(BertConfig(**(model.config.to_dict() | {"vocab_size": vocab_size})))
    if head == "full":
        from transformers import BertForMaskedLM

        full = BertForMaskedLM(model.config)
        full.load_state_dict(model.state_dict())
        model = full
    set_seed(seed)  # both heads then draw the same dropout masks
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model.to(device).train()
    bf16 = cuda_bf16()
    dataset = ShardedTokenDataset(paths, use_word_ids=cfg.whole_word_mask)
    collator = WholeWordMaskCollator(
        tokenizer, mlm_probability=cfg.mlm_probability, whole_word_mask=cfg.whole_word_mask,
        seed=seed, pad_to_multiple_of=8 if cuda else None, max_length=model.config.max_position_embeddings,
    )
    workers = cfg.dataloader_num_workers if cuda else 0
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.per_device_train_batch_size, sampler=ShardWindowSampler(dataset, seed), collate_fn=collator,
        num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0,
    )
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
    )
    total = warmup + steps
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(total * cfg.warmup_ratio), total)
    accumulation = cfg.gradient_accumulation_steps

    def batches():
        epoch = 0
        while True:
            dataset.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = batches()
    tokens, t0, losses = 0, None, []
    for step in range(total):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            t0, tokens = time.perf_counter(), 0
        micro = [next(stream) for _ in range(accumulation)]
        n_items = sum(int((b["labels"] != -100).sum()) for b in micro)
        step_loss = 0.0
        for batch in micro:
            tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            labels = batch.pop("labels")
            if head == "masked":
                batch["mlm_positions"] = labels != -100
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = model(**batch)
                loss = masked_lm_loss(outputs, labels, n_items)
            loss.backward()
            step_loss += float(loss)
        losses.append(step_loss)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tps = tokens / seconds
    _, peak = peak_bf16_flops()
    head_fraction = cfg.mlm_probability if head == "masked" else 1.0
    mfu = tps * flops_per_token(model, dataset.mean_length(), head_fraction) / peak if (peak and bf16) else None
    return {"tokens_per_second": tps, "mfu": mfu, "tokens": float(tokens), "seconds": seconds, "losses": losses}


def compare_heads(label: str, tokenizer, model_params: dict, training: dict, paths: list[Path], repeat: int, warmup: int, steps: int,
                  vocab_size: int | None = None) -> dict:
    """Masked-only scoring against HF BertForMaskedLM's full projection: tokens/s and the loss curves."""
    masked, full = [], []
    for i in range(repeat):
        masked.append(run_bare(tokenizer, model_params, training, paths, warmup, steps, head="masked", vocab_size=vocab_size))
        full.append(run_bare(tokenizer, model_params, training, paths, warmup, steps, head="full", vocab_size=vocab_size))
        print(f"  {label} heads run {i + 1}: masked-only {masked[-1]['tokens_per_second']:,.0f} tok/s, "
              f"BertForMaskedLM {full[-1]['tokens_per_second']:,.0f} tok/s", flush=True)
    best_masked = max(masked, key=lambda r: r["tokens_per_second"])
    best_full = max(full, key=lambda r: r["tokens_per_second"])
    a, b = masked[0]["losses"], full[0]["losses"]  # same seed, data and initial weights
    return {
        "masked_tokens_per_second": best_masked["tokens_per_second"],
        "full_tokens_per_second": best_full["tokens_per_second"],
        "speedup": ratio(best_masked["tokens_per_second"], best_full["tokens_per_second"]),
        "loss_max_abs_diff": max(abs(x - y) for x, y in zip(a, b)),
        "loss_first": [a[0], b[0]],
        "loss_last": [a[-1], b[-1]],
        "steps": len(a),
    }


def compare(label: str, tokenizer, model_params: dict, training: dict, paths: list[Path], tmp: Path, repeat: int, warmup: int, steps: int) -> dict:
    """Alternate trainer/bare runs; best of ``repeat`` each."""
    ours, bare = [], []
    for i in range(repeat):
        ours.append(run_trainer(tokenizer, model_params, training, paths, tmp / f"{label}-ckpt", warmup, steps))
        bare.append(run_bare(tokenizer, model_params, training, paths, warmup, steps))
        print(f"  {label} run {i + 1}: ours {ours[-1]['tokens_per_second']:,.0f} tok/s, bare {bare[-1]['tokens_per_second']:,.0f} tok/s", flush=True)
    best_ours = max(ours, key=lambda r: r["tokens_per_second"])
    best_bare = max(bare, key=lambda r: r["tokens_per_second"])
    r = ratio(best_ours["tokens_per_second"], best_bare["tokens_per_second"])
    return {
        "model": model_params,
        "batch": int(training["per_device_train_batch_size"]),
        "ours_tokens_per_second": best_ours["tokens_per_second"],
        "bare_tokens_per_second": best_bare["tokens_per_second"],
        "ratio": r,
        "meets_target": r is not None and r >= TARGET_RATIO,
        "ours_mfu": best_ours["mfu"],
        "bare_mfu": best_bare["mfu"],
        "ours_runs": [x["tokens_per_second"] for x in ours],
        "bare_runs": [x["tokens_per_second"] for x in bare],
    }


# ---------------------------------------------------------------- entry points


def run(repeat: int, tmp: Path, *, steps: int = 30, warmup: int = 5, threads: int | None = None, batch: int | None = None) -> dict:
    """The measurements (``python -m benchmarks`` calls ``run(repeat, tmp)``)."""
    # MLflow logging is part of our setup, but into a scratch store, never the project's mlflow.db.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    os.environ.update({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "MLFLOW_EXPERIMENT_NAME": NAME})
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                       "TOKENIZERS_PARALLELISM": "false", "HF_HOME": str(tmp / "hf")}.items():
        os.environ.setdefault(key, value)
    try:
        return _run(repeat, tmp, steps=steps, warmup=warmup, threads=threads, batch=batch)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(repeat: int, tmp: Path, *, steps: int, warmup: int, threads: int | None, batch: int | None) -> dict:
    import torch
    import yaml

    from zhnlp.tasks.pretraining import mlm_tokenizer, peak_bf16_flops
    from zhnlp.text.shards import shard_paths

    if threads:
        torch.set_num_threads(threads)
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    tok_dir, enc_dir = ROOT / "models/tokenizers/char", ROOT / "data/encoded/char"
    if tok_dir.is_dir() and shard_paths(enc_dir, "train"):
        data = "pipeline (models/tokenizers/char, data/encoded/char)"
    else:
        data = "demo corpora, tokenized here"
        tok_dir, enc_dir = build_demo_data(tmp)
    tokenizer = mlm_tokenizer(tok_dir)
    paths = shard_paths(enc_dir, "train")
    device, peak = peak_bf16_flops()
    results: dict = {
        "data": data,
        "device": device,
        "peak_bf16_flops": peak,
        "torch_threads": torch.get_num_threads(),
        "warmup_steps": warmup,
        "measured_steps": steps,
        "repeat": repeat,
        "target_ratio": TARGET_RATIO,
        "configs": {},
    }
    training = _training_params(params, batch)
    print(f"== params.yaml model, batch {training['per_device_train_batch_size']} on {device}", flush=True)
    results["configs"]["params"] = compare("params", tokenizer, params["pretrain"]["model"], training, paths, tmp, repeat, warmup, steps)
    results["heads"] = {f"params, vocab {len(tokenizer):,}": compare_heads("params", tokenizer, params["pretrain"]["model"], training, paths, repeat, warmup, steps)}
    # The demo vocabulary is small; the projection dominates at a real one (Chinese BERT's vocab.txt).
    results["heads"]["params, vocab 21,128"] = compare_heads(
        "params-21128", tokenizer, params["pretrain"]["model"], training, paths, repeat, warmup, steps, vocab_size=21128
    )
    if torch.cuda.is_available():
        packed = pack_shards(paths, tmp / "packed", tokenizer.cls_token_id, tokenizer.sep_token_id, 128)
        print(f"== BERT-base, bf16, 128-token sequences on {device}", flush=True)
        results["configs"]["bert_base"] = compare(
            "bert_base", tokenizer, BERT_BASE, training, packed, tmp, repeat, max(warmup, 10), max(steps, 100)
        )
        results["heads"]["bert_base, vocab 21,128"] = compare_heads("bert_base", tokenizer, BERT_BASE, training, packed, repeat, max(warmup, 10), max(steps, 100), vocab_size=21128)
    return results


def summary(results: dict) -> str:
    rows = []
    for name, c in results["configs"].items():
        size = f"{c['model']['hidden_size']}h x {c['model']['num_hidden_layers']}L"
        mfu = c["ours_mfu"]
        rows.append([name, size, c["batch"], c["ours_tokens_per_second"], c["bare_tokens_per_second"], round(c["ratio"], 3) if c["ratio"] else None,
                     c["meets_target"], f"{mfu:.1%}" if mfu is not None else ("unknown" if results["device"] != "cpu" else "-")])
    table = format_table(["config", "model", "batch", "ours tok/s", "bare tok/s", "ratio", f">= {results['target_ratio']}", "MFU"], rows)
    head_rows = [[name, h["masked_tokens_per_second"], h["full_tokens_per_second"], h["speedup"], f"{h['loss_max_abs_diff']:.2e}",
                  f"{h['loss_first'][0]:.4f} / {h['loss_first'][1]:.4f}", f"{h['loss_last'][0]:.4f} / {h['loss_last'][1]:.4f}"]
                 for name, h in results.get("heads", {}).items()]
    heads = format_table(["config", "masked-only tok/s", "BertForMaskedLM tok/s", "speed-up", "max |loss diff|", "first loss", "last loss"], head_rows)
    return (
        f"pretrain throughput on {results['device']} ({results['torch_threads']} threads; data: {results['data']}; "
        f"best of {results['repeat']}, {results['measured_steps']} steps after {results['warmup_steps']} warm-up)\n{table}\n"
        f"masked-only vocabulary scoring vs HF BertForMaskedLM (bare loop, same config, weights and batches; target >= 1.8):\n{heads}"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="optimizer steps before measuring")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--batch", type=int, default=None, help="per-device batch (default: params.yaml)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="zhnlp-bench-pretrain-"))
    t0 = time.perf_counter()
    try:
        results = run(args.repeat, tmp, steps=args.steps, warmup=args.warmup, threads=args.threads, batch=args.batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {"benchmark": NAME, "wall_s": time.perf_counter() - t0} | results
    path = write_results(NAME, results)
    print("\n" + summary(results) + f"\n(results: {path.relative_to(ROOT)})")
    return results


if __name__ == "__main__":
    main()
