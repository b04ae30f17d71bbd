"""zhnlp.train: strict training params, the one TrainingArguments path, resume bookkeeping, damaged checkpoints.

Real torch/transformers: fake checkpoints are written with the real file formats (safetensors,
torch zip archives, JSON), and the resume tests train a tiny BERT head with the real Trainer.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zhnlp.tasks.classification import ClassifierTraining
from zhnlp.config import ConfigError, from_params
from zhnlp.tasks.dialogue import DialogueSettings
from zhnlp.tasks.generation import Example
from zhnlp.tasks.pretraining import PretrainTraining
from zhnlp.tasks.seq2seq import ApeSettings
from zhnlp.train.arguments import TrainingSettings, training_arguments
from zhnlp.train.callbacks import eval_curve, loss_curve
from zhnlp.train.checkpoints import checkpoint_problem, last_complete_checkpoint, load_weights
from zhnlp.train.heads import train_head
from zhnlp.train.resume import SIGNATURE_FILE, files_identity, prepare_checkpoint_dir, run_signature

EOS = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------ strict params


@pytest.mark.parametrize(
    ("cls", "where", "entry", "message"),
    [
        (ApeSettings, "finetune_ape210k", {"lerning_rate": 1e-3}, "finetune_ape210k: unknown key 'lerning_rate'; allowed keys: adam_beta1,"),
        (DialogueSettings, "finetune_lccc", {"lerning_rate": 1e-3}, "finetune_lccc: unknown key 'lerning_rate'; allowed keys: adam_beta1,"),
        (DialogueSettings, "finetune_lccc", {"loss_on": "everything"}, "finetune_lccc.loss_on: 'everything' is not allowed; use one of all_turns, last_response"),
        (DialogueSettings, "finetune_lccc", {"sampling": {"topk": 3}}, "finetune_lccc.sampling: unknown key 'topk'"),
        (ApeSettings, "finetune_ape210k", {"beams": [1, 0]}, "finetune_ape210k.beams: [1, 0] is not allowed"),
        (ApeSettings, "finetune_ape210k", {"per_device_train_batch_size": "32"}, "finetune_ape210k.per_device_train_batch_size: '32' is not allowed; expected int"),
        (ApeSettings, "finetune_ape210k", {"warmup_ratio": 1.0}, "finetune_ape210k.warmup_ratio: 1.0 is not allowed; use a number in [0.0, 1.0)"),
        (ClassifierTraining, "finetune.recipes.tiny-cpu", {"num_epochs": 3}, "finetune.recipes.tiny-cpu: unknown key 'num_epochs'"),
        (PretrainTraining, "pretrain.training", {"max_steps": 5}, "pretrain.training: missing required key"),
    ],
)
def test_every_training_section_is_strict(cls, where, entry, message):
    with pytest.raises(ConfigError) as err:
        from_params(cls, entry, where)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_params_sections_of_params_yaml_parse():
    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text(encoding="utf-8"))
    ape = from_params(ApeSettings, params["finetune_ape210k"], "finetune_ape210k")
    lccc = from_params(DialogueSettings, params["finetune_lccc"], "finetune_lccc")
    assert ape.backbone == "models/pretrain/char" and ape.save_steps == params["finetune_ape210k"]["save_steps"] and ape.beams == [1, 3]
    assert lccc.sampling.top_k == params["finetune_lccc"]["sampling"]["top_k"] and lccc.loss_on in ("all_turns", "last_response")
    recipes = params["finetune"]["recipes"]
    assert {params["finetune"]["recipe"], params["finetune"]["checkpoint_recipe"]} <= set(recipes)
    for name, recipe in recipes.items():
        clue = ClassifierTraining.from_params(recipe, {"num_train_epochs": 20}, "cluewsc", f"finetune.recipes.{name}")
        assert clue.num_train_epochs == 20 and clue.learning_rate == recipe["learning_rate"]
    assert recipes["clue-base"]["learning_rate"] == 2e-5 and recipes["clue-base"]["per_device_train_batch_size"] == 32  # the published base recipe
    with pytest.raises(ConfigError, match=r"^finetune.overrides.cluewsc: unknown key 'epochs'"):
        ClassifierTraining.from_params(recipes["tiny-cpu"], {"epochs": 20}, "cluewsc")
    assert from_params(PretrainTraining, params["pretrain"]["training"], "pretrain.training").max_steps > 0


def test_training_arguments_follow_params(tmp_path):
    training = {
        "max_steps": 300, "per_device_train_batch_size": 32, "gradient_accumulation_steps": 2, "learning_rate": 5e-4,
        "weight_decay": 0.01, "warmup_ratio": 0.1, "save_steps": 100, "logging_steps": 20, "eval_steps": 50, "seed": 42,
    }
    settings = from_params(PretrainTraining, training, "pretrain.training")
    args = training_arguments(settings, tmp_path, report_to=["mlflow"], evaluate=True, eval_steps=settings.eval_steps)
    assert args.optim == "adamw_torch" and args.lr_scheduler_type == "linear" and args.weight_decay == 0.01
    assert args.get_warmup_steps(300) == 30 and args.gradient_accumulation_steps == 2
    assert args.save_steps == 100 and args.save_total_limit == 2 and args.eval_steps == 50 and args.logging_steps == 20
    assert args.report_to == ["mlflow"] and args.seed == 42 and args.eval_strategy == "steps"
    if not torch.cuda.is_available():
        assert args.use_cpu and not args.bf16 and args.dataloader_num_workers == 0
    with pytest.raises(ValueError, match="warmup_ratio"):
        from_params(PretrainTraining, training | {"warmup_ratio": 1.5}, "pretrain.training")
    per_epoch = training_arguments(ClassifierTraining(num_train_epochs=3), tmp_path, schedule="epoch", evaluate=True)
    assert per_epoch.save_strategy == per_epoch.eval_strategy == per_epoch.logging_strategy == "epoch"
    assert per_epoch.num_train_epochs == 3 and per_epoch.per_device_eval_batch_size == 64 and per_epoch.optim == "adamw_torch"
    assert TrainingSettings(save_steps=5).identity() == TrainingSettings(save_steps=7, logging_steps=3).identity()
    assert TrainingSettings(learning_rate=1).identity() != TrainingSettings().identity()


def test_loss_curves_keep_one_shape_per_file():
    history = [{"loss": 3.0, "step": 10}, {"loss": 2.5, "step": 20}, {"eval_loss": 2.7, "step": 20}, {"train_loss": 2.7, "step": 20}]
    assert loss_curve(history) == [{"step": 10, "loss": 3.0}, {"step": 20, "loss": 2.5}]
    assert eval_curve(history) == [{"step": 20, "eval_loss": 2.7}]


# ------------------------------------------------------------------ resume bookkeeping


def _fake_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    """A checkpoint folder with the Trainer's files in their real formats (tiny contents)."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(path / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"step": step}, path / name)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 100}), encoding="utf-8")
    return path


