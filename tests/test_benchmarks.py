"""The benchmarks' own measuring helpers (benchmarks/common.py)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import run_child

ROOT = Path(__file__).resolve().parents[1]


def test_a_childs_peak_rss_is_its_own_not_the_benchmark_processs():
    """Linux starts a forked child's peak RSS at its parent's; run_child must report the child's own peak."""
    held = np.ones(60_000_000)  # 480 MB resident in this process while the child runs
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 400 * 1024
    child = run_child([sys.executable, "-c", "import numpy as np; a = np.ones(20_000_000); print(int(a.sum()))"], cwd=ROOT, env=None)
    assert child.returncode == 0 and child.stdout == "20000000\n" and child.stderr == ""
    assert 150 * 1024 < child.max_rss_kib < 350 * 1024, child.max_rss_kib  # 160 MB of array plus numpy, not 480 MB more
    failed = run_child([sys.executable, "-c", "import sys; sys.stderr.write('bad input\\n'); sys.exit(3)"], cwd=ROOT, env=None)
    assert (failed.returncode, failed.stderr) == (3, "bad input\n")
    del held
