"""Stage and flow processes collect garbage less often while they import, and skip the exit collections."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Prints the thresholds inside a stage's main, and, from an exit handler registered after the policy's, whether
# any object is frozen yet (the policy's freeze must run after every other exit handler: it is registered first).
STAGE = """
import atexit, gc
from stages.common import run
def main():
    print(gc.get_threshold())
    atexit.register(lambda: print('frozen before the other exit handlers:', gc.get_freeze_count() > 0))
run(main)
"""


def _python(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_stage_raises_the_gen0_threshold_and_freezes_only_after_the_other_exit_handlers():
    from stages.common.gc_policy import GEN0_THRESHOLD

    assert _python(STAGE) == [str((GEN0_THRESHOLD, 10, 10)), "frozen before the other exit handlers: False"]


def test_importing_flows_sets_the_same_policy():
    from stages.common.gc_policy import GEN0_THRESHOLD

    assert _python("import gc, flows\nprint(gc.get_threshold())") == [str((GEN0_THRESHOLD, 10, 10))]


def test_a_plain_library_import_leaves_the_collector_alone():
    """zhnlp is a library: importing it changes no interpreter setting."""
    assert _python("import gc\ndefault = gc.get_threshold()\nimport zhnlp, stages.common\nprint(gc.get_threshold() == default)") == ["True"]