def test_checkpoint_dir_resumes_only_on_a_matching_signature(tmp_path):
    folder = tmp_path / "ckpt"
    sig = run_signature({"params": {"lr": 1e-3}})
    first = prepare_checkpoint_dir(folder, sig, {"params": {"lr": 1e-3}})
    assert not first.resumed and first.reason == "fresh start (no checkpoint)"
    assert json.loads((folder / SIGNATURE_FILE).read_text())["signature"] == sig
    _fake_checkpoint(folder, 10)
    _fake_checkpoint(folder, 20)
    _fake_checkpoint(folder, 30, complete=False)  # killed while saving
    other_rank = prepare_checkpoint_dir(folder, sig, {}, is_main=False)
    assert other_rank.step == 20 and (folder / "checkpoint-30").exists(), "only the main process tidies"
    again = prepare_checkpoint_dir(folder, sig, {})
    assert again.resumed and again.checkpoint == folder / "checkpoint-20" and again.step == 20
    assert "checkpoint-30: trainer_state.json missing" in again.reason
    assert not (folder / "checkpoint-30").exists(), "the incomplete checkpoint is removed"
    changed = run_signature({"params": {"lr": 2e-3}})
    assert changed != sig
    fresh = prepare_checkpoint_dir(folder, changed, {"params": {"lr": 2e-3}})
    assert not fresh.resumed and fresh.wiped and "other params" in fresh.reason
    assert sorted(p.name for p in folder.iterdir()) == [SIGNATURE_FILE]
    assert last_complete_checkpoint(folder) is None


