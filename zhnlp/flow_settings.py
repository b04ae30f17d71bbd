"""The ``flow`` params section (the Prefect flow built from dvc.yaml), strictly.

Read by flows/pipeline.py and flows/deploy.py: ``flow_settings(load_params().get("flow"))``;
a typo or a bad value is a one-line ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zhnlp.config import ConfigError, check_name, from_params, in_range

# Five cron fields (minute hour day month weekday): digits, names, * / , - and ? L W #.
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")


@dataclass(frozen=True)
class FlowSettings:
    max_workers: int = 2  # stages run at the same time
    retries: int = 0  # per stage
    retry_delay_seconds: float = 10.0
    cron: str = "0 3 * * *"  # the deployment's schedule (flows/deploy.py)
    deployment: str = "nightly"

    def validate(self, where: str) -> None:
        in_range(f"{where}.max_workers", self.max_workers, 1, 256)
        in_range(f"{where}.retries", self.retries, 0, 100)
        in_range(f"{where}.retry_delay_seconds", self.retry_delay_seconds, 0.0, 86400.0)
        fields = self.cron.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ConfigError(f"{where}.cron: {self.cron!r} is not allowed; use five cron fields, e.g. '0 3 * * *'")
        check_name(f"{where}.deployment", self.deployment)


def flow_settings(section: Mapping[str, Any] | None, where: str = "flow") -> FlowSettings:
    """The ``flow`` section of params.yaml (missing keys take the defaults above)."""
    return from_params(FlowSettings, section, where)
