"""zhnlp.tasks.pretraining and zhnlp.train.mlm: whole-word masking, capacity check, strict params, metrics, lazy shards, a short training.

Real torch/transformers on a tiny fixture: a WordPiece tokenizer trained here on the demo
corpora, and shards written by the encoder's own :class:`zhnlp.text.encoding.ShardWriter` with jieba
word ids (``make_encoded_fixture``, also used by tests/test_pretrain_stage.py). Resume
bookkeeping and training arguments are tested in tests/test_train.py.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from zhnlp.tasks import pretraining as pt
from zhnlp.config import ConfigError
from zhnlp.text.shards import Row, ShardWriter, shard_paths, shard_schema
from zhnlp.train import mlm
from zhnlp.train.callbacks import eval_curve, loss_curve
from zhnlp.train.checkpoints import checkpoint_is_complete, checkpoints, load_finished_checkpoint

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_MODEL = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}


# ---------------------------------------------------------------------------
# Fixture: tokenizer + encoded shards in the tokenizer engineer's contract
# ---------------------------------------------------------------------------


def demo_texts(root: Path, scale: float = 0.2) -> list[str]:
    """Every text field of the demo corpora (CLUE sentences, Ape210K problems, LCCC turns)."""
    from demo import write_demo_corpora

    write_demo_corpora(root, seed=0, scale=scale)
    keys = ("sentence", "sentence1", "sentence2", "abst", "text", "original_text")
    texts: list[str] = []
    for path in sorted(root.rglob("*.json")):
        if path.name == "labels.json" or path.name.endswith("_answer.json") or path.parent.name in ("cmrc2018", "c3"):
            continue  # not JSON lines (labels, CHID answers, SQuAD-style and C3 whole-file JSON)
        if path.name == "dialogues.json":
            for split in json.loads(path.read_text(encoding="utf-8")).values():
                texts += ["".join(turn.split()) for dialogue in split for turn in dialogue if turn.strip()]
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts += [row[k] for k in keys if isinstance(row.get(k), str) and row[k].strip()]
    return texts


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = 3000):
    """A BERT-style WordPiece tokenizer (CJK characters split), saved as a standard fast-tokenizer dir."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wordpiece = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    tokenizer = BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def encode(tokenizer, texts: list[str], max_len: int = 64, word_ids: bool = True) -> list[dict]:
    """Rows of the shard schema; word ids from jieba (HMM off) mapped through the token offsets."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    enc = tokenizer(texts, return_offsets_mapping=True, return_special_tokens_mask=True, truncation=True, max_length=max_len)
    rows = []
    for text, ids, offsets, special in zip(texts, enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]):
        row = {"input_ids": ids, "word_ids": None, "source": "demo"}
        if word_ids:
            char_word = np.zeros(len(text), dtype=np.int64)
            pos = 0
            for w, word in enumerate(jieba.lcut(text, HMM=False)):
                char_word[pos : pos + len(word)] = w
                pos += len(word)
            row["word_ids"] = [-1 if s else int(char_word[o[0]]) for o, s in zip(offsets, special)]
        rows.append(row)
    return rows


@functools.lru_cache(maxsize=None)
def _built(word_ids: bool) -> Path:
    """Tokenizer + all encoded demo texts, built once per test session."""
    import jieba

    base = Path(tempfile.mkdtemp(prefix="zhnlp-pretrain-fixture-"))
    atexit.register(shutil.rmtree, base, True)
    jieba.dt.tmp_dir = str(base)  # jieba's cache file stays in here
    texts = demo_texts(base / "demo")
    tokenizer = train_tokenizer(texts, base / "tokenizer")
    rows = encode(tokenizer, texts, word_ids=word_ids)
    (base / "rows.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return base


def make_encoded_fixture(
    root: Path, name: str = "char", *, train_rows: int | None = None, heldout_rows: int | None = None,
    shard_rows: int = 50_000, word_ids: bool = True,
) -> tuple[Path, Path]:
    """``root/models/tokenizers/<name>/`` and ``root/data/encoded/<name>/{train,heldout}-NNNNN.parquet``.

    Every 10th demo text is held out. Returns (tokenizer dir, encoded dir).
    """
    base = _built(word_ids)
    rows = json.loads((base / "rows.json").read_text(encoding="utf-8"))
    heldout, train = rows[::10], [r for i, r in enumerate(rows) if i % 10]
    tok_dir = root / "models" / "tokenizers" / name
    enc_dir = root / "data" / "encoded" / name
    shutil.rmtree(tok_dir, ignore_errors=True)
    shutil.rmtree(enc_dir, ignore_errors=True)
    shutil.copytree(base / "tokenizer", tok_dir)
    write_shards(train[:train_rows], enc_dir, "train", shard_rows, word_ids)
    write_shards(heldout[:heldout_rows], enc_dir, "heldout", shard_rows, word_ids)
    return tok_dir, enc_dir


def write_shards(rows: list[dict], folder: Path, split: str, shard_rows: int, word_ids: bool) -> None:
    """Rows as ``<split>-NNNNN.parquet`` through the encode stage's own writer and schema."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, split, shard_schema(word_ids), shard_rows)
    for row in rows:
        writer.write(Row(row["input_ids"], row["word_ids"], row["source"], split, 0))
    writer.close()


