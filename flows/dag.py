"""The DAG as DVC sees it, and the single writer that keeps dvc.lock consistent.

Nothing here restates the pipeline: stages, commands, outputs and edges all come
from ``dvc.yaml`` through DVC's own index.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
from dvc.repo import Repo

from stages.common.liveness import lockfile_guard


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


def load_dag(root: Path, repo: Repo | None = None) -> dict[str, StagePlan]:
    """Every pipeline stage of dvc.yaml, in an order where upstream comes first.

    ``repo``: one :func:`open_repo` of ``root`` the caller holds open (its index is then built once for all
    its uses); else one is opened here."""
    if repo is None:
        with open_repo(root) as repo:
            return load_dag(root, repo)
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


@contextmanager
def params_read_once() -> Iterator[None]:
    """Parse each params file once per DVC call instead of once per stage that declares params.

    ``dvc status`` reads params.yaml again for every stage (ruamel, 67 stages here: 2.7 s of a 6 s
    no-op status on a loaded 2-core machine, measured with cProfile). Parsed values are keyed by path,
    size and mtime, as DVC's own hash state is, and each caller gets its own copy. Callers hold
    :attr:`DvcWriter.lock`, so no other thread of the flow runs DVC meanwhile.
    """
    import copy

    import dvc.dependency.param as param_module

    original = param_module.load_path
    parsed: dict = {}

    def load_path(fs_path, fs, **kwargs):
        info = fs.info(fs_path)
        key = (fs_path, info.get("size"), info.get("mtime"), tuple(sorted(kwargs.items())))
        if key not in parsed:
            parsed[key] = original(fs_path, fs, **kwargs)
        return copy.deepcopy(parsed[key])

    param_module.load_path = load_path
    try:
        yield
    finally:
        param_module.load_path = original


def remove_output(path: Path) -> None:
    """Delete a stage output before its command runs (DVC does the same for non-persist outputs)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


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


class StageBusy(RuntimeError):
    """Another live DVC process (a ``dvc repro``, another flow) reads or writes this stage's files."""


