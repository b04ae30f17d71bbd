"""Params, paths, environment and one-line errors for stage programs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from zhnlp.errors import UserError

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


class MissingParamError(KeyError, UserError):
    """A params key a stage declares is not in params.yaml: one ``error:`` line, no traceback."""

    def __str__(self) -> str:
        return str(self.args[0])


def select(params: Mapping, dotted: str) -> Any:
    """``select(params, "clue.tasks.tnews")``; a missing key names the full path."""
    cur: Any = params
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise MissingParamError(f"params.yaml has no key {dotted!r} (missing {part!r})")
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




def _dvc_str(value: Any) -> str:
    """A foreach/matrix value as DVC writes it into a stage name."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def stage_item(group: str | Mapping[str, tuple[str, ...]], *sources: str, argv: list[str] | None = None) -> Any:
    """The names a foreach/matrix stage runs for: ``name = stage_item("download", "downloads")``.

    dvc.yaml commands carry no params text (a name would reach the shell): under ``dvc repro``
    and the flow, ``DVC_STAGE`` names the stage (``download@ape210k``), and its key is matched
    against the params ``sources`` the stage is generated from (a matrix key ``char-tnews``
    against every pair; an ambiguous split is an error). By hand, ``python -m stages.X NAME...``
    names them. Every name must be a params entry and pass ``zhnlp.config.check_name``.
    ``group`` may map several groups run by one program to their sources. Returns one name,
    or a tuple for several sources.
    """
    import argparse
    import itertools

    from zhnlp.config import ConfigError, check_name

    groups = dict(group) if isinstance(group, Mapping) else {group: sources}
    arity = len(next(iter(groups.values())))
    parser = argparse.ArgumentParser(description=getattr(sys.modules.get("__main__"), "__doc__", None))
    for i in range(arity):
        parser.add_argument(f"name{i}", nargs="?", metavar="/".join(dict.fromkeys(s[i].rsplit(".", 1)[-1].rstrip("s").upper() for s in groups.values())))
    args = [a for a in vars(parser.parse_args(sys.argv[1:] if argv is None else argv)).values() if a is not None]
    params = load_params()

    def choices(source: str) -> list:
        try:
            found = select(params, source)
        except KeyError as err:
            raise ConfigError(str(err.args[0])) from None
        return list(found) if isinstance(found, (Mapping, list)) else []

    if args:  # by hand
        if len(args) != arity:
            parser.error(f"give {arity} names or none (under dvc repro)")
        where = ["|".join(dict.fromkeys(s[i] for s in groups.values())) for i in range(arity)]
        names = []
        for i, arg in enumerate(args):
            allowed = [c for s in groups.values() for c in choices(s[i])]
            if arg not in [_dvc_str(c) for c in allowed]:
                raise ConfigError(f"{where[i]}: no entry {arg!r}; defined: {', '.join(map(_dvc_str, allowed)) or 'none'}")
            names.append(check_name(where[i], arg))
    else:
        stage = os.environ.get("DVC_STAGE", "")
        name, _, key = stage.partition("@")
        if name not in groups or not key:
            expected = " or ".join(f"{g}@<name>" for g in groups)
            raise ConfigError(f"DVC_STAGE={stage!r} is not a {expected} stage; run it with `dvc repro` or name it: {parser.format_usage().strip()}")
        found = [c for c in itertools.product(*map(choices, groups[name])) if "-".join(map(_dvc_str, c)) == key]
        if not found:
            raise ConfigError(f"stage {stage}: {key!r} matches no entry of {', '.join(groups[name])}")
        if len(found) > 1:
            raise ConfigError(f"stage {stage}: {key!r} is ambiguous ({' or '.join(map(repr, found))}); rename entries so no '-' split repeats")
        names = [check_name(s, n) for s, n in zip(groups[name], found[0])]
    return names[0] if arity == 1 else tuple(names)


def run(main) -> None:
    """Run a stage's ``main``; a params mistake or bad input ends it with one ``error:`` line, exit 2.

    Under ``dvc repro`` or the flow the stage first takes its lock and ties its life to theirs
    (:func:`stages.common.liveness.guard`), before it touches any output or checkpoint.
    """
    from stages.common import gc_policy
    from stages.common.liveness import guard
    from zhnlp.errors import UserError

    gc_policy.tune()  # before main's imports of MLflow, transformers and torch (stages.common.gc_policy)
    try:
        if os.environ.get("DVC_STAGE"):
            guard(os.environ["DVC_STAGE"])
        main()
    except UserError as err:
        fail(str(err))