@pytest.fixture(scope="module")
def fixture_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretraining")
    tok_dir, enc_dir = make_encoded_fixture(root, shard_rows=64, train_rows=600, heldout_rows=96)
    return pt.mlm_tokenizer(tok_dir), enc_dir


# ---------------------------------------------------------------------------
# Whole-word masking
# ---------------------------------------------------------------------------


def test_synthetic_offsets_reproduce_our_word_boundaries_in_the_hf_collator():
    # [CLS] 银 行 理 财 与 债 券 [SEP] with jieba words 银行 / 理财 / 与 / 债券
    word_ids = np.array([-1, 0, 0, 1, 1, 2, 3, 3, -1])
    special = word_ids == -1
    offsets = mlm.synthetic_offsets(word_ids, special)
    # token i of group g -> (i + g, i + g + 1), groups counted from 1 ([CLS] is group 1):
    # tokens of one word touch, a new word leaves a gap
    assert offsets[1:8].tolist() == [[3, 4], [4, 5], [6, 7], [7, 8], [9, 10], [11, 12], [12, 13]]
    hf_word_ids, no_mask = mlm.DataCollatorForLanguageModeling._calc_word_ids_and_prob_mask(offsets[None], special[None].astype(int))
    assert hf_word_ids[0].tolist() == [-1, 1, 1, 2, 2, 3, 4, 4, -1]
    # only the first token of each word is drawn; the rest follow their word
    assert (~no_mask[0]).tolist() == [False, True, False, True, False, True, True, False, False]


def test_whole_word_masking_masks_jieba_words_together(fixture_dirs):
    tokenizer, enc_dir = fixture_dirs
    ds = mlm.ShardedTokenDataset(shard_paths(enc_dir, "train"))
    assert ds.has_word_ids
    collator = mlm.WholeWordMaskCollator(tokenizer, mlm_probability=0.3, seed=7, mask_replace_prob=1.0, random_replace_prob=0.0)
    whole, partial, untouched, multi_token_masked = 0, 0, 0, 0
    for start in range(0, 256, 16):
        rows = [ds[i] for i in range(start, start + 16)]
        batch = collator(rows)
        labels, inputs = batch["labels"].numpy(), batch["input_ids"].numpy()
        for r, row in enumerate(rows):
            n, wids = len(row["input_ids"]), row["word_ids"]
            masked = labels[r, :n] != -100
            assert not masked[wids == -1].any(), "special tokens are never masked"
            assert (inputs[r, :n][masked] == tokenizer.mask_token_id).all()
            assert (labels[r, :n][masked] == row["input_ids"][masked]).all()
            assert not (labels[r, n:] != -100).any(), "padding is never masked"
            for w in np.unique(wids[wids >= 0]):
                states = masked[wids == w]
                if states.all():
                    whole += 1
                    multi_token_masked += len(states) > 1
                elif states.any():
                    partial += 1
                else:
                    untouched += 1
    assert partial == 0, "a jieba word was masked only in part"
    assert multi_token_masked > 20 and untouched > whole > 0
    assert 0.2 < whole / (whole + untouched) < 0.4  # ~mlm_probability of the words


