"""Crash safety for stage programs: one live writer per stage, and no stage outliving its pipeline.

- **One writer per stage.** A stage holds ``.dvc/tmp/zhnlp-locks/<stage>.lock`` with ``flock``
  while it runs; the file records who holds it (host, pid, start time, command). A second process
  running the same stage stops with ``error: stage X is already running (pid N, ...)``. The
  kernel drops an ``flock`` when its holder dies, so a lock file left by a killed process never
  blocks anything.
- **DVC sees the writer.** The stage also enters a write lock on its DVC outputs in DVC's own
  ``.dvc/tmp/rwlock`` (as this pid), so a ``dvc repro`` of the same stage stops with "is busy"
  *before* it removes the outputs a live writer is still writing.
- **A stage dies with its owner**: the ``dvc repro`` (or ``dvc exp run``) process above it, or the
  Prefect flow that started it (``ZHNLP_OWNER_PROCESS``). When the owner is the direct parent, Linux
  sends SIGTERM on its death (``PR_SET_PDEATHSIG``); a watchdog thread also polls the owner (DVC
  runs commands through a shell, and torchrun puts a launcher in between) and stops the stage when
  it is gone. SIGTERM ends a stage through :class:`Terminated`, so ``with`` blocks unwind and the
  MLflow run ends as KILLED; a stage that does not stop within a grace period is ended hard.
- **dvc.lock is read whole.** DVC rewrites ``dvc.lock`` in place, so a stage that parses it while
  the flow commits another stage could see half a file. The flow writes it under an exclusive
  ``flock`` on ``.dvc/tmp/zhnlp-dvclock``, and stages read it under a shared one
  (:func:`lockfile_guard`); under ``dvc repro`` nobody takes it exclusively, so reads never wait.

A process is named by ``host:pid:create_time``, never by pid alone, so a reused pid is no match.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from stages.common import dvc_stage
from stages.common.params import ROOT, fail

OWNER_ENV = "ZHNLP_OWNER_PROCESS"
LOCK_DIRNAME = ".dvc/tmp/zhnlp-locks"
LOCKFILE_GUARD = ".dvc/tmp/zhnlp-dvclock"
POLL_SECONDS = 0.5
GRACE_SECONDS = 10.0

_held: dict[str, int] = {}  # stage -> fd of its flocked lock file, in this process
_claimed: dict[str, tuple[str, bool, list[str]]] = {}  # stage -> (DVC tmp dir, hardlink_lock, outputs write-locked)
_watching: list[str] = []  # the owner the watchdog thread polls (at most one per process)
_terminating: list[int] = []  # non-empty once SIGTERM has been turned into Terminated


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM: the stage unwinds and exits 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


def identity(proc: psutil.Process | None = None) -> str:
    """``host:pid:create_time`` of a process (default: this one)."""
    proc = proc or psutil.Process()
    return f"{socket.gethostname()}:{proc.pid}:{proc.create_time():.3f}"


def alive(ident: str) -> bool | None:
    """Whether the process named by :func:`identity` still runs; None when it ran on another host."""
    try:
        host, pid, created = ident.rsplit(":", 2)
        pid_n = int(pid)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        proc = psutil.Process(pid_n)
        return f"{proc.create_time():.3f}" == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def dvc_process() -> psutil.Process | None:
    """The ``dvc`` process running this stage, if any (through the shell and launchers in between)."""
    try:
        proc = psutil.Process().parent()
        while proc is not None:
            cmd = proc.cmdline()
            if "dvc" in [Path(c).name for c in cmd[:4]]:  # `dvc ...`, `python .../dvc ...`, `python -m dvc ...`
                return proc
            proc = proc.parent()
    except psutil.Error:
        return None
    return None


def owner() -> str | None:
    """Identity of the process this stage must not outlive: the flow that set it, or the dvc ancestor."""
    if os.environ.get(OWNER_ENV):
        return os.environ[OWNER_ENV]
    proc = dvc_process()
    return identity(proc) if proc is not None else None


@contextmanager
def lockfile_guard(root: Path = ROOT, *, exclusive: bool = False) -> Iterator[None]:
    """Hold the ``dvc.lock`` guard: exclusive to write it (the flow), shared to read it (a stage)."""
    path = Path(root) / LOCKFILE_GUARD
    if not path.parent.parent.is_dir():  # no .dvc: not a DVC project, nothing to guard
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # drops the flock


def lock_path(stage: str) -> Path:
    return ROOT / LOCK_DIRNAME / f"{stage.replace('/', '_')}.lock"


def hold(stage: str) -> bool:
    """Take the stage's lock for this process; False when this process already holds it.

    Another live process holding it ends this one with a one-line ``error:`` (exit 2).
    """
    if stage in _held:
        return False
    path = lock_path(stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        fail(f"stage {stage} is already running ({holder}); wait for it or kill it")
    me = psutil.Process()
    record = {
        "stage": stage,
        "host": socket.gethostname(),
        "pid": me.pid,
        "create_time": round(me.create_time(), 3),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cmd": " ".join(me.cmdline()),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    _held[stage] = fd
    try:
        _claim_outputs(stage, record["cmd"])
    except BaseException:
        release(stage)
        raise
    return True


def _claim_outputs(stage: str, cmd: str) -> None:
    """Write-lock the stage's outputs in DVC's rwlock file under this pid (skipping those its owner holds)."""
    if not (ROOT / ".dvc" / "config").is_file():  # a DVC project, not only our own lock folder
        return
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    found = dvc_stage.lookup(stage)  # under DVC it also hashes the dependencies, for tracking's lineage
    if found is None:
        return
    outs, tmp_dir, hardlink = found.outs, found.tmp_dir, found.hardlink_lock
    boss = owner()  # the flow holds its stages' outputs itself; dvc repro only reads them
    ours = {os.getpid()} | ({int(boss.rsplit(":", 2)[1])} if boss else set())
    me = {"pid": os.getpid(), "cmd": cmd}
    with _edit_rwlock(tmp_dir, localfs, hardlink) as lock:
        for path, info in lock["write"].items():
            if info["pid"] not in ours and psutil.pid_exists(info["pid"]) and any(localfs.overlaps(path, o) for o in outs):
                fail(f"stage {stage}: {path} is being written by pid {info['pid']} ({info['cmd']}); wait for it or kill it")
        claimed = [o for o in outs if lock["write"].get(o, {}).get("pid") not in ours]
        for path in claimed:
            lock["write"][path] = me
    _claimed[stage] = (tmp_dir, hardlink, claimed)


def _release_outputs(stage: str) -> None:
    tmp_dir, hardlink, claimed = _claimed.pop(stage, (None, False, []))
    if not claimed:
        return
    from dvc.fs import localfs
    from dvc.rwlock import _edit_rwlock

    with _edit_rwlock(tmp_dir, localfs, hardlink) as lock:
        for path in claimed:
            if lock["write"].get(path, {}).get("pid") == os.getpid():
                del lock["write"][path]
        if not lock["write"]:
            del lock["write"]


def release(stage: str) -> None:
    _release_outputs(stage)
    fd = _held.pop(stage, None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor drops the flock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['cmd']}"
    except (ValueError, KeyError, OSError):
        return "another process"


def install_sigterm() -> object | None:
    """SIGTERM raises :class:`Terminated` in the main thread; returns the handler to restore, or None."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def on_sigterm(signum, frame):
        if not _terminating:  # once: a second SIGTERM (say, the watchdog's) must not cut the unwinding short
            _terminating.append(signum)
            raise Terminated()

    return signal.signal(signal.SIGTERM, on_sigterm)


