"""``checkpoint-N`` folders written by the Trainer: which are usable, and loading a finished one.

A checkpoint is usable when every file the Trainer writes is there (``trainer_state.json`` last)
and intact: the safetensors header parses and covers the whole file, each ``.pt``/``.pth`` file
(a zip archive) has its central directory, and the state is valid JSON. A checkpoint cut short
by a kill, a full disk or a truncating copy is skipped, with the reason, in favour of the
previous usable one (``SafetensorError`` would otherwise end every rerun).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import torch

WEIGHTS = "model.safetensors"
STATE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``checkpoint-<step>`` folder, by step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def checkpoint_step(path: str | Path) -> int:
    return int(_CHECKPOINT_RE.match(Path(path).name).group(1))


def _required_files(world_size: int) -> list[str]:
    rng = ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{r}.pth" for r in range(world_size)]
    return [STATE, WEIGHTS, "optimizer.pt", "scheduler.pt", *rng]


def checkpoint_problem(path: str | Path, world_size: int = 1) -> str | None:
    """Why the checkpoint at ``path`` cannot be resumed from (a missing or damaged file), or None when it can."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    missing = [name for name in _required_files(world_size) if not (path / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as weights:
            weights.keys()
    except (SafetensorError, OSError) as err:
        return f"{WEIGHTS} is damaged ({err})"
    for name in _required_files(world_size)[2:]:
        try:
            with zipfile.ZipFile(path / name):
                pass
        except (zipfile.BadZipFile, OSError) as err:
            return f"{name} is damaged ({err})"
    try:
        json.loads((path / STATE).read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{STATE} is damaged ({err})"
    return None


def checkpoint_is_complete(path: str | Path, world_size: int = 1) -> bool:
    return checkpoint_problem(path, world_size) is None


def last_complete_checkpoint(folder: str | Path, world_size: int = 1, skipped: list[str] | None = None) -> Path | None:
    """The newest usable checkpoint (like transformers' ``get_last_checkpoint``, but checked).

    Each newer checkpoint passed over is added to ``skipped`` as ``"checkpoint-N: <reason>"``.
    """
    for _, path in reversed(checkpoints(folder)):
        problem = checkpoint_problem(path, world_size)
        if problem is None:
            return path
        if skipped is not None:
            skipped.append(f"{path.name}: {problem}")
    return None


def read_state(checkpoint: str | Path) -> dict:
    return json.loads((Path(checkpoint) / STATE).read_text(encoding="utf-8"))


def is_finished(checkpoint: str | Path) -> bool:
    """Whether the checkpoint is the end of its run (``global_step`` reached ``max_steps``)."""
    state = read_state(checkpoint)
    return int(state["global_step"]) >= int(state.get("max_steps") or 0) > 0


def parameter_aliases(model: torch.nn.Module) -> dict[str, set[str]]:
    """Every parameter name -> all names of that parameter (more than one for tied weights)."""
    groups: dict[int, set[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), set()).add(name)
    return {name: names for names in groups.values() for name in names}


def load_weights(model: torch.nn.Module, checkpoint: str | Path) -> None:
    """The checkpoint's ``model.safetensors`` into ``model``, in place.

    Every parameter must be there except tied ones stored under another of their names; a missing
    or unexpected weight, or a shape that does not fit, is a ValueError naming the checkpoint.
    """
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    device = next(model.parameters()).device
    state = load_file(str(checkpoint / WEIGHTS), device=str(device))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{checkpoint}: weights do not fit the model ({err})") from err
    aliases = parameter_aliases(model)
    missing = {name for name in missing if not aliases.get(name, {name}) & state.keys()}  # tied: stored once
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: weights do not fit the model (missing {sorted(missing)}, unexpected {sorted(unexpected)})")
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def load_finished_checkpoint(model: torch.nn.Module, checkpoint: str | Path):
    """Weights and ``TrainerState`` of a checkpoint whose run already ended.

    ``Trainer.train(resume_from_checkpoint=...)`` on such a checkpoint would still take one more
    optimizer step; this loads it as it is, so the outputs can be written (or evaluated) again.
    """
    from transformers import TrainerState

    load_weights(model, checkpoint)
    model.eval()
    return TrainerState.load_from_json(str(Path(checkpoint) / STATE))