def test_bert_80_10_10_split_applies_after_whole_word_selection(fixture_dirs):
    tokenizer, enc_dir = fixture_dirs
    ds = mlm.ShardedTokenDataset(shard_paths(enc_dir, "train"))
    collator = mlm.WholeWordMaskCollator(tokenizer, mlm_probability=0.5, seed=1)
    counts = {"mask": 0, "random": 0, "kept": 0}
    for start in range(0, 512, 32):
        batch = collator([ds[i] for i in range(start, start + 32)])
        sel = batch["labels"] != -100
        got, want = batch["input_ids"][sel], batch["labels"][sel]
        counts["mask"] += int((got == tokenizer.mask_token_id).sum())
        counts["kept"] += int((got == want).sum())
        counts["random"] += int(((got != want) & (got != tokenizer.mask_token_id)).sum())
        assert not np.isin(got[got != tokenizer.mask_token_id].numpy(), tokenizer.all_special_ids).any()
    total = sum(counts.values())
    assert abs(counts["mask"] / total - 0.8) < 0.03
    assert abs(counts["random"] / total - 0.1) < 0.03  # a random pick can equal the original: counted as kept
    assert abs(counts["kept"] / total - 0.1) < 0.03


def test_masks_follow_the_row_keys_not_the_global_rng(fixture_dirs):
    tokenizer, enc_dir = fixture_dirs
    ds = mlm.ShardedTokenDataset(shard_paths(enc_dir, "train"))
    collator = mlm.WholeWordMaskCollator(tokenizer, seed=3)
    rows = [ds[i] for i in range(8)]
    state = torch.get_rng_state()
    a, b = collator(rows), collator(rows)
    assert torch.equal(torch.get_rng_state(), state), "masking must not consume the global RNG"
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    next_epoch = collator([ds[i + len(ds)] for i in range(8)])  # the same rows, one epoch later
    assert torch.equal(next_epoch["attention_mask"], a["attention_mask"])
    assert not torch.equal(next_epoch["labels"], a["labels"]), "dynamic masking: a new epoch masks anew"


def test_without_word_ids_words_come_from_wordpiece_continuations(tmp_path):
    tok_dir, enc_dir = make_encoded_fixture(tmp_path, word_ids=False, train_rows=50, heldout_rows=10)
    tokenizer = pt.mlm_tokenizer(tok_dir)
    ds = mlm.ShardedTokenDataset(shard_paths(enc_dir, "train"))
    assert not ds.has_word_ids and "word_ids" not in ds[0]
    vocab = tokenizer.get_vocab()
    cont = next(i for t, i in vocab.items() if t.startswith("##"))
    plain = [vocab[t] for t in ("银", "行")]
    ids = np.array([tokenizer.cls_token_id, plain[0], cont, cont, plain[1], tokenizer.sep_token_id])
    collator = mlm.WholeWordMaskCollator(tokenizer, seed=0)
    special = collator._is_special[ids]
    assert mlm.continuation_word_ids(ids, collator._is_continuation, special).tolist() == [-1, 0, 0, 0, 1, -1]
    batch = mlm.WholeWordMaskCollator(tokenizer, mlm_probability=1.0, seed=0)([{"input_ids": ids, "key": 0}])
    assert (batch["labels"][0] != -100).tolist() == [False, True, True, True, True, False]


# ---------------------------------------------------------------------------
# Model, capacity, metrics
# ---------------------------------------------------------------------------


