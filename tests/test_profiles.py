"""Data profiles (profiles/*.yaml, ``python -m profiles NAME``): one command switches params.yaml between
the demo corpora and the real samples, exactly and reversibly, keeping params.yaml's comments."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from shared_data import shared_data_dir

from profiles import available, load_profile
from stages.common.params import select
from zhnlp.config import from_params
from zhnlp.data.ape210k import ApeParams
from zhnlp.data.clue import ClueParams, split_paths
from zhnlp.data.lccc import LcccParams
from zhnlp.data.unlabeled_text import TextSource

ROOT = Path(__file__).resolve().parents[1]


def switch(name: str, params: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiles", name, str(params)], cwd=ROOT, capture_output=True, text=True)


def test_the_shipped_params_are_the_demo_profile_and_every_profile_sets_the_same_keys():
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    demo = load_profile("demo")
    assert {"demo", "real"} <= set(available())
    assert all(set(load_profile(name)) == set(demo) for name in available())
    assert {key: select(params, key) for key in demo} == demo


def test_switching_to_real_and_back_is_exact_and_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    original = yaml.safe_load(params.read_text(encoding="utf-8"))
    done = switch("real", params)
    assert done.returncode == 0 and "set clue.path, clue.tasks" in done.stdout, done.stderr
    real = yaml.safe_load(params.read_text(encoding="utf-8"))
    assert all(select(real, k) == v for k, v in load_profile("real").items())
    untouched = {k: v for k, v in original.items() if k not in {key.split(".")[0] for key in load_profile("real")}}
    assert all(real[k] == v for k, v in untouched.items())
    assert switch("real", params).stdout.strip().endswith("already uses it")
    assert switch("demo", params).returncode == 0
    assert yaml.safe_load(params.read_text(encoding="utf-8")) == original
    text = params.read_text(encoding="utf-8")
    assert "# One section per stage family" in text and "# new splits cut from a shipped one" in text
    assert '  cron: "0 3 * * *"' in text and "sampling: {top_k: 5" in text  # lines it did not set are left as written


def test_an_unknown_profile_or_key_is_one_line(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("clue: {path: x}\n", encoding="utf-8")
    done = switch("nope", params)
    assert done.returncode == 2 and done.stderr == "error: profile: no profile 'nope'; defined: demo, real\n"
    done = switch("real", params)
    assert done.returncode == 2 and done.stderr.startswith("error: profile key 'ape210k.path': params.yaml has no 'ape210k'")
    assert params.read_text(encoding="utf-8") == "clue: {path: x}\n"  # nothing written on an error
    (tmp_path / "broken.yaml").write_text("clue: [\n", encoding="utf-8")
    done = switch("real", tmp_path / "broken.yaml")
    assert done.returncode == 2 and done.stderr.startswith(f"error: {tmp_path / 'broken.yaml'}: not valid YAML") and done.stderr.count("\n") == 1
    done = switch("real", tmp_path / "nope.yaml")
    assert done.returncode == 2 and done.stderr == f"error: profile: no params file at {tmp_path / 'nope.yaml'}\n", done.stderr


def test_the_real_profile_reads_files_that_exist_under_the_strict_params():
    shared = shared_data_dir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    for key, value in load_profile("real").items():
        *parents, leaf = key.split(".")
        (select(params, ".".join(parents)) if parents else params)[leaf] = value
    clue = ClueParams.from_params(params["clue"])
    for task in clue.tasks:
        spec = clue.task(task)
        files = split_paths(ROOT / clue.path / spec.dir, spec, clue.layouts)
        assert {"train", "dev"} <= set(files) | set(spec.carve), task
    ape, lccc = ApeParams.from_params(params["ape210k"]), LcccParams.from_params(params["lccc"])
    assert set(ape.splits) | set(ape.carve) == {"train", "valid", "test"} == set(lccc.splits) | set(lccc.carve)
    assert all((ROOT / ape.path / f).is_file() for f in ape.splits.values())
    assert all((ROOT / lccc.path / s.file).is_file() for s in lccc.splits.values())
    for name, entry in params["pretrain_text"].items():
        source = from_params(TextSource, entry, f"pretrain_text.{name}")
        assert (ROOT / source.path).resolve() == (shared / "clue" / "tnews" / "unlabeled.json").resolve()
