"""zhnlp.models.checkpoint: local checkpoints in the layouts users download (real Chinese BERT vocab and configs).

The checkpoints are benchmarks.checkpoint_layouts' tiny random ones built from
../shared/data/bert-chinese-layout (skipped when absent, failed under CI).
"""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmarks.checkpoint_layouts import LAYOUTS, build_checkpoint
from tests.shared_data import shared_data_dir
from zhnlp.errors import UserError
from zhnlp.models.checkpoint import WORD_VOCAB_MIN, CheckpointError, CheckpointNotFound, inspect_checkpoint, load_config
from zhnlp.text.tokenization import is_cjk_word, load_tokenizer

# layout -> (model_type inferred?, tokenizer source, tokenizer mode, MLM head)
EXPECTED = {
    "bert-base-chinese": (True, "vocab.txt", "pretrained", "trained"),
    "roberta-wwm-ext-large": (True, "vocab.txt", "pretrained", "untrained"),
    "tokenizer-json": (False, "tokenizer.json", "pretrained", "trained"),
    "no-mlm-head": (True, "vocab.txt", "pretrained", "missing"),
    "untrained-mlm-head": (True, "vocab.txt", "pretrained", "untrained"),
    "wobert": (True, "vocab.txt", "word", "trained"),
}
USABLE = tuple(EXPECTED)


@pytest.fixture(scope="module")
def source():
    return shared_data_dir() / "bert-chinese-layout"


