"""Outputs of stages that no longer exist: found by the shape of ``dvc.yaml``'s output paths, then removed.

A ``foreach``/``matrix`` stage declares its outputs as templates (``reports/finetune/${item.model}/${item.task}.json``).
When a task or model leaves ``params.yaml``, DVC stops tracking its stages but leaves their outputs in the
workspace: an old ``reports/finetune/char/afqmc.json`` would linger beside the current ones, inside the
``reports/finetune`` folder the leaderboard depends on, and in git. An *orphan* is a path that matches an output
template of the current ``dvc.yaml`` but is no declared output (nor inside one). Only such paths are touched, so
a user's own files elsewhere under ``data/`` or ``reports/`` are never candidates.

``make run`` and the Prefect flow remove orphans before running, so the stages that read those folders see only
current outputs. ``python -m flows.orphans`` lists them; ``--remove`` deletes them (git keeps the tracked ones'
history).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_VAR = re.compile(r"\$\{[^}]+\}")
# Not outputs, never orphans: the training checkpoints a stage keeps beside its output to resume from
# (models/pretrain/<backbone>-checkpoints matches the shape of models/pretrain/<backbone>).
KEPT_SUFFIXES = ("-checkpoints",)


def _out_paths(entries: list) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def output_templates(dvc_yaml: dict) -> list[tuple[str, re.Pattern]]:
    """(fixed folder, pattern) per templated output path of a foreach/matrix stage; ``${...}`` = one path component."""
    found = []
    for stage in (dvc_yaml.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for path in _out_paths(body.get("outs")) + _out_paths(body.get("metrics")) + _out_paths(body.get("plots")):
            if "${" in path:
                parts = TEMPLATE_VAR.split(path)
                base = parts[0].rsplit("/", 1)[0] if "/" in parts[0] else "."
                found.append((base, re.compile("[^/]+".join(re.escape(p) for p in parts) + r"\Z")))
    return found


def declared_outputs(root: Path, repo=None) -> set[str]:
    """Every output path of the current ``dvc.yaml`` (after DVC interpolates params), relative to ``root``.

    ``repo``: an open DVC repo of ``root`` whose index the caller also uses (the flow), else one is opened."""
    if repo is None:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            return declared_outputs(root, repo)
    return {str(Path(out.fs_path).relative_to(root.resolve())) for stage in repo.index.stages for out in stage.outs}


def find_orphans(root: Path = ROOT, repo=None) -> list[Path]:
    declared = declared_outputs(root, repo)
    inside_declared = lambda rel: any(rel == d or rel.startswith(d + "/") for d in declared)  # noqa: E731
    holds_declared = lambda rel: any(d.startswith(rel + "/") for d in declared)  # noqa: E731
    found: set[Path] = set()
    for base, pattern in output_templates(yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))):
        if (root / base).is_dir():
            for path in (root / base).rglob("*"):
                rel = path.relative_to(root).as_posix()
                if path.name.startswith("."):  # DVC's .gitignore beside its outputs, editors' files
                    continue
                if pattern.match(rel) and not rel.endswith(KEPT_SUFFIXES) and not inside_declared(rel) and not holds_declared(rel):
                    found.add(path)
    return sorted(p for p in found if not any(q in found for q in p.parents))  # a folder covers its contents


def remove(paths: list[Path], root: Path = ROOT) -> None:
    """Delete ``paths``, then the folders they leave empty (up to ``root``)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def remove_orphans(root: Path = ROOT, repo=None) -> list[Path]:
    """Find and delete the orphans under ``root``; returns what was removed."""
    orphans = find_orphans(root, repo)
    remove(orphans, root)
    return orphans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.orphans", description=__doc__.split("\n\n")[0])
    parser.add_argument("--remove", action="store_true", help="delete them (default: list only)")
    args = parser.parse_args(argv)
    orphans = find_orphans(ROOT)
    for path in orphans:
        print(f"{'removed' if args.remove else 'orphan'}: {path.relative_to(ROOT)}")
    if args.remove:
        remove(orphans, ROOT)
    elif orphans:
        print(f"{len(orphans)} outputs of stages no longer in dvc.yaml; `python -m flows.orphans --remove` deletes them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
