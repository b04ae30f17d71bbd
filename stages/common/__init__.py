"""Shared plumbing for stage programs; each concept lives in its own module here.

- :mod:`stages.common.params`: the project root, params, paths, environment, one-line errors.
- :mod:`stages.common.tracking`: MLflow runs (one parent per pipeline execution, a child per stage).
- :mod:`stages.common.liveness`: one live writer per stage (a lock file), and no stage outliving its dvc/flow.
"""

from stages.common.params import ROOT, fail, flatten, load_params, resolve, run, select, setup_env, stage_item, stage_params, write_json  # noqa: F401
from stages.common.liveness import OWNER_ENV, Terminated  # noqa: F401
from stages.common.tracking import (  # noqa: F401
    OWNER_TAG,
    PIPELINE_KEY_TAG,
    PIPELINE_RUN_ENV,
    PREFECT_RUN_ENV,
    RESUMED_TAG,
    StageRun,
    close_stale_runs,
    deps_hash,
    dvc_deps,
    ensure_experiment,
    git_commit,
    publish_prep_report,
)