def test_capacity_warning_for_narrow_embeddings():
    with pytest.warns(UserWarning, match=r"8\.33\*ln\(8000\) = 74\.9"):
        narrow = pt.check_capacity(16, 8000)
    assert not narrow.ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = pt.check_capacity(128, 8000)
    assert wide.ok and round(wide.floor, 1) == 74.9


def test_build_model_sizes_to_the_tokenizer_and_flags_capacity(fixture_dirs):
    tokenizer, _ = fixture_dirs
    with pytest.warns(UserWarning, match="embedding-capacity"):
        model, info = pt.build_model(tokenizer, TINY_MODEL | {"hidden_size": 16})
    assert model.config.vocab_size == len(tokenizer) and model.config.pad_token_id == tokenizer.pad_token_id
    assert not info["capacity"].ok and info["parameters"] == sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info = pt.build_model(tokenizer, TINY_MODEL | {"hidden_size": 128, "num_attention_heads": 2})
    assert info["capacity"].ok


def test_init_from_a_local_safetensors_checkpoint_resizes_with_a_message(fixture_dirs, tmp_path):
    tokenizer, _ = fixture_dirs
    model, _ = pt.build_model(tokenizer, TINY_MODEL | {"hidden_size": 64})  # wide enough: no capacity warning
    small = model.config.vocab_size - 10
    model.resize_token_embeddings(small)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    with pytest.warns(UserWarning, match=f"has {small} token embeddings but the tokenizer has {len(tokenizer)}"):
        loaded, info = pt.build_model(tokenizer, None, init_from=tmp_path / "ckpt")
    assert loaded.get_input_embeddings().num_embeddings == len(tokenizer) and info["resized_embeddings_from"] == small
    assert torch.equal(loaded.bert.encoder.layer[0].output.dense.weight, model.bert.encoder.layer[0].output.dense.weight)
    with pytest.raises(FileNotFoundError):
        pt.build_model(tokenizer, None, init_from=tmp_path / "missing")


def test_masked_token_accuracy_counts_only_masked_positions():
    from transformers import EvalPrediction

    metric = mlm.MaskedTokenAccuracy()
    labels = torch.tensor([[-100, 5, -100, 7], [-100, -100, 9, -100]])
    preds = torch.tensor([[5, 5, 0, 1], [0, 0, 9, 3]])
    assert metric(EvalPrediction(predictions=preds, label_ids=labels), compute_result=False) == {}
    # second batch: one masked position, wrong
    out = metric(EvalPrediction(predictions=torch.tensor([[1, 2]]), label_ids=torch.tensor([[-100, 4]])), compute_result=True)
    assert out == {"masked_token_accuracy": 2 / 4, "masked_tokens": 4.0}
    assert metric.total == 0, "state resets after each evaluation"
    logits = torch.zeros(1, 2, 6)
    logits[0, 0, 3] = logits[0, 1, 5] = 1
    assert mlm.argmax_logits((logits,), None).tolist() == [[3, 5]]


def test_masked_lm_loss_weighs_every_masked_token_across_the_step():
    logits = torch.randn(2, 5, 11)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3], labels[1, 4] = 4, 2, 9
    mean = torch.nn.functional.cross_entropy(logits.view(-1, 11), labels.view(-1), ignore_index=-100)
    assert torch.allclose(mlm.masked_lm_loss({"logits": logits}, labels), mean)
    # 3 masked tokens here out of 6 in the whole step: half the weight
    assert torch.allclose(mlm.masked_lm_loss({"logits": logits}, labels, torch.tensor(6)), mean / 2)


