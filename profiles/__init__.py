"""Data profiles: named sets of params values (``profiles/<name>.yaml``), switched with one command.

A profile maps dotted params keys to whole values, the way ``dvc exp run -S key=value`` sets them.
``python -m profiles <name>`` (``make profile P=<name>``) writes those values into ``params.yaml``
with a ruamel.yaml round trip (the library DVC edits params with), so every comment and every other
line stays as it is; ``git diff params.yaml`` shows the switch, and ``dvc repro`` then rebuilds what the new data changes (DVC's
run-cache restores a profile's earlier outputs without rerunning them). Every profile names the same
keys, so switching back is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from zhnlp.config import ConfigError, check_name

PROFILE_DIR = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name: str) -> dict[str, Any]:
    """The profile's {dotted key: value}; an unknown profile or a malformed file is a one-line ConfigError."""
    check_name("profile", name)
    path = PROFILE_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"profile: no profile {name!r}; defined: {', '.join(available())}")
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(values, Mapping) or not values or not all(isinstance(k, str) and k for k in values):
        raise ConfigError(f"{path}: expected a mapping of dotted params keys to values")
    return dict(values)


def apply_profile(values: Mapping[str, Any], params_path: str | Path) -> list[str]:
    """Set each dotted key of ``values`` in ``params_path`` (the parents must exist); returns the keys that changed."""
    path = Path(params_path)
    if not path.is_file():
        raise ConfigError(f"profile: no params file at {path}")
    from ruamel.yaml.error import YAMLError

    yml = _round_trip()
    try:
        params = yml.load(path.read_text(encoding="utf-8"))
    except (YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    changed = []
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = params
        for i, part in enumerate(parents):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"profile key {dotted!r}: {path.name} has no {'.'.join(parents[: i + 1])!r}")
            node = node[part]
        if not isinstance(node, Mapping):
            raise ConfigError(f"profile key {dotted!r}: {'.'.join(parents)!r} is not a mapping in {path.name}")
        if _plain(node.get(leaf)) != _plain(value):
            node[leaf] = _styled(value)
            changed.append(dotted)
    if changed:
        with path.open("w", encoding="utf-8") as out:
            yml.dump(params, out)
    return changed


def _round_trip():
    from ruamel.yaml import YAML

    yml = YAML()  # round trip: comments, key order, flow style and quotes kept
    yml.preserve_quotes = True
    yml.width = 4096  # never re-wrap a long line
    yml.indent(mapping=2, sequence=4, offset=2)
    yml.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yml


def _styled(value: Any) -> Any:
    """Lists and mappings of scalars on one line, nested ones as blocks, as params.yaml writes them."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, Mapping):
        out = CommentedMap((k, _styled(v)) for k, v in value.items())
        if all(not isinstance(v, (Mapping, list)) for v in value.values()):
            out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        seq = CommentedSeq(_styled(v) for v in value)
        if all(not isinstance(v, (Mapping, list)) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists, for comparison."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