@pytest.mark.parametrize("damage", ["truncate-weights", "empty-weights", "truncate-optimizer", "bad-state"])
def test_a_damaged_newest_checkpoint_is_skipped_with_its_reason(tmp_path, damage):
    folder = tmp_path / "ckpt"
    sig = run_signature({"run": 1})
    prepare_checkpoint_dir(folder, sig, {"run": 1})
    _fake_checkpoint(folder, 10)
    newest = _fake_checkpoint(folder, 20)
    target = {"truncate-weights": "model.safetensors", "empty-weights": "model.safetensors", "truncate-optimizer": "optimizer.pt", "bad-state": "trainer_state.json"}[damage]
    data = (newest / target).read_bytes()
    (newest / target).write_bytes(b"" if damage == "empty-weights" else data[: len(data) // 2])
    assert checkpoint_problem(newest).startswith(f"{target} is damaged")
    decision = prepare_checkpoint_dir(folder, sig, {})
    assert decision.checkpoint == folder / "checkpoint-10" and decision.skipped[0].startswith(f"checkpoint-20: {target} is damaged")
    assert f"skipped checkpoint-20: {target} is damaged" in decision.reason and not newest.exists()


def test_files_identity_follows_content(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"1")
    (tmp_path / "b.parquet").write_bytes(b"2")
    before = files_identity(tmp_path)
    (tmp_path / "b.parquet").write_bytes(b"3")
    assert files_identity(tmp_path) != before
    assert files_identity(tmp_path, [tmp_path / "a.parquet"]) != files_identity(tmp_path)


# ------------------------------------------------------------------ real training: resume, finished runs, damaged checkpoints


def tiny_bert(seed: int = 0, vocab: int = 40):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32, type_vocab_size=2, initializer_range=0.02)
    return BertForMaskedLM(config).eval()


def head_examples() -> list[Example]:
    torch.manual_seed(0)
    examples = []
    for _ in range(24):
        src = torch.randint(5, 40, (int(torch.randint(2, 6, ())),)).tolist()
        tgt = torch.randint(5, 40, (int(torch.randint(1, 4, ())),)).tolist() + [EOS]
        examples.append(Example([2, *src, EOS, *tgt], [0] * (len(src) + 2) + [1] * len(tgt), [-100] * (len(src) + 2) + tgt))
    return examples


def head_kwargs(folder: Path, run: int = 1) -> dict:
    config = TrainingSettings(per_device_train_batch_size=4, max_steps=8, save_steps=4, logging_steps=2, learning_rate=3e-3, seed=0)
    return dict(mask_kind="unilm", pad_id=0, config=config, checkpoints_dir=folder, components={"run": run})


def test_train_head_resumes_mid_run_and_recognises_a_finished_run(tmp_path):
    examples, base, kwargs = head_examples(), tiny_bert(), head_kwargs(tmp_path / "ck")

    full_model = copy.deepcopy(base)
    full = train_head(full_model, examples, **kwargs)
    assert full.steps == 8 and full.resumed_from is None and [r["step"] for r in full.history] == [2, 4, 6, 8]

    shutil.rmtree(tmp_path / "ck" / "checkpoint-8")  # as if killed after step 4's checkpoint
    resumed_model = copy.deepcopy(base)
    resumed = train_head(resumed_model, examples, **kwargs)
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.steps == 8
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-4)
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)

    done_model = copy.deepcopy(base)
    done = train_head(done_model, examples, **kwargs)  # checkpoint-8 is the end: nothing to train
    assert done.resumed_from.endswith("checkpoint-8") and done.steps == 8 and "complete" in done.resume_reason
    assert done.summary() == resumed.summary(), "metrics.json figures do not depend on how the run got there"
    for a, b in zip(resumed_model.parameters(), done_model.parameters()):
        assert torch.allclose(a, b)

    fresh = train_head(copy.deepcopy(base), examples, **(kwargs | {"components": {"run": 2}}))
    assert fresh.resumed_from is None and fresh.resume_reason.startswith("fresh start")


def test_truncated_newest_checkpoint_resumes_from_the_previous_one(tmp_path):
    """issue 8: a cut-short model.safetensors (SafetensorError) no longer wedges every rerun."""
    examples, base, kwargs = head_examples(), tiny_bert(), head_kwargs(tmp_path / "ck")
    full_model = copy.deepcopy(base)
    full = train_head(full_model, examples, **kwargs)
    weights = tmp_path / "ck" / "checkpoint-8" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])  # a disk that filled up while saving

    resumed_model = copy.deepcopy(base)
    resumed = train_head(resumed_model, examples, **kwargs)
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.steps == 8
    assert "skipped checkpoint-8: model.safetensors is damaged" in resumed.resume_reason
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-4)
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
    assert checkpoint_problem(tmp_path / "ck" / "checkpoint-8") is None, "the new checkpoint-8 is whole"


def test_finished_checkpoint_loader_keeps_tied_weights_and_rejects_foreign_ones(tmp_path):
    model = tiny_bert(seed=1)
    model.save_pretrained(tmp_path / "ck")  # tied decoder weights are stored once
    other = tiny_bert(seed=2)
    load_weights(other, tmp_path / "ck")
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert other.cls.predictions.decoder.weight.data_ptr() == other.bert.embeddings.word_embeddings.weight.data_ptr()
    with pytest.raises(ValueError, match="weights do not fit the model"):
        load_weights(tiny_bert(vocab=50), tmp_path / "ck")