def test_peak_flops_table_and_flops_per_token(fixture_dirs):
    assert pt.peak_bf16_flops("NVIDIA H100 80GB HBM3")[1] == 989.4e12
    assert pt.peak_bf16_flops("NVIDIA H100 PCIe")[1] == 756e12
    assert pt.peak_bf16_flops("NVIDIA H200")[1] == 989.4e12
    assert pt.peak_bf16_flops("NVIDIA A100-SXM4-80GB")[1] == 312e12
    assert pt.peak_bf16_flops("Tesla T4") == ("Tesla T4", None)
    tokenizer, _ = fixture_dirs
    with pytest.warns(UserWarning):
        model, _ = pt.build_model(tokenizer, TINY_MODEL)
    c = model.config
    tables = c.max_position_embeddings * c.hidden_size + c.type_vocab_size * c.hidden_size
    n = sum(p.numel() for p in model.parameters()) - tables
    assert pt.flops_per_token(model, 40) == 6 * n + 12 * c.num_hidden_layers * c.hidden_size * 40


# ---------------------------------------------------------------------------
# Data: lazy shards, deterministic shard-window sampler
# ---------------------------------------------------------------------------


def test_dataset_reads_shards_lazily_and_keeps_only_a_few(fixture_dirs):
    _, enc_dir = fixture_dirs
    paths = shard_paths(enc_dir, "train")
    assert len(paths) == 10  # 600 rows in shards of 64
    ds = mlm.ShardedTokenDataset(paths, cache_shards=2)
    assert len(ds) == 600 and ds.shard_loads == 0 and ds.loaded_shards == [], "construction reads footers only"
    row = ds[5 * 64 + 3]
    assert ds.loaded_shards == [5] and ds.shard_loads == 1
    expected = pq.read_table(paths[5]).slice(3, 1).to_pylist()[0]
    assert row["input_ids"].tolist() == expected["input_ids"] and row["word_ids"].tolist() == expected["word_ids"]
    ds[5 * 64], ds[0], ds[64 + 1]
    assert ds.loaded_shards == [0, 1] and ds.shard_loads == 3, "least recently used shard dropped"
    assert ds[600 + 7]["input_ids"].tolist() == ds[7]["input_ids"].tolist()  # key of epoch 1
    assert ds[600 + 7]["key"] == 607
    limited = mlm.ShardedTokenDataset(paths, max_rows=100)
    assert len(limited) == 100


def test_sampler_is_a_deterministic_shard_window_permutation(fixture_dirs):
    _, enc_dir = fixture_dirs
    ds = mlm.ShardedTokenDataset(shard_paths(enc_dir, "train"), cache_shards=2)
    sampler = mlm.ShardWindowSampler(ds, seed=5)
    epoch0 = list(sampler)
    assert sorted(epoch0) == list(range(600)) and epoch0 != list(range(600))
    assert list(sampler) == epoch0, "same (seed, epoch), same order"
    shard_of = [ds.locate(k)[0] for k in epoch0]
    first = {s: shard_of.index(s) for s in set(shard_of)}
    last = {s: len(shard_of) - 1 - shard_of[::-1].index(s) for s in set(shard_of)}
    open_at_once = max(sum(first[s] <= i <= last[s] for s in first) for i in range(len(shard_of)))
    assert open_at_once == 2, "rows of 2 shards (one window) at a time, shuffled across both"
    ds.shard_loads = 0
    for k in epoch0:
        ds[k]
    assert ds.shard_loads == 10, "each shard read once per epoch"
    ds.set_epoch(1)  # what accelerate's wrappers reach, whichever path they take
    epoch1 = list(sampler)
    assert epoch1 != [k + 600 for k in epoch0] and sorted(k - 600 for k in epoch1) == list(range(600))


# ---------------------------------------------------------------------------
# Strict params
# ---------------------------------------------------------------------------