class DvcWriter:
    """Serialises every read and write of DVC state (status, checkout, commit) in this process.

    Stage commands run in parallel outside the lock; only the short bookkeeping
    steps hold it, so dvc.lock is written by one writer at a time and ends up exactly
    as ``dvc repro`` would write it. Across processes, :meth:`claim` takes DVC's own
    read/write locks, so the flow and ``dvc repro`` never run one stage at the same time.
    """

    def __init__(self, root: Path):
        self.root = str(root)
        self.lock = threading.Lock()
        self.started: set[str] = set()  # stages whose commands this flow run has started

    @contextmanager
    def claim(self, name: str) -> Iterator[None]:
        """Hold DVC's read locks on the stage's deps and write locks on its outputs (``.dvc/tmp/rwlock``).

        ``dvc repro`` takes the same locks for a stage it runs (as this process, with the same
        command line, when the flow commits), so while the flow holds a stage, ``dvc repro`` of it
        stops before removing any output; and a stage that a live ``dvc repro`` holds raises
        :class:`StageBusy` here. A dead holder's entries are dropped, as DVC does.
        """
        from dvc.dependency.db import AbstractDependency
        from dvc.dependency.repo import RepoDependency
        from dvc.lock import LockError
        from dvc.rwlock import rwlock

        with self.lock, open_repo(self.root) as repo:
            (stage,) = repo.stage.collect(name)  # this stage alone: no index of the whole project
            deps = [d.fs_path for d in stage.deps if not isinstance(d, (RepoDependency, AbstractDependency))]
            held = rwlock(repo.tmp_dir, repo.fs, " ".join(sys.argv), deps, [o.fs_path for o in stage.outs], repo.config["core"].get("hardlink_lock", False))
            try:
                held.__enter__()
            except LockError as err:
                holders = "; ".join(line.strip() for line in str(err).splitlines() if line.strip().startswith("(PID")) or str(err).splitlines()[0]
                raise StageBusy(f"stage {name} is in use by another DVC process {holders}; wait for it or kill it") from None
        try:
            yield
        finally:
            with self.lock:
                held.__exit__(None, None, None)

    def stale(self, repo: Repo | None = None) -> set[str]:
        """Every stale stage. (``dvc status`` of named targets is slower: DVC collects each one apart.)

        ``repo``: an :func:`open_repo` of this project held under ``dvc.repo.lock_repo`` by the caller, so
        that status uses the index the caller built (DVC rebuilds it when status takes the lock itself)."""
        with self.lock, params_read_once(), nullcontext(repo) if repo is not None else open_repo(self.root) as repo:
            return set(repo.status())

    def changes(self, name: str) -> list:
        """DVC's status entries for one stage; empty when up to date."""
        with self.lock, params_read_once(), open_repo(self.root) as repo:
            return repo.status(targets=[name]).get(name, [])

    def restore(self, name: str) -> bool:
        """Check the stage's outputs out of the cache when only they changed; True if now up to date."""
        with self.lock, open_repo(self.root) as repo:
            try:
                repo.checkout(targets=[name], force=True)
            except Exception:  # noqa: BLE001 - missing cache entries just mean "run it"
                return False
            return not repo.status(targets=[name]).get(name)

    def lock_text(self) -> str:
        """dvc.lock as it stands: what a worker needs to fetch a stage's inputs (the head's entries)."""
        with self.lock:
            path = Path(self.root) / "dvc.lock"
            return path.read_text(encoding="utf-8") if path.exists() else ""

    def push_outputs(self, names: list[str], remote: str | None) -> None:
        """Push these (up-to-date) stages' outputs to the remote, so that workers can fetch them."""
        if names:
            with self.lock, open_repo(self.root) as repo:
                repo.push(targets=names, remote=remote or None)

    def take_from_remote(self, name: str, remote: str | None) -> None:
        """Commit a stage that a worker ran: its run-cache entry and outputs come from the remote.

        The run-cache key is the hash of the stage's command, params and dependencies as they are
        here, so only outputs made from these very inputs can be taken. dvc.lock is then written
        by the same commit as a local run, so it ends up as ``dvc repro`` would write it.
        """
        with self.lock, lockfile_guard(Path(self.root), exclusive=True), open_repo(self.root) as repo:
            stage = next(s for s in repo.index.stages if s.addressing == name)
            stage.save_deps()
            key = run_cache_key(stage)
            copy_run_cache(repo, key, remote, to_remote=False)
            entry = repo.stage_cache._load(stage)
            if not entry:
                raise RuntimeError(
                    f"stage {name}: the remote has no run-cache entry for this stage's inputs; the worker's "
                    "checkout or its dependencies outside the repo differ from this one"
                )
            cached = repo.stage_cache._create_stage(entry, wdir=stage.wdir)
            for objs in cached.get_used_objs().values():
                repo.cloud.pull(objs, remote=remote or None)
            from dvc.repo import lock_repo

            with lock_repo(repo):
                cached.checkout(force=True)
            repo.commit(name, force=True)

    def commit(self, name: str) -> None:
        """Hash and cache the stage's outputs and write its dvc.lock entry (and run-cache)."""
        with self.lock, lockfile_guard(Path(self.root), exclusive=True), open_repo(self.root) as repo:  # stages read dvc.lock under the shared guard
            (stage,) = repo.commit(name, force=True)  # the stage as committed: no index of the whole project
            repo.stage_cache.save(stage)


# The run-cache of one stage, copied between the local cache and a remote. DVC's own `push --run-cache`
# copies every entry each time; a worker and the head need only the entry of the stage at hand.
# (Uses StageCache internals of the pinned DVC: `_get_stage_hash`, `_get_cache_dir`.)
def run_cache_key(stage) -> str:
    from dvc.stage.cache import _get_stage_hash

    return _get_stage_hash(stage)


def publish_run(repo: Repo, stage, remote: str | None) -> None:
    """Push a stage just run and saved to the run-cache: its outputs first (those with ``cache: false``
    too, as the entry restores them), then the entry, so an entry on the remote has its data there."""
    entry = repo.stage_cache._load(stage)
    if not entry:
        raise RuntimeError(f"stage {stage.addressing}: no run-cache entry was saved")
    cached = repo.stage_cache._create_stage(entry, wdir=stage.wdir)
    for objs in cached.get_used_objs().values():
        repo.cloud.push(objs, remote=remote or None)
    copy_run_cache(repo, run_cache_key(stage), remote, to_remote=True)


def copy_run_cache(repo: Repo, key: str, remote: str | None, *, to_remote: bool) -> int:
    odb = repo.cloud.get_remote_odb(remote or None, "push --run-cache", hash_name="md5-dos2unix")
    remote_dir = odb.fs.join(odb.path, "runs", key[:2], key)
    local_dir = Path(repo.stage_cache._get_cache_dir(key))
    copied = 0
    if to_remote:
        for entry in sorted(local_dir.glob("*")):
            odb.fs.put_file(str(entry), odb.fs.join(remote_dir, entry.name))
            copied += 1
    elif odb.fs.exists(remote_dir):
        local_dir.mkdir(parents=True, exist_ok=True)
        for src in odb.fs.find(remote_dir):
            tmp = local_dir / f".{odb.fs.name(src)}.tmp"
            odb.fs.get_file(src, str(tmp))
            os.replace(tmp, local_dir / odb.fs.name(src))
            copied += 1
    return copied
