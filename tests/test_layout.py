"""Static checks of the project's shape: import direction, and dvc.yaml deps covering the code each stage runs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_LIBRARY = ("dvc", "prefect", "mlflow", "stages", "flows")


def imports_of(path: Path) -> set[str]:
    """Every module name imported anywhere in the file, function bodies included."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def project_file(module: str) -> Path | None:
    for candidate in (ROOT / (module.replace(".", "/") + ".py"), ROOT / module.replace(".", "/") / "__init__.py"):
        if candidate.is_file() and candidate.parts[len(ROOT.parts)] in ("zhnlp", "stages"):
            return candidate
    return None


def import_closure(path: Path) -> set[Path]:
    """The project files ``path`` runs, following imports (docstring-only package __init__ files aside)."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for module in imports_of(current):
            found = project_file(module)
            if found:
                todo.append(found)
    return {p for p in seen if not (p.name == "__init__.py" and _docstring_only(p))}


def _docstring_only(path: Path) -> bool:
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


@pytest.mark.parametrize("path", sorted((ROOT / "zhnlp").rglob("*.py")), ids=lambda p: p.name)
def test_library_has_no_orchestration_imports(path):
    bad = {m for m in imports_of(path) if m.split(".")[0] in FORBIDDEN_IN_LIBRARY}
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stages_import_only_common_and_the_library(path):
    bad = {m for m in imports_of(path) if m.startswith("flows") or (m.startswith("stages.") and not m.startswith("stages.common"))}
    assert not bad, f"{path.name} imports {bad}"


def test_every_stage_depends_on_all_code_it_runs():
    with Repo(str(ROOT)) as repo:
        stages = [s for s in repo.index.stages if getattr(s, "cmd", None)]
        assert stages
        for stage in stages:
            match = re.match(r"python -m (stages\.\w+)", stage.cmd)
            assert match, f"{stage.addressing}: unexpected cmd {stage.cmd!r}"
            code = import_closure(project_file(match.group(1)))
            declared = [Path(d.fs_path).resolve() for d in stage.deps]
            missing = sorted(str(p.relative_to(ROOT)) for p in code if not any(p.resolve().is_relative_to(d) for d in declared))
            assert not missing, f"{stage.addressing} runs code it does not list in deps: {missing}"
