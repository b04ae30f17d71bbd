"""Prefect flows built from dvc.yaml. Importing this package sets offline, in-project defaults, and the
garbage collector's thresholds for a process that imports Prefect, DVC and MLflow (stages.common.gc_policy)."""

import os
from pathlib import Path

from stages.common import gc_policy

gc_policy.tune()

_ROOT = Path(__file__).resolve().parents[1]
for _key, _value in {
    "PREFECT_HOME": str(_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_key, _value)
