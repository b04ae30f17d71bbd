"""torchrun workers: who this process is, and dying with the launcher."""

from __future__ import annotations

import os
import sys


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) from torchrun's environment; (0, 1) for a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def die_with_launcher() -> None:
    """Under torchrun every worker runs in a session of its own, so killing the launcher's process
    group (SIGKILL, or a dvc repro being killed) would leave the workers training on, orphaned.
    Ask Linux to SIGKILL this worker when its launcher dies."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before we asked
        os._exit(1)
