"""No params text reaches a shell: dvc.yaml commands carry none, stages learn their item from DVC_STAGE.

A hostile name (``a;touch INJECTED;echo``) under a foreach section used to run ``touch`` under
``dvc repro``; now the command is fixed text, and the stage stops with one ``error:`` line
naming the bad name (zhnlp.config.check_name).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, make_project, project_env

HOSTILE = "a;touch INJECTED;echo"


def raw_stage_cmds() -> dict[str, str]:
    """Every stage's ``cmd`` as written in dvc.yaml, before DVC interpolates anything."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, body in stages.items():
        cmd = (body.get("do") or body)["cmd"]
        out[name] = " && ".join(cmd) if isinstance(cmd, list) else cmd
    return out


@pytest.mark.parametrize(("stage", "cmd"), sorted(raw_stage_cmds().items()))
def test_stage_commands_carry_no_params_text(stage, cmd):
    assert "${" not in cmd, f"{stage}: {cmd!r} interpolates params into a shell command; read DVC_STAGE (stages.common.stage_item)"


def write_params(project: Path, **sections) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params.update(sections)
    path.write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stdout + proc.stderr
    return errors[0]


@pytest.mark.slow
def test_hostile_names_never_reach_the_shell_under_dvc_repro(tmp_path):
    project = make_project(tmp_path / "project")
    write_params(
        project,
        downloads={HOSTILE: {"f.txt": {"url": "http://127.0.0.1:9/f.txt", "sha256": "0" * 64}}},
        tokenizer={HOSTILE: {"mode": "char", "vocab_size": 100}},
    )
    for corpus in ("clue", "ape210k", "lccc"):  # the tokenizer stage's deps; never read
        (project / "data" / "prepared" / corpus).mkdir(parents=True, exist_ok=True)
    env = project_env(project)
    for stage in (f"download@{HOSTILE}", f"tokenizer@{HOSTILE}"):
        proc = subprocess.run(["dvc", "repro", "--single-item", stage], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        assert f"Running stage '{stage}'" in proc.stdout, proc.stdout + proc.stderr
        assert not (project / "INJECTED").exists(), f"{stage}: the injected command ran"
        section = stage.split("@")[0].replace("download", "downloads")
        assert one_error_line(proc) == (
            f"error: {section}: name {HOSTILE!r} is not allowed; use 1-64 letters, digits, '_', '-' or '.' (not first)"
        )
    # by hand the name is one argv entry (no shell), and is refused the same way
    proc = subprocess.run([sys.executable, "-m", "stages.download", HOSTILE], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and one_error_line(proc).startswith(f"error: downloads: name {HOSTILE!r} is not allowed")
    # names DVC cannot even look up never run anything either
    for key in ("a/../../x", "."):
        write_params(project, downloads={key: {"f.txt": {"url": "http://127.0.0.1:9/f.txt", "sha256": "0" * 64}}})
        proc = subprocess.run(["dvc", "repro", f"download@{key}"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0 and "Running stage" not in proc.stdout, proc.stdout + proc.stderr
        proc = subprocess.run([sys.executable, "-m", "stages.download", key], cwd=project, env=env, capture_output=True, text=True)
        assert proc.returncode == 2 and one_error_line(proc).startswith(f"error: downloads: name {key!r} is not allowed")
    assert not (project / "x").exists() and not (project / "INJECTED").exists()


ITEM = """
import sys
from stages.common import stage_item
from zhnlp.errors import UserError
try:
    print(stage_item({"finetune_clue": ("finetune.models", "clue.tasks"), "finetune_baseline": ("finetune.baselines", "clue.tasks")}))
except UserError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def resolve_item(tmp_path: Path, dvc_stage: str | None, *argv: str) -> subprocess.CompletedProcess:
    params = {
        "finetune": {"models": ["char", "a", "a-b"], "baselines": ["tfidf"]},
        "clue": {"tasks": {"tnews": {}, "b-c": {}, "c": {}, "x;id": {}}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DVC_STAGE"} | {"DVC_ROOT": str(tmp_path)}
    if dvc_stage is not None:
        env["DVC_STAGE"] = dvc_stage
    return subprocess.run([sys.executable, "-c", ITEM, *argv], cwd=ROOT, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("dvc_stage", "argv", "expected"),
    [
        ("finetune_clue@char-tnews", (), "('char', 'tnews')"),
        ("finetune_baseline@tfidf-b-c", (), "('tfidf', 'b-c')"),
        (None, ("char", "tnews"), "('char', 'tnews')"),
        ("finetune_clue@a-b-c", (), "error: stage finetune_clue@a-b-c: 'a-b-c' is ambiguous (('a', 'b-c') or ('a-b', 'c')); rename entries so no '-' split repeats"),
        ("finetune_clue@char-nope", (), "error: stage finetune_clue@char-nope: 'char-nope' matches no entry of finetune.models, clue.tasks"),
        ("finetune_clue@char-x;id", (), "error: clue.tasks: name 'x;id' is not allowed; use 1-64 letters, digits, '_', '-' or '.' (not first)"),
        ("finetune_baseline@char-tnews", (), "error: stage finetune_baseline@char-tnews: 'char-tnews' matches no entry of finetune.baselines, clue.tasks"),
        (None, (), "error: DVC_STAGE='' is not a finetune_clue@<name> or finetune_baseline@<name> stage; run it with `dvc repro` or name it"),
        ("prepare_clue@tnews", (), "error: DVC_STAGE='prepare_clue@tnews' is not a finetune_clue@<name> or"),
        (None, ("bert", "tnews"), "error: finetune.models|finetune.baselines: no entry 'bert'; defined: char, a, a-b, tfidf"),
    ],
)
def test_matrix_items_resolve_from_dvc_stage_or_argv(tmp_path, dvc_stage, argv, expected):
    proc = resolve_item(tmp_path, dvc_stage, *argv)
    out = (proc.stdout + proc.stderr).strip()
    assert out.startswith(expected) and "\n" not in out, out
    assert proc.returncode == (2 if expected.startswith("error:") else 0)
