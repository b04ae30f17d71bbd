"""Params, paths, environment and one-line errors for stage programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(os.environ.get("DVC_ROOT") or Path(__file__).resolve().parents[2])

# Quiet, offline and inside the project (see ../shared/spec/environment.md); never overrides the user.
ENV_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": str(ROOT / ".hf"),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_TRACKING_URI": f"sqlite:///{ROOT / 'mlflow.db'}",
}


def setup_env() -> None:
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def load_params(path: Path | None = None) -> dict:
    with open(path or ROOT / "params.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def select(params: Mapping, dotted: str) -> Any:
    """``select(params, "clue.tasks.tnews")``; a missing key names the full path."""
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(f"params.yaml has no key {dotted!r} (missing {part!r})")
        cur = cur[part]
    return cur


def stage_params(*keys: str) -> dict[str, Any]:
    """The params a stage reads: exactly the keys it declares in dvc.yaml."""
    params = load_params()
    return {key: select(params, key) for key in keys}


def resolve(path: str | Path) -> Path:
    """A params path (relative to the project root unless absolute), as the stage should name it.

    Relative paths stay relative to the root, so quarantine files and messages do not
    depend on where the project is checked out.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    return Path(os.path.relpath(ROOT / p)) if Path.cwd().resolve() == ROOT.resolve() else ROOT / p


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def flatten(obj: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {"a.b.c": value}."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def fail(message: str) -> None:
    """Exit with a one-line error, no traceback (for expected input problems)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)




def run(main) -> None:
    """Run a stage's ``main``; a params mistake or bad input ends it with one ``error:`` line, exit 2."""
    from zhnlp.errors import UserError

    try:
        main()
    except UserError as err:
        fail(str(err))
