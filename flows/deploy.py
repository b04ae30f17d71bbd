"""Serve the pipeline flow as a Prefect deployment with the cron schedule from params.yaml.

Schedules need a real Prefect server (the temporary one never fires them):
    prefect server start --host 127.0.0.1 --port 4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy
"""

from __future__ import annotations

import argparse
import os
import sys

import flows  # noqa: F401 - offline, in-project Prefect defaults
from flows.pipeline import flow_settings, pipeline
from zhnlp.errors import UserError


def main() -> None:
    try:
        settings = flow_settings()
    except UserError as err:
        sys.exit(f"error: {err}")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default=settings.deployment)
    parser.add_argument("--cron", default=settings.cron)
    args = parser.parse_args()
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit(
            "error: PREFECT_API_URL is not set. Schedules only fire on a real server:\n"
            "  prefect server start --host 127.0.0.1 --port 4200\n"
            "  export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    pipeline.serve(name=args.name, cron=args.cron, tags=["zhnlp", "dvc"], description="zhnlp DVC pipeline, stale stages only")


if __name__ == "__main__":
    main()
