"""Carving missing splits out of a shipped one (``ape210k.carve``, ``lccc.carve``): stable, exact, strict."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from shared_data import shared_data_dir

from zhnlp.config import ConfigError
from zhnlp.data.ape210k import ApeParams
from zhnlp.data.lccc import LcccParams
from zhnlp.data.split_carving import Carve, SplitRouter, parse_carves, stable_fraction

ROOT = Path(__file__).resolve().parents[1]


def test_routing_is_a_fixed_function_of_the_key_with_the_requested_shares():
    router = SplitRouter({"train": Carve("valid", 0.8), "test": Carve("valid", 0.1)})
    assert router.targets("valid") == ["valid", "train", "test"] and router.targets("train") == ["train"]
    keys = [f"problem-{i}" for i in range(20000)]
    first = [router.route("valid", k) for k in keys]
    assert first == [router.route("valid", k) for k in reversed(keys)][::-1]  # order does not matter
    shares = {s: first.count(s) / len(keys) for s in ("train", "test", "valid")}
    assert shares["train"] == pytest.approx(0.8, abs=0.01) and shares["test"] == pytest.approx(0.1, abs=0.01)
    assert router.route("train", "anything") == "train"  # a split nothing is carved from keeps its rows
    # the hash is blake2b of salt + key, so any machine and Python version agree
    expected = int.from_bytes(hashlib.blake2b(b"carve:problem-7", digest_size=8).digest(), "big") / 2**64
    assert stable_fraction("problem-7", "carve:") == expected


@pytest.mark.parametrize(
    ("carve", "message"),
    [
        ({"test": {"of": "dev", "share": 0.1}}, "ape210k.carve.test.of: 'dev' is not allowed; use one of the shipped splits valid"),
        ({"valid": {"of": "valid", "share": 0.1}}, "ape210k.carve.valid: 'valid' is already a shipped split"),
        ({"test": {"of": "valid", "share": 0.0}}, "ape210k.carve.test.share: 0.0 is not allowed; use a number in (0, 1)"),
        ({"a": {"of": "valid", "share": 0.6}, "b": {"of": "valid", "share": 0.4}}, "ape210k.carve: the shares carved out of 'valid' sum to 1; keep them below 1"),
        ({"test": {"of": "valid", "ratio": 0.1}}, "ape210k.carve.test: unknown key 'ratio'"),
        ({"te st": {"of": "valid", "share": 0.1}}, "ape210k.carve: name 'te st' is not allowed"),
    ],
)
def test_bad_carves_are_one_line_errors(carve, message):
    with pytest.raises(ConfigError) as err:
        ApeParams.from_params({"path": "x", "splits": {"valid": "valid.ape.json"}, "carve": carve})
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    cfg = LcccParams.from_params({"path": "x", "splits": {"valid": {"file": "v.txt"}}, "carve": {"test": {"of": "valid", "share": 0.5}}})
    assert cfg.carve == {"test": Carve("valid", 0.5)} and parse_carves(None, ["valid"], "x") == {}


def run_prepare(project: Path, stage: str) -> subprocess.CompletedProcess:
    env = os.environ | {"DVC_ROOT": str(project), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}"}
    env.pop("DVC_STAGE", None)
    return subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.shared_data
def test_the_real_samples_get_every_split_a_training_stage_needs(tmp_path):
    """The Ape210K sample ships only valid and the LCCC toy files no test: carving completes both, bit for bit."""
    shared = shared_data_dir()
    params = {
        "ape210k": {"path": str(shared / "ape210k"), "splits": {"valid": "valid.ape.json"},
                    "carve": {"train": {"of": "valid", "share": 0.8}, "test": {"of": "valid", "share": 0.1}}},
        "lccc": {"path": str(shared / "lccc"), "splits": {"train": {"file": "toy_train.txt"}, "valid": {"file": "toy_valid.txt"}},
                 "carve": {"test": {"of": "valid", "share": 0.5}}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    digests = []
    for attempt in range(2):
        for stage in ("prepare_ape210k", "prepare_lccc"):
            done = run_prepare(tmp_path, stage)
            assert done.returncode == 0, done.stderr[-2000:]
        ape, lccc = tmp_path / "data" / "prepared" / "ape210k", tmp_path / "data" / "prepared" / "lccc"
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in [*ape.glob("*.parquet"), *lccc.glob("*.parquet")]})
    assert digests[0] == digests[1], "carved splits must be bitwise reproducible"
    ape_ids = {s: pq.read_table(ape / f"{s}.parquet").column("id").to_pylist() for s in ("train", "valid", "test")}
    kept = json.loads((tmp_path / "reports" / "prepare_ape210k" / "metrics.json").read_text())
    total = sum(len(v) for v in ape_ids.values())
    assert total == sum(kept[s]["rows"] for s in ape_ids) > 4000  # every kept problem lands in exactly one split
    assert len(set().union(*map(set, ape_ids.values()))) == total
    assert 0.77 < len(ape_ids["train"]) / total < 0.83 and 0.07 < len(ape_ids["test"]) / total < 0.13
    dialogues = {s: pq.read_table(lccc / f"{s}.parquet").num_rows for s in ("train", "valid", "test")}
    assert dialogues["train"] > 9000 and 0.4 < dialogues["test"] / (dialogues["test"] + dialogues["valid"]) < 0.6
