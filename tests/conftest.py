"""Shared fixtures: isolated project copies, and one Prefect test harness per session."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))  # tests/shared_data.py

# Keep every tool's state out of $HOME and off the network, for this process and its children.
_STATE = Path(tempfile.mkdtemp(prefix="zhnlp-tests-"))
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)
for key, value in {
    "PREFECT_HOME": str(_STATE / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_TRACKING_URI": f"sqlite:///{_STATE / 'mlflow.db'}",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": str(_STATE / "hf"),
    "TOKENIZERS_PARALLELISM": "false",
    # make test runs two test modules at a time. torch's OpenMP threads spin-wait by default, and a spinning
    # thread whose partner lost its core stalls: a tiny C3 finetune trained in 5.5 s on 2 quiet cores and in
    # 25.4 s beside one busy core; waiting passively, 7.0 s and 7.9 s. Same results: the thread count is unchanged.
    "OMP_WAIT_POLICY": "PASSIVE",
}.items():
    os.environ[key] = value
os.environ.pop("PREFECT_API_URL", None)


# The longest modules start first, so that under `make test`'s workers none of them starts last and runs alone
# (seconds on 2 cores: the e2e build 975 + 130, the real-sample CLUE DAG 430, the scale-out services 290).
LONG_MODULES = ("test_pipeline_e2e.py", "test_clue_real_data.py", "test_scale_out.py")


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def project_files() -> list[str]:
    """The files of this checkout a project copy needs: git-tracked or untracked but not ignored."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    skip = ("tests/", "benchmarks/", "data/", "models/")  # outputs are rebuilt, never copied
    return [f for f in out if f and (not f.startswith(skip) or f.endswith(".gitignore")) and (ROOT / f).is_file()]


def make_project(dest: Path) -> Path:
    """A fresh git + DVC project with this checkout's code, params, dvc.yaml and dvc.lock."""
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    git = ["git", "-c", "user.name=zhnlp-tests", "-c", "user.email=tests@zhnlp.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "project copy"], cwd=dest, check=True)
    return dest


def project_env(project: Path, **extra: str) -> dict:
    """Environment for stage subprocesses of a project copy: its own MLflow store and Prefect home."""
    bin_dir = str(Path(sys.executable).parent)
    return os.environ | {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "zhnlp-tests",
        "GIT_AUTHOR_EMAIL": "tests@zhnlp.invalid",
        "GIT_COMMITTER_NAME": "zhnlp-tests",
        "GIT_COMMITTER_EMAIL": "tests@zhnlp.invalid",
    } | extra


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def one_thread():
    """Tiny models: intra-op threads only add overhead, and spin badly on a shared, loaded CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
