"""Progress bars (zhnlp.progress): when they are on, what they draw, and that they never change an output file."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import project_env
from shared_data import shared_data_dir
from test_encoding import char_tok, write_prepared  # noqa: F401  (a module fixture and its data)
from test_seq2seq import demo  # noqa: F401  (a module fixture: demo problems and a tiny backbone)
from test_train import head_examples, head_kwargs, tiny_bert

from zhnlp.errors import UserError
from zhnlp.progress import counter, enabled, progress, write
from zhnlp.tasks.dialogue import ChatSession, DialogueSettings, SamplingSettings, generate_replies
from zhnlp.tasks.seq2seq import ApeSettings, decode_equations, load_backbone
from zhnlp.text.encoding import EncodeConfig, encode_documents, iter_documents

ROOT = Path(__file__).resolve().parents[1]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ when bars are on


def test_the_env_var_forces_bars_on_or_off_and_rejects_other_values(monkeypatch):
    monkeypatch.setenv("ZHNLP_PROGRESS", "1")
    assert enabled()
    monkeypatch.setenv("ZHNLP_PROGRESS", "0")
    assert not enabled()
    items = [1, 2, 3]
    assert progress(items, "x") is items  # off: the iterable itself, no wrapper
    monkeypatch.setenv("ZHNLP_PROGRESS", "yes")
    with pytest.raises(UserError) as err:
        enabled()
    assert str(err.value).startswith("ZHNLP_PROGRESS: 'yes' is not allowed; use 1") and "\n" not in str(err.value)
    monkeypatch.delenv("ZHNLP_PROGRESS")
    assert not enabled()  # pytest captures stderr: not a terminal


def _enabled_in_a_child(stderr_tty: bool, value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ZHNLP_PROGRESS"} | ({"ZHNLP_PROGRESS": value} if value is not None else {})
    code = "from zhnlp.progress import enabled; print(enabled())"
    if not stderr_tty:
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=follower, text=True, check=True)
    finally:
        os.close(follower)
        os.close(leader)
    return done.stdout.strip()


def test_by_default_bars_follow_whether_stderr_is_a_terminal():
    assert _enabled_in_a_child(stderr_tty=True, value=None) == "True"  # a user's terminal
    assert _enabled_in_a_child(stderr_tty=False, value=None) == "False"  # the flow's captured logs, CI
    assert _enabled_in_a_child(stderr_tty=True, value="0") == "False"
    assert _enabled_in_a_child(stderr_tty=False, value="1") == "True"


def test_counter_counts_examples_and_can_be_turned_off(monkeypatch, capsys):
    monkeypatch.setenv("ZHNLP_PROGRESS", "1")
    with counter("decoding", total=10, unit="problems") as bar:
        bar.update(4)
        bar.update(6)
        write("a log line")  # above the bar, on its own line
    with counter("quiet", total=3, show=False) as bar:
        bar.update(3)
    out, err = capsys.readouterr()
    assert re.search(r"decoding: 100%.*\| 10/10 \[.* problems/s\]", err), err
    assert out == "a log line\n" and "quiet" not in err


# ------------------------------------------------------------------ the data stages: a bar, and the same bytes


def run_prepare(project: Path, flag: str) -> subprocess.CompletedProcess:
    env = project_env(project, DVC_ROOT=str(project), ZHNLP_PROGRESS=flag)
    env.pop("DVC_STAGE", None)
    return subprocess.run([sys.executable, "-m", "stages.prepare_ape210k"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.shared_data
def test_a_prepare_stage_draws_a_bar_and_writes_the_same_bytes(tmp_path):
    shared = shared_data_dir()
    params = {"ape210k": {"path": str(shared / "ape210k"), "splits": {"valid": "valid.ape.json"},
                          "carve": {"train": {"of": "valid", "share": 0.8}, "test": {"of": "valid", "share": 0.1}}}}
    outputs = {}
    for flag in ("1", "0"):
        project = tmp_path / f"progress-{flag}"
        project.mkdir()
        (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        done = run_prepare(project, flag)
        assert done.returncode == 0, done.stdout + done.stderr
        bars = re.findall(r"ape210k valid: (\d+) rows \[[\d:]+, [\d.?]+ rows/s\]", done.stderr)
        if flag == "1":
            assert bars and int(bars[-1]) > 4900, done.stderr  # the last draw counts every row read
        else:
            assert not bars and "\r" not in done.stderr, done.stderr
        outputs[flag] = files_of(project / "data") | files_of(project / "reports")
    assert outputs["1"] == outputs["0"] and "prepared/ape210k/train.parquet" in outputs["1"]


def test_encoding_draws_a_bar_and_writes_the_same_shards(tmp_path, char_tok, monkeypatch, capsys):  # noqa: F811
    prepared = tmp_path / "prepared"
    write_prepared(prepared, 300)
    config = EncodeConfig(max_seq_len=16, shard_rows=100, heldout_ratio=0.2, batch_docs=32)
    shards = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("ZHNLP_PROGRESS", flag)
        docs = (d for c in ("clue", "ape210k", "lccc") for d in iter_documents(prepared, c, "train"))
        stats = encode_documents(char_tok, docs, tmp_path / f"out-{flag}", config, desc="encode@char")
        err = capsys.readouterr().err
        drawn = re.findall(r"encode@char: (\d+) docs", err)
        assert (drawn[-1] == str(sum(stats["input_documents"].values()))) if flag == "1" else not drawn, err
        shards[flag] = files_of(tmp_path / f"out-{flag}")
    assert shards["1"] == shards["0"] and len(shards["1"]) > 3


# ------------------------------------------------------------------ decoding: one tick per example, same results


@pytest.mark.usefixtures("one_thread")
def test_beam_search_and_sampling_draw_bars_and_decode_the_same(demo, monkeypatch, capsys):  # noqa: F811
    rows, backbone = demo
    model, codec = load_backbone(backbone, seed=0, device="cpu")
    settings = ApeSettings(max_source_len=64, max_target_len=8, eval_batch_size=4)
    questions = [r["question"] for r in rows[:6]]
    dialogue = DialogueSettings(max_seq_len=48, eval_batch_size=2, sampling=SamplingSettings(top_k=5, max_new_tokens=4))
    contexts = [codec.encode_many([q]) for q in questions[:3]]
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("ZHNLP_PROGRESS", flag)
        equations, _ = decode_equations(model, codec, questions, num_beams=2, settings=settings)
        replies = generate_replies(model, codec, contexts, dialogue, torch.Generator().manual_seed(0))
        chat = ChatSession(model, codec, dialogue, seed=0).reply("你好")
        err = capsys.readouterr().err
        if flag == "1":
            assert re.search(r"beam search \(2 beams\): 100%.*\| 6/6 ", err), err
            assert re.search(r"sampling replies: 100%.*\| 3/3 ", err), err
            assert "0/1" not in err and "1/1" not in err, err  # no bar for a chat turn
        else:
            assert err == ""
        results[flag] = (equations, replies, chat)
    assert results["1"] == results["0"]


# ------------------------------------------------------------------ training: the Trainer's bar, log lines once


@pytest.mark.usefixtures("one_thread")
def test_training_shows_the_trainers_bar_and_each_log_once(tmp_path, monkeypatch, capsys):
    from transformers import PrinterCallback, ProgressCallback

    from zhnlp.tasks.generation import Collator
    from zhnlp.train.arguments import bar_without_log_lines, training_arguments
    from zhnlp.train.callbacks import LossHistory
    from zhnlp.train.heads import GenerationTrainer

    def trainer(flag: str, quiet: bool, rows: list):
        monkeypatch.setenv("ZHNLP_PROGRESS", flag)
        kwargs = head_kwargs(tmp_path / f"ck-{flag}-{quiet}")
        args = training_arguments(kwargs["config"], kwargs["checkpoints_dir"])
        assert args.disable_tqdm is (flag == "0")
        t = GenerationTrainer(model=tiny_bert(), args=args, train_dataset=head_examples(), data_collator=Collator(0),
                              callbacks=[LossHistory(rows.append)], mask_kind="unilm")
        t.remove_callback(PrinterCallback)  # as train_head does: its caller prints the log lines
        if quiet:
            bar_without_log_lines(t)
        return t

    rows: list = []
    noisy = trainer("1", quiet=False, rows=rows)
    assert any(type(c) is ProgressCallback for c in noisy.callback_handler.callbacks)
    noisy.train()
    out = capsys.readouterr()
    assert re.search(r"8/8 \[", out.err) and "'loss'" in out.out  # the stock bar also writes each log as a dict

    rows.clear()
    quiet = trainer("1", quiet=True, rows=rows)
    quiet.train()
    out = capsys.readouterr()
    assert re.search(r"100%.*\| 8/8 \[", out.err), out.err
    assert "'loss'" not in out.out + out.err and [r["step"] for r in rows] == [2, 4, 6, 8]  # the caller's lines only

    off = trainer("0", quiet=True, rows=[])
    assert not any(isinstance(c, (ProgressCallback, PrinterCallback)) for c in off.callback_handler.callbacks)
    off.train()
    out = capsys.readouterr()
    assert "8/8" not in out.err and "'loss'" not in out.out