@pytest.fixture(scope="module")
def ckpts(source, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {layout: build_checkpoint(root, layout, source_dir=source) for layout in LAYOUTS}


@pytest.fixture(scope="module")
def tnews(source):
    clue = source.parent / "clue" / "tnews"
    labels = [json.loads(line)["label"] for line in (clue / "labels.json").read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = (clue / "train_few_all.json").read_text(encoding="utf-8").splitlines()[:: 20][:8]
    rows = [json.loads(line) for line in lines]
    return labels, [{"text_a": r["sentence"], "text_b": None, "label_id": labels.index(str(r["label"]))} for r in rows]


def _tensor(folder, name):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(name)


@pytest.mark.parametrize("layout", USABLE)
def test_each_layout_resolves_without_loading_weights(ckpts, layout):
    ck = inspect_checkpoint(ckpts[layout])
    inferred, source, mode, head = EXPECTED[layout]
    assert (ck.model_type, ck.config.model_type, ck.inferred_model_type) == ("bert", "bert", inferred)
    assert (ck.tokenizer_source, ck.tokenizer_mode, ck.mlm_head) == (source, mode, head)
    assert ck.weights == ("model.safetensors",) and ck.config.hidden_size == 64
    summary = json.loads(json.dumps(ck.summary()))
    assert summary["mlm_head"] == head and summary["model_type"] == "bert" and summary["vocab_size"] == ck.config.vocab_size
    assert load_config(ckpts[layout]).to_dict() == ck.config.to_dict()


def test_roberta_folder_name_misleads_autoconfig_but_not_us(ckpts):
    from transformers import AutoConfig, AutoModelForMaskedLM

    folder = ckpts["roberta-wwm-ext-large"]
    assert folder.name == "chinese-roberta-wwm-ext-large" and "model_type" not in json.loads((folder / "config.json").read_text())
    try:  # transformers either refuses the folder or guesses RoBERTa from its name
        guessed = AutoConfig.from_pretrained(str(folder), local_files_only=True).model_type
    except ValueError:
        guessed = None
    assert guessed != "bert"
    config = load_config(folder)
    assert config.model_type == "bert" and config.num_attention_heads == 2
    model = AutoModelForMaskedLM.from_pretrained(str(folder), config=config, use_safetensors=True, local_files_only=True)
    assert torch.equal(model.bert.encoder.layer[1].output.dense.weight, _tensor(folder, "bert.encoder.layer.1.output.dense.weight"))


def test_unsafe_or_unknown_checkpoints_are_refused_in_one_line(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin: only safetensors .*save_pretrained") as err:
        inspect_checkpoint(ckpts["bin-only"])
    messages = [str(err.value)]
    with pytest.raises(CheckpointNotFound, match="is not a model directory") as err:
        inspect_checkpoint(tmp_path / "nothing")
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, UserError)
    messages.append(str(err.value))

    odd = tmp_path / "odd"  # weights under an unknown prefix, no model_type, no architectures
    odd.mkdir()
    shutil.copy(ckpts["bert-base-chinese"] / "config.json", odd / "config.json")
    save_file({"encoder.foo." + k: v for k, v in load_file(ckpts["bert-base-chinese"] / "model.safetensors").items() if "layer.0." in k}, odd / "model.safetensors")
    with pytest.raises(CheckpointError, match=r'odd/config.json: cannot tell the model type .* add "model_type"') as err:
        inspect_checkpoint(odd)
    messages.append(str(err.value))
    config = json.loads((odd / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMaskedLM"]}))
    assert inspect_checkpoint(odd).model_type == "bert"  # architectures is the fallback

    (odd / "config.json").write_text(json.dumps(config | {"model_type": "nezha-xl"}))
    with pytest.raises(CheckpointError, match="model_type 'nezha-xl' is not a transformers architecture") as err:
        inspect_checkpoint(odd)
    messages.append(str(err.value))

    wrong = tmp_path / "wrong"  # a declared model_type the weights contradict would load as random weights
    shutil.copytree(ckpts["bert-base-chinese"], wrong)
    (wrong / "config.json").write_text(json.dumps(config | {"model_type": "roberta"}))
    with pytest.raises(CheckpointError, match="model_type 'roberta' but the weights are 'bert' ones") as err:
        inspect_checkpoint(wrong)
    messages.append(str(err.value))
    (wrong / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors") as err:
        inspect_checkpoint(wrong)
    messages.append(str(err.value))
    assert all("\n" not in m for m in messages)


def test_sharded_safetensors_and_missing_shards(ckpts, tmp_path):
    from transformers import BertForMaskedLM

    from zhnlp.models.decoding import load_model

    model = BertForMaskedLM.from_pretrained(str(ckpts["bert-base-chinese"]), config=load_config(ckpts["bert-base-chinese"]))
    model.save_pretrained(str(tmp_path / "sharded"), max_shard_size="1MB")
    config = json.loads((tmp_path / "sharded" / "config.json").read_text())
    del config["model_type"], config["architectures"]
    (tmp_path / "sharded" / "config.json").write_text(json.dumps(config))
    ck = inspect_checkpoint(tmp_path / "sharded")
    assert len(ck.weights) > 1 and ck.model_type == "bert" and ck.mlm_head == "trained" and ck.tokenizer_source is None
    with pytest.raises(CheckpointError, match="no tokenizer"):
        ck.load_tokenizer()
    loaded = load_model(tmp_path / "sharded", "cpu", head="unilm")
    assert torch.equal(loaded.cls.predictions.bias, model.cls.predictions.bias)
    (tmp_path / "sharded" / ck.weights[-1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard {ck.weights[-1]} is missing"):
        inspect_checkpoint(tmp_path / "sharded")


def test_bert_vocab_is_per_character_and_wobert_vocab_keeps_words(ckpts, source):
    vocab = (source / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert sum(is_cjk_word(w) for w in vocab) == 0  # measured: the real BERT Chinese vocab has no multi-char CJK entry
    bert = inspect_checkpoint(ckpts["bert-base-chinese"]).load_tokenizer()
    assert bert.hf.is_fast and bert.mode == "pretrained"
    assert bert.tokenize("北京天安门 Hello") == ["北", "京", "天", "安", "门", "hello"]

    wobert_vocab = (ckpts["wobert"] / "vocab.txt").read_text(encoding="utf-8").split("\n")
    words = [w for w in wobert_vocab if is_cjk_word(w)]
    assert len(words) >= WORD_VOCAB_MIN
    wobert = inspect_checkpoint(ckpts["wobert"]).load_tokenizer()
    assert wobert.mode == "word" and wobert.hf.is_fast
    word = next(w for w in words if len(w) >= 2 and wobert.pieces(w)[0] == [w])  # jieba keeps it one word
    assert wobert.tokenize(word) == [word] and bert.tokenize(word) == list(word)
    assert wobert.tokenize("中华人民共和国成立了") == ["中华人民共和国", "成立", "了"]
    assert "中华人民共和国" in words and "氢氧化钠" not in words
    assert wobert.tokenize("氢氧化钠") == list("氢氧化钠")  # a word outside the vocab falls back to characters
    saved = wobert.save(ckpts["wobert"].parent / "wobert-tokenizer")  # what TransformerClassifier.save writes
    assert load_tokenizer(saved).tokenize("中华人民共和国成立了 Hello") == wobert.tokenize("中华人民共和国成立了 Hello")


@pytest.mark.parametrize("layout", ["bert-base-chinese", "roberta-wwm-ext-large", "tokenizer-json", "no-mlm-head", "wobert"])
def test_classifier_finetunes_each_layout(ckpts, tnews, layout):
    from zhnlp.tasks.classification import TransformerClassifier

    labels, rows = tnews
    folder = ckpts[layout]
    clf = TransformerClassifier.from_pretrained(folder, labels, seed=3, max_seq_len=32)
    assert type(clf.model).__name__ == "BertForSequenceClassification" and clf.model.config.num_labels == len(labels) == 15
    key = "embeddings.word_embeddings.weight" if layout == "no-mlm-head" else "bert.embeddings.word_embeddings.weight"
    assert torch.equal(clf.model.bert.embeddings.word_embeddings.weight, _tensor(folder, key))  # the checkpoint's weights, not random ones
    batch = clf._collator()([clf.encode(rows)[i] for i in range(len(rows))])
    assert batch["input_ids"].shape[0] == 8 and int(batch["input_ids"][0, 0]) == clf.tokenizer.cls_id
    optimizer = torch.optim.AdamW(clf.model.parameters(), lr=1e-3)
    clf.model.train()
    losses = []
    for _ in range(3):
        loss = clf.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    probs = clf.predict_proba(rows[:3])
    assert probs.shape == (3, 15) and abs(probs.sum() - 3) < 1e-6


def test_generation_heads_and_pretraining_load_original_layouts(ckpts):
    from zhnlp.models.decoding import load_model
    from zhnlp.models.unilm import BertCausalLM, BertUniLM
    from zhnlp.tasks import pretraining as pt

    for layout, head, cls in (("bert-base-chinese", "unilm", BertUniLM), ("roberta-wwm-ext-large", "causal", BertCausalLM)):
        folder = ckpts[layout]
        model = load_model(folder, "cpu", head=head)
        assert type(model) is cls and not model.training
        name = "cls.predictions.transform.LayerNorm.weight"
        assert torch.equal(model.state_dict()[name], _tensor(folder, name))
        assert (inspect_checkpoint(folder).mlm_head == "trained") == (layout == "bert-base-chinese")

    folder = ckpts["roberta-wwm-ext-large"]
    tokenizer = inspect_checkpoint(folder).load_tokenizer().hf
    with pytest.warns(UserWarning, match="capacity floor"):  # hidden 64 < 8.33 ln(21128): the tiny model is too narrow
        model, info = pt.build_model(tokenizer, None, init_from=folder)
    assert "resized_embeddings_from" not in info and model.config.model_type == "bert"
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, _tensor(folder, "bert.encoder.layer.0.attention.self.query.weight"))
