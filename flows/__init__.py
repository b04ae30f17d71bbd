"""Prefect flows built from dvc.yaml. Importing this package sets offline, in-project defaults."""

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
for _key, _value in {
    "PREFECT_HOME": str(_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_key, _value)
