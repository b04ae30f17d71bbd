"""The DAG as DVC sees it, and the single writer that keeps dvc.lock consistent.

Nothing here restates the pipeline: stages, commands, outputs and edges all come
from ``dvc.yaml`` through DVC's own index.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
from dvc.repo import Repo


@dataclass(frozen=True)
class StagePlan:
    name: str
    cmds: tuple[str, ...]
    wdir: str
    outs: tuple[tuple[str, bool], ...]  # (path, persist)
    upstream: tuple[str, ...] = field(default_factory=tuple)
    frozen: bool = False


@contextmanager
def open_repo(root: str | Path) -> Iterator[Repo]:
    """The DVC repo, opened from its root: DVC names stages and targets relative to the cwd."""
    previous = os.getcwd()
    os.chdir(root)
    try:
        with Repo(str(root)) as repo:
            yield repo
    finally:
        os.chdir(previous)


def load_dag(root: Path) -> dict[str, StagePlan]:
    """Every pipeline stage of dvc.yaml, in an order where upstream comes first."""
    with open_repo(root) as repo:
        graph = repo.index.graph  # edges point from a stage to its dependencies
        order = list(reversed(list(nx.topological_sort(graph))))
        plans = {}
        for stage in order:
            if not getattr(stage, "cmd", None):
                continue  # .dvc files and imports have no command
            cmds = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
            plans[stage.addressing] = StagePlan(
                name=stage.addressing,
                cmds=tuple(cmds),
                wdir=stage.wdir,
                outs=tuple((str(o.fs_path), bool(o.persist)) for o in stage.outs),
                upstream=tuple(s.addressing for s in graph.successors(stage) if getattr(s, "cmd", None)),
                frozen=bool(stage.frozen),
            )
        return plans


def downstream_closure(dag: dict[str, StagePlan], names: set[str]) -> set[str]:
    """``names`` plus every stage that depends on them, directly or not."""
    out = set(names)
    for plan in dag.values():  # upstream-first order, so one pass suffices
        if any(up in out for up in plan.upstream):
            out.add(plan.name)
    return out


def upstream_closure(dag: dict[str, StagePlan], names: set[str]) -> set[str]:
    out, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(dag[name].upstream)
    return out


class DvcWriter:
    """Serialises every read and write of DVC state (status, checkout, commit) in this process.

    Stage commands run in parallel outside the lock; only the short bookkeeping
    steps hold it, so dvc.lock is written by one writer at a time and ends up exactly
    as ``dvc repro`` would write it.
    """

    def __init__(self, root: Path):
        self.root = str(root)
        self.lock = threading.Lock()

    def stale(self) -> set[str]:
        with self.lock, open_repo(self.root) as repo:
            return set(repo.status())

    def changes(self, name: str) -> list:
        """DVC's status entries for one stage; empty when up to date."""
        with self.lock, open_repo(self.root) as repo:
            return repo.status(targets=[name]).get(name, [])

    def restore(self, name: str) -> bool:
        """Check the stage's outputs out of the cache when only they changed; True if now up to date."""
        with self.lock, open_repo(self.root) as repo:
            try:
                repo.checkout(targets=[name], force=True)
            except Exception:  # noqa: BLE001 - missing cache entries just mean "run it"
                return False
            return not repo.status(targets=[name]).get(name)

    def commit(self, name: str) -> None:
        """Hash and cache the stage's outputs and write its dvc.lock entry (and run-cache)."""
        with self.lock, open_repo(self.root) as repo:
            repo.commit(name, force=True)
            stage = next(s for s in repo.index.stages if s.addressing == name)
            repo.stage_cache.save(stage)