def test_pretrain_params_are_strict_one_line_errors():
    training = {"max_steps": 10, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "save_steps": 5, "logging_steps": 5}
    assert pt.pretrain_training(training).eval_steps is None
    cases = [
        (training | {"lerning_rate": 1e-3}, "pretrain.training: unknown key 'lerning_rate'; allowed keys:"),
        (training | {"warmup_ratio": 1.5}, "pretrain.training.warmup_ratio: 1.5 is not allowed; use a number in [0.0, 1.0)"),
        (training | {"max_steps": "ten"}, "pretrain.training.max_steps: 'ten' is not allowed; expected int"),
        ({k: v for k, v in training.items() if k != "max_steps"}, "pretrain.training: missing required key 'max_steps'"),
    ]
    for params, message in cases:
        with pytest.raises(ConfigError) as err:
            pt.pretrain_training(params)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    from zhnlp.config import from_params

    with pytest.raises(ConfigError, match=r"^pretrain.model: unknown key 'hiden_size'"):
        pt.build_model(None, TINY_MODEL | {"hiden_size": 64})
    with pytest.raises(ConfigError, match=r"^pretrain.model.hidden_size: 30 is not allowed; use a multiple of num_attention_heads \(4\)"):
        from_params(pt.ModelSettings, TINY_MODEL | {"hidden_size": 30, "num_attention_heads": 4}, "pretrain.model")
    with pytest.raises(ConfigError, match=r"^pretrain.backbones.char.tokenizer: name 'a;b' is not allowed"):
        from_params(pt.BackboneSpec, {"tokenizer": "a;b"}, "pretrain.backbones.char")


# ---------------------------------------------------------------------------
# A short real training run (in process, no MLflow)
# ---------------------------------------------------------------------------


def test_short_training_learns_and_reports_accuracy_and_throughput(fixture_dirs, tmp_path, one_thread):
    tokenizer, enc_dir = fixture_dirs
    training = {
        "max_steps": 40, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "weight_decay": 0.01, "warmup_ratio": 0.1,
        "mlm_probability": 0.15, "whole_word_mask": True, "save_steps": 20, "logging_steps": 10, "eval_steps": 20, "seed": 42,
    }
    with pytest.warns(UserWarning, match="embedding-capacity"):
        setup = pt.build_trainer(
            tokenizer, TINY_MODEL, training, shard_paths(enc_dir, "train"), shard_paths(enc_dir, "heldout"),
            tmp_path / "ckpt", report_to=[],
        )
    setup.trainer.train()
    history = setup.trainer.state.log_history
    losses = [e["loss"] for e in history if "loss" in e]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.5
    assert all(e["tokens_per_second"] > 0 for e in history if "loss" in e)
    evals = [e for e in history if "eval_masked_token_accuracy" in e]
    assert [e["step"] for e in evals] == [20, 40] and 0 <= evals[-1]["eval_masked_token_accuracy"] <= 1
    assert evals[-1]["eval_masked_tokens"] > 50
    summary = setup.throughput.summary()
    assert summary["tokens_per_second"] > 0 and summary["mfu"] is None  # no MFU without a GPU's peak
    assert summary["train_tokens"] == setup.trainer.state.num_input_tokens_seen
    assert [p.name for _, p in checkpoints(tmp_path / "ckpt")] == ["checkpoint-20", "checkpoint-40"]
    assert checkpoint_is_complete(tmp_path / "ckpt" / "checkpoint-40")
    curve = loss_curve(history)
    assert [r["step"] for r in curve] == [10, 20, 30, 40] and all(set(r) == {"step", "loss"} for r in curve)
    assert [r["step"] for r in eval_curve(history)] == [20, 40]

    # A run killed after its last checkpoint: the outputs come from that checkpoint, with no extra step.
    with pytest.warns(UserWarning, match="embedding-capacity"):
        again = pt.build_trainer(
            tokenizer, TINY_MODEL, training, shard_paths(enc_dir, "train"), shard_paths(enc_dir, "heldout"),
            tmp_path / "ckpt", report_to=[],
        )
    again.trainer.state = load_finished_checkpoint(again.trainer.model, tmp_path / "ckpt" / "checkpoint-40")
    assert again.trainer.state.global_step == 40 and loss_curve(again.trainer.state.log_history) == curve
    trained = setup.model.state_dict()
    for name, tensor in again.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name
    assert again.model.cls.predictions.decoder.weight.data_ptr() == again.model.bert.embeddings.word_embeddings.weight.data_ptr()