def restore_sigterm(previous: object | None) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def watch_owner(stage: str) -> str | None:
    """Make this process end when its owner (dvc, or the flow) ends; returns the owner's identity."""
    ident = owner()
    if ident is None or _watching:
        return _watching[0] if _watching else None
    if alive(ident) is False:
        print(f"error: stage {stage}: the process that started it ({ident}) is gone", file=sys.stderr)
        os._exit(128 + signal.SIGTERM)
    _watching.append(ident)
    pid = int(ident.rsplit(":", 2)[1])
    if sys.platform.startswith("linux") and pid == os.getppid():
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != pid:  # it died before we asked
            os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_watchdog, args=(stage, ident), name="zhnlp-owner-watchdog", daemon=True).start()
    return ident


def _watchdog(stage: str, ident: str) -> None:
    while alive(ident) is not False:
        time.sleep(POLL_SECONDS)
    if not _terminating:
        print(f"[{stage}] the process that started this stage ({ident}) is gone: stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_SECONDS)
    print(f"[{stage}] still running {GRACE_SECONDS:.0f} s after SIGTERM: exiting now", file=sys.stderr, flush=True)
    os._exit(128 + signal.SIGTERM)


def guard(stage: str) -> None:
    """For the whole life of a stage process: its lock (rank 0 only), SIGTERM handling and the owner watch."""
    if os.environ.get("RANK", "0") == "0" and hold(stage):
        atexit.register(release, stage)  # its DVC write locks too: nothing else releases a lock taken here
    install_sigterm()
    watch_owner(stage)
