"""Strict params for the `downloads`, `tokenizer`, `encode` and `flow` sections: one-line errors, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from zhnlp.config import ConfigError
from zhnlp.data.download import download_specs
from zhnlp.text.encoding import EncodeConfig
from zhnlp.flow_settings import FlowSettings, flow_settings
from zhnlp.text.tokenizer_settings import CharTokenizerSettings, PretrainedTokenizerSettings, WordTokenizerSettings, tokenizer_settings

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))


def test_the_shipped_params_pass():
    for name, entry in PARAMS["tokenizer"].items():
        assert isinstance(tokenizer_settings(entry, f"tokenizer.{name}"), (CharTokenizerSettings, WordTokenizerSettings))
    assert EncodeConfig.from_params(PARAMS["encode"]).max_seq_len == PARAMS["encode"]["max_seq_len"]
    assert flow_settings(PARAMS["flow"]) == FlowSettings(**PARAMS["flow"])
    for name, entry in PARAMS["downloads"].items():
        download_specs(entry, f"downloads.{name}")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"mode": "bpe"}, "tokenizer.x.mode: 'bpe' is not allowed; use one of char, word, pretrained"),
        ({"vocab_size": 100}, "tokenizer.x.mode: None is not allowed; use one of char, word, pretrained"),
        ({"mode": "char", "vocab_size": 100, "words": 10}, "tokenizer.x: unknown key 'words'; allowed keys: lowercase, min_frequency, mode, vocab_size"),
        ({"mode": "char"}, "tokenizer.x: missing required key 'vocab_size'"),
        ({"mode": "char", "vocab_size": 5}, "tokenizer.x.vocab_size: 5 is not allowed; use a number in [6, 10000000]"),
        ({"mode": "word", "vocab_size": 100, "lowercase": "yes"}, "tokenizer.x.lowercase: 'yes' is not allowed; expected bool"),
        ({"mode": "word", "vocab_size": 100, "min_word_frequency": 0}, "tokenizer.x.min_word_frequency: 0 is not allowed; use a number in [1, 2147483648]"),
        ({"mode": "pretrained", "path": "/x", "vocab_size": 100}, "tokenizer.x: unknown key 'vocab_size'; allowed keys: mode, path"),
        ({"mode": "pretrained", "path": " "}, "tokenizer.x.path: ' ' is not allowed; name a local checkpoint directory"),
        ("char", "tokenizer.x: expected a mapping of keys to values, got 'char'"),
    ],
)
def test_tokenizer_entries_are_strict_per_mode(entry, message):
    with pytest.raises(ConfigError) as err:
        tokenizer_settings(entry, "tokenizer.x")
    assert str(err.value) == message


def test_tokenizer_settings_keep_the_defaults_build_tokenizer_used():
    assert tokenizer_settings({"mode": "word", "vocab_size": 100}, "t") == WordTokenizerSettings("word", 100, 2, True, 20000, 1)
    assert tokenizer_settings({"mode": "pretrained", "path": "/ckpt"}, "t") == PretrainedTokenizerSettings("pretrained", "/ckpt")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shard_row": 10}, "encode: unknown key 'shard_row'; allowed keys: heldout_ratio, max_seq_len, shard_rows, word_boundaries"),
        ({"extra_text": []}, "encode: unknown key 'extra_text'"),  # unlabelled text is pretrain_text.<name> now
        ({"batch_docs": 10}, "encode: unknown key 'batch_docs'"),
        ({"max_seq_len": 2}, "encode.max_seq_len: 2 is not allowed; use a number in [3, 1048576]"),
        ({"heldout_ratio": 1.0}, "encode.heldout_ratio: 1.0 is not allowed; use a number in [0.0, 1.0)"),
        ({"word_boundaries": "true"}, "encode.word_boundaries: 'true' is not allowed; expected bool"),
    ],
)
def test_encode_section_is_strict(change, message):
    with pytest.raises(ConfigError) as err:
        EncodeConfig.from_params(PARAMS["encode"] | change)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_pretrain_text_entries_are_strict():
    from zhnlp.config import from_params
    from zhnlp.data.unlabeled_text import TextSource

    assert from_params(TextSource, {"path": "a.json", "field": "s"}, "pretrain_text.a") == TextSource("a.json", "s")
    for entry, message in (
        ({"path": "a.json"}, "pretrain_text.a: missing required key 'field'"),
        ({"path": "a.json", "field": "s", "nmae": "x"}, "pretrain_text.a: unknown key 'nmae'; allowed keys: field, max_bad_ratio, on_bad_rows, path"),
        ({"path": "a.json", "field": "s", "on_bad_rows": "Skip"}, "pretrain_text.a.on_bad_rows: 'Skip' is not allowed; use one of fail, skip"),
    ):
        with pytest.raises(ConfigError) as err:
            from_params(TextSource, entry, "pretrain_text.a")
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    cfg = EncodeConfig.from_params({})
    assert (cfg.batch_docs, cfg.flush_rows) == (EncodeConfig.batch_docs, EncodeConfig.flush_rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_worker": 2}, "flow: unknown key 'max_worker'; allowed keys: cron, deployment, dvc_remote, executor, max_workers, pools, resources, retries, retry_delay_seconds, slots, torchrun, worker_lost_seconds"),
        ({"max_workers": 0}, "flow.max_workers: 0 is not allowed; use a number in [1, 256]"),
        ({"retries": -1}, "flow.retries: -1 is not allowed; use a number in [0, 100]"),
        ({"retry_delay_seconds": "10s"}, "flow.retry_delay_seconds: '10s' is not allowed; expected float"),
        ({"cron": "0 3 * *"}, "flow.cron: '0 3 * *' is not allowed; use five cron fields, e.g. '0 3 * * *'"),
        ({"cron": "0 3 * * *; rm -rf /"}, "flow.cron: '0 3 * * *; rm -rf /' is not allowed"),
        ({"deployment": "nightly run"}, "flow.deployment: name 'nightly run' is not allowed"),
        ({"executor": "dask"}, "flow.executor: 'dask' is not allowed; use one of local, pools"),
        ({"resources": {"pretrain": "tpu"}}, "flow.resources.pretrain: 'tpu' is not allowed; use one of cpu, gpu"),
        ({"pools": {"gpu": "zhnlp-gpu"}, "resources": {}, "slots": {}}, "flow.pools: needs a 'cpu' entry"),
        ({"pools": {"cpu": "my pool", "gpu": "zhnlp-gpu"}}, "flow.pools.cpu: name 'my pool' is not allowed"),
        ({"slots": {"gpu": 0}}, "flow.slots.gpu: 0 is not allowed; use a whole number of stages from 1 to 4096"),
        ({"dvc_remote": "s3://bucket"}, "flow.dvc_remote: name 's3://bucket' is not allowed"),
        ({"worker_lost_seconds": 1}, "flow.worker_lost_seconds: 1.0 is not allowed; use a number in [5.0, 86400.0]"),
    ],
)
def test_flow_section_is_strict(change, message):
    """Each mistake is one line naming the key and what is allowed (scale-out keys included)."""
    with pytest.raises(ConfigError) as err:
        flow_settings(PARAMS["flow"] | change)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("stage", "section", "message"),
    [
        ("tokenizer", {"tokenizer": {"char": {"mode": "char", "vocab_sizee": 10}}}, "error: tokenizer.char: unknown key 'vocab_sizee'; allowed keys: lowercase, min_frequency, mode, vocab_size"),
        ("encode", {"tokenizer": {"char": {}}, "encode": {"shard_row": 1}, "pretrain_text": {}}, "error: encode: unknown key 'shard_row'"),
        ("encode", {"tokenizer": {"char": {}}, "encode": {}}, "error: params.yaml has no key 'pretrain_text' (missing 'pretrain_text')"),
        ("download", {"downloads": {"char": {"f": {"url": "ftp://h/f", "sha256": "0" * 64}}}}, "error: downloads.char.f.url: 'ftp://h/f' is not allowed; only http(s) URLs"),
        ("download", {"downloads": {}}, "error: downloads: no entry 'char'; defined: none"),
    ],
)
def test_stage_programs_report_params_mistakes_in_one_line(tmp_path, stage, section, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(section), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | {"DVC_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", "char"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(message) and proc.stderr.count("\n") == 1, proc.stderr


def test_the_flow_reports_params_mistakes_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"flow": {"max_worker": 2}}), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.pipeline", "--project-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == "error: flow: unknown key 'max_worker'; allowed keys: cron, deployment, dvc_remote, executor, max_workers, pools, resources, retries, retry_delay_seconds, slots, torchrun, worker_lost_seconds"


def test_stages_map_to_pools_by_their_own_entry_then_their_stage_then_cpu():
    settings = flow_settings(PARAMS["flow"] | {"resources": {"pretrain": "gpu", "finetune_clue@char-tnews": "cpu", "finetune_clue": "gpu"}})
    assert settings.pool("pretrain@char") == settings.pools["gpu"]
    assert settings.pool("finetune_clue@word-afqmc") == settings.pools["gpu"]
    assert settings.pool("finetune_clue@char-tnews") == settings.pools["cpu"]
    assert settings.pool("prepare_clue@afqmc") == settings.pools["cpu"]
