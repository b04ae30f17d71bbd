"""Resume or restart: the run signature, the decision (with its reason), and one training call for every stage.

A training stage keeps its ``checkpoint-N`` folders between runs, next to ``signature.json``: the
sha256 of everything the checkpoints must agree with (params, data and backbone contents, world
size, library versions, training code). :func:`prepare_checkpoint_dir` resumes from the newest
usable checkpoint when the signature matches (newer incomplete or damaged ones are removed and
named in the reason); otherwise it empties the folder and starts afresh. :func:`resume_or_train`
runs that decision with a Trainer: resume, start, or — when the checkpoint already ended the
run — load it as it is.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhnlp.train.checkpoints import checkpoint_step, checkpoints, is_finished, last_complete_checkpoint, load_finished_checkpoint

SIGNATURE_FILE = "signature.json"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def files_identity(root: str | Path, paths: Iterable[Path] | None = None) -> str:
    """sha256 over (relative path, content sha256) of ``paths`` (default: every file under ``root``)."""
    root = Path(root)
    files = sorted(paths) if paths is not None else sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for path in files:
        h.update(f"{Path(path).relative_to(root).as_posix()}\0{file_digest(Path(path))}\n".encode())
    return h.hexdigest()


def code_identity(*modules: str | Path) -> dict[str, str]:
    """sha256 of the training code: this package's modules and the caller's ``modules`` (file paths)."""
    package = sorted(Path(__file__).parent.glob("*.py"))
    return {f"{Path(p).parent.name}/{Path(p).name}": file_digest(Path(p)) for p in [*package, *map(Path, modules)]}


def run_signature(components: Mapping[str, Any]) -> str:
    """sha256 of a JSON-able mapping (params, data identity, world size, versions...)."""
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ResumeDecision:
    checkpoint: Path | None  # resume from here, or None: fresh start
    step: int
    reason: str
    wiped: bool = False
    skipped: tuple[str, ...] = ()  # "checkpoint-N: why" for newer checkpoints that could not be used

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None


def _stored_signature(folder: Path) -> str | None:
    try:
        return json.loads((folder / SIGNATURE_FILE).read_text(encoding="utf-8")).get("signature")
    except (OSError, ValueError, AttributeError):
        return None


def prepare_checkpoint_dir(
    folder: str | Path, signature: str, components: Mapping[str, Any], *, world_size: int = 1, is_main: bool = True
) -> ResumeDecision:
    """Decide between resuming and a fresh start, and (main process only) tidy the folder.

    Resume when the folder's signature file matches ``signature`` and a usable checkpoint is
    there; newer unusable checkpoints are removed. Otherwise the folder is emptied and the new
    signature written. Run it on the main process first and on the others afterwards (they then
    see the tidied folder and reach the same decision).
    """
    folder = Path(folder)
    stored = _stored_signature(folder)
    skipped: list[str] = []
    latest = last_complete_checkpoint(folder, world_size, skipped)
    skip_note = f"; skipped {'; '.join(skipped)}" if skipped else ""
    if stored == signature and latest is not None:
        step = checkpoint_step(latest)
        if is_main:
            for n, path in checkpoints(folder):
                if n > step:
                    shutil.rmtree(path, ignore_errors=True)
        return ResumeDecision(latest, step, f"resuming from {latest.name} (signature matches){skip_note}", skipped=tuple(skipped))
    existing = checkpoints(folder)
    if stored is None and not existing:
        reason = "fresh start (no checkpoint)"
    elif stored != signature:
        reason = f"fresh start: the {len(existing)} checkpoint(s) there were made with other params, data or code"
    else:
        reason = f"fresh start: no complete checkpoint{skip_note}"
    if is_main:
        if folder.exists():
            for child in folder.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / SIGNATURE_FILE).write_text(
            json.dumps({"signature": signature, "components": components}, sort_keys=True, indent=2, default=str) + "\n",
            encoding="utf-8",
        )
    return ResumeDecision(None, 0, reason, wiped=bool(existing), skipped=tuple(skipped))


@dataclass(frozen=True)
class TrainingRun:
    """What :func:`resume_or_train` did."""

    decision: ResumeDecision
    signature: str
    finished_before: bool  # the checkpoint already ended the run: loaded, nothing trained
    seconds: float  # wall time of trainer.train() in this process (0 when nothing was trained)
    training_loss: float  # the Trainer's mean over this process's steps (nan when nothing was trained)
    is_main_process: bool

    @property
    def reason(self) -> str:
        return self.decision.reason + ("; training was complete: outputs come from that checkpoint" if self.finished_before else "")


def resume_or_train(trainer, components: Mapping[str, Any], on_decision: Callable[[ResumeDecision], None] | None = None) -> TrainingRun:
    """Train ``trainer`` in ``trainer.args.output_dir``, resuming when the signature of ``components`` matches.

    The main process decides first and tidies the folder; the others then reach the same decision.
    ``on_decision`` (main process only) hears the decision before any training, e.g. to print its reason.
    """
    args = trainer.args
    signature = run_signature(components)
    is_main = args.process_index == 0
    with args.main_process_first(local=False, desc="checkpoint check"):
        decision = prepare_checkpoint_dir(args.output_dir, signature, components, world_size=args.world_size, is_main=is_main)
    if on_decision is not None and is_main:
        on_decision(decision)
    if decision.resumed and is_finished(decision.checkpoint):
        trainer.state = load_finished_checkpoint(trainer.model, decision.checkpoint)
        return TrainingRun(decision, signature, True, 0.0, float("nan"), is_main)
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=str(decision.checkpoint) if decision.resumed else None)
    return TrainingRun(decision, signature, False, time.perf_counter() - t0, float(out.training_loss), is_main)
