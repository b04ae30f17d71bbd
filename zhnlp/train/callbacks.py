"""Trainer callbacks and the training log: throughput (tokens/s, MFU), log lines, the loss curve."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import TrainerCallback


class ThroughputCallback(TrainerCallback):
    """Non-pad tokens per second of training, and estimated MFU on CUDA.

    Time is measured between consecutive optimizer steps (data loading, forward, backward, update,
    logging), leaving out evaluation and checkpoint saving. Tokens come from the Trainer's own
    count (``include_num_input_tokens_seen="non_padding"``, summed over all processes). Each
    training log gets ``tokens_per_second`` (and ``mfu``) for the window since the previous log;
    :meth:`summary` gives the whole run. The first ``skip_steps`` steps (warm-up) are not counted.
    """

    def __init__(self, flops_per_token: float | None = None, peak_flops: float | None = None, world_size: int = 1, skip_steps: int = 0):
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.world_size = max(1, int(world_size))
        self.skip_steps = int(skip_steps)
        self.total_tokens = 0
        self.total_seconds = 0.0
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._steps = 0
        self._t: float | None = None
        self._tokens_seen = 0

    def _sync(self) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()

    def on_train_begin(self, args, state, control, **kwargs):
        self._sync()
        self._t = time.perf_counter()
        self._tokens_seen = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        tokens = state.num_input_tokens_seen - self._tokens_seen
        self._steps += 1
        if self._t is not None and self._steps > self.skip_steps:
            self.total_tokens += tokens
            self.total_seconds += now - self._t
            self._window_tokens += tokens
            self._window_seconds += now - self._t
        self._t = now
        self._tokens_seen = state.num_input_tokens_seen

    def _restart_clock(self, *args, **kwargs):
        self._t = time.perf_counter()

    on_evaluate = _restart_clock
    on_save = _restart_clock

    def mfu(self, tokens_per_second: float) -> float | None:
        if not self.flops_per_token or not self.peak_flops:
            return None
        return tokens_per_second * self.flops_per_token / (self.world_size * self.peak_flops)

    def add_to(self, logs: dict) -> None:
        """Put the window's ``tokens_per_second`` (and ``mfu``) into a training log, once."""
        if "loss" not in logs or "tokens_per_second" in logs or self._window_seconds <= 0:
            return
        tps = self._window_tokens / self._window_seconds
        logs["tokens_per_second"] = tps
        mfu = self.mfu(tps)
        if mfu is not None:
            logs["mfu"] = mfu
        self._window_tokens, self._window_seconds = 0, 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        # PretrainTrainer.log adds the figures before any callback (and the log history) sees the
        # log; with a stock Trainer this reaches the callbacks after this one.
        if logs is not None:
            self.add_to(logs)

    def summary(self) -> dict[str, float | None]:
        tps = self.total_tokens / self.total_seconds if self.total_seconds > 0 else None
        return {
            "tokens_per_second": tps,
            "mfu": self.mfu(tps) if tps else None,
            "train_tokens": float(self.total_tokens),
            "train_seconds": self.total_seconds,
        }


class LossHistory(TrainerCallback):
    """Keeps the Trainer's training log lines (step, epoch, loss, learning rate, grad norm) and forwards each to ``on_log``."""

    def __init__(self, on_log: Callable[[dict], None] | None = None):
        self.rows: list[dict] = []
        self.callback = on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        row = {"step": int(state.global_step), "epoch": round(float(state.epoch or 0.0), 4)}
        row.update({k: float(v) for k, v in logs.items() if k in ("loss", "learning_rate", "grad_norm")})
        self.rows.append(row)
        if self.callback is not None:
            self.callback(row)


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """[{step, loss}] from ``trainer.state.log_history``: one row per logged training loss.

    Every row has the same keys: ``dvc plots`` drops a file whose rows differ (it warns "argument of
    type 'NoneType' is not iterable"), so held-out losses go to their own curve, :func:`eval_curve`."""
    return [{"step": int(e["step"]), "loss": float(e["loss"])} for e in log_history if "loss" in e and "step" in e]


def eval_curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """[{step, eval_loss}]: one row per evaluation on the held-out split."""
    return [{"step": int(e["step"]), "eval_loss": float(e["eval_loss"])} for e in log_history if "eval_loss" in e and "step" in e]
