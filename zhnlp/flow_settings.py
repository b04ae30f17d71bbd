"""The ``flow`` params section (the Prefect flow built from dvc.yaml), strictly.

Read by flows/pipeline.py and flows/deploy.py: ``flow_settings(load_params().get("flow"))``;
a typo or a bad value is a one-line ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zhnlp.config import ConfigError, check_name, choice, from_params, in_range

EXECUTORS = ("local", "pools")

# Five cron fields (minute hour day month weekday): digits, names, * / , - and ? L W #.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")


@dataclass(frozen=True)
class FlowSettings:
    max_workers: int = 2  # stages run at the same time
    retries: int = 0  # per stage
    retry_delay_seconds: float = 10.0
    cron: str = "0 3 * * *"  # the deployment's schedule (flows/deploy.py)
    deployment: str = "nightly"
    # Scale-out (flows/pools.py). "local": stage commands run as subprocesses of the flow (default).
    # "pools": each stale stage goes to a Prefect work pool; a worker runs it in its own checkout.
    executor: str = "local"
    resources: dict = field(default_factory=dict)  # stage (or "stage@item") -> resource class; others: "cpu"
    pools: dict = field(default_factory=lambda: {"cpu": "zhnlp-cpu", "gpu": "zhnlp-gpu"})  # class -> work pool
    slots: dict = field(default_factory=lambda: {"gpu": 1})  # class -> stages at once (Prefect concurrency limit)
    torchrun: list[str] = field(default_factory=lambda: ["pretrain"])  # stages a worker launches with torchrun over its GPUs
    dvc_remote: str = ""  # the DVC remote workers fetch from and push to ("": the default remote)
    worker_lost_seconds: float = 90.0  # a claimed stage whose worker sent no heartbeat for this long is retried

    def validate(self, where: str) -> None:
        in_range(f"{where}.max_workers", self.max_workers, 1, 256)
        in_range(f"{where}.retries", self.retries, 0, 100)
        in_range(f"{where}.retry_delay_seconds", self.retry_delay_seconds, 0.0, 86400.0)
        fields = self.cron.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ConfigError(f"{where}.cron: {self.cron!r} is not allowed; use five cron fields, e.g. '0 3 * * *'")
        check_name(f"{where}.deployment", self.deployment)
        choice(f"{where}.executor", self.executor, EXECUTORS)
        for stage, cls in self.resources.items():
            check_name(f"{where}.resources", stage.replace("@", "-"))
            choice(f"{where}.resources.{stage}", cls, sorted(self.pools))
        for cls, pool in self.pools.items():
            check_name(f"{where}.pools.{cls}", pool)
        for cls, n in self.slots.items():
            choice(f"{where}.slots", cls, sorted(self.pools))
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 4096:
                raise ConfigError(f"{where}.slots.{cls}: {n!r} is not allowed; use a whole number of stages from 1 to 4096")
        if "cpu" not in self.pools:
            raise ConfigError(f"{where}.pools: needs a 'cpu' entry, the pool of every stage without a resource class")
        if self.dvc_remote:
            check_name(f"{where}.dvc_remote", self.dvc_remote)
        in_range(f"{where}.worker_lost_seconds", self.worker_lost_seconds, 5.0, 86400.0)

    def resource_class(self, stage: str) -> str:
        """The resource class of a stage: its own entry ("finetune_clue@char-tnews"), its stage's, or cpu."""
        return self.resources.get(stage) or self.resources.get(stage.split("@")[0]) or "cpu"

    def pool(self, stage: str) -> str:
        return self.pools[self.resource_class(stage)]


def flow_settings(section: Mapping[str, Any] | None, where: str = "flow") -> FlowSettings:
    """The ``flow`` section of params.yaml (missing keys take the defaults above)."""
    return from_params(FlowSettings, section, where)
