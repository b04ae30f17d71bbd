"""MLflow grouping for stage programs: one parent run per pipeline execution, one child per stage.

The parent is found, in order, from ``ZHNLP_PIPELINE_RUN_ID`` (set by the Prefect
flow), or from the ``dvc repro`` / ``dvc exp run`` process that started this
stage (its pid and start time form a key stored as a tag on the parent), or no
parent at all when a stage runs by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from stages.common import dvc_stage, liveness
from stages.common.params import ROOT, flatten, resolve, setup_env, write_json
from zhnlp.progress import enabled as progress_enabled

PIPELINE_RUN_ENV = "ZHNLP_PIPELINE_RUN_ID"
PREFECT_RUN_ENV = "ZHNLP_PREFECT_FLOW_RUN_ID"
PIPELINE_KEY_TAG = "zhnlp.pipeline_key"
OWNER_TAG = "zhnlp.owner"  # host:pid:create_time of the process behind a run (liveness.identity)
RESUMED_TAG = "zhnlp.resumed_from_run"  # on a stage run: the killed run of the same stage it follows
DEFAULT_EXPERIMENT = "zhnlp"
# MLflow 3's UI opens an experiment on the view its kind names; without the tag it guesses, and an experiment
# with no traces may open on the GenAI overview. This is the model-training kind (the UI's enum value).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Tags every stage run may carry, so the runs table groups and charts by them: zhnlp.<key>.
LABELS = ("model", "task", "backbone", "recipe")


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_deps(stage: str) -> list[dict]:
    """The stage's dependencies with the hashes DVC computes for them (files, dirs and params)."""
    found = dvc_stage.lookup(stage)  # cached: the lookup liveness made at start
    return list(found.deps) if found else []


def deps_hash(deps: list[dict]) -> str:
    """sha256 over the stage's dependency entries: it changes exactly when DVC would rerun for a dep."""
    lines = sorted(json.dumps(d, sort_keys=True, default=str) for d in deps)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def ensure_experiment(client) -> str:
    """The id of ``$MLFLOW_EXPERIMENT_NAME`` (default "zhnlp"); new ones keep artifacts in ./mlartifacts."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = (ROOT / "mlartifacts").as_uri() if client.tracking_uri.startswith("sqlite") else None
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if exp.tags.get(EXPERIMENT_KIND_TAG) in (None, "", "genai_development_inferred", "custom_model_development_inferred", "no_inferred_type"):
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)  # a kind the user chose stays
    return exp.experiment_id


def _dvc_ancestor() -> tuple[str, str] | None:
    """(key, command) of the dvc process running this stage, if any."""
    import psutil

    proc = liveness.dvc_process()
    try:
        return (f"dvc-{proc.pid}-{proc.create_time():.3f}", " ".join(proc.cmdline())) if proc else None
    except psutil.Error:
        return None


def _pipeline_parent(client, experiment_id: str) -> str | None:
    """The parent run id for this pipeline execution; created on first use."""
    if os.environ.get(PIPELINE_RUN_ENV):
        return os.environ[PIPELINE_RUN_ENV]
    found = _dvc_ancestor()
    if found is None:
        return None
    key, command = found
    runs = client.search_runs([experiment_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1)
    if runs:
        client.update_run(runs[0].info.run_id, status="RUNNING")  # running again while this stage runs
        return runs[0].info.run_id
    tags = {PIPELINE_KEY_TAG: key, "zhnlp.trigger": "dvc", "zhnlp.command": command, "git.commit": git_commit()}
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags=tags | ({OWNER_TAG: liveness.owner()} if liveness.owner() else {}),
    )
    return run.info.run_id


def close_stale_runs(client, experiment_id: str, stage: str) -> str | None:
    """Mark RUNNING runs of ``stage`` whose process is gone KILLED, and their parent once none of its
    runs lives. Returns the latest run of the stage if it was killed: the run a new one follows."""
    running = client.search_runs([experiment_id], f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'", max_results=500)
    parents = set()
    for run in running:
        if liveness.alive(run.data.tags.get(OWNER_TAG, "")) is False:
            client.set_terminated(run.info.run_id, "KILLED")
            parents.add(run.data.tags.get("mlflow.parentRunId"))
    for parent_id in parents - {None}:
        parent = client.get_run(parent_id)
        if parent.info.status != "RUNNING" or liveness.alive(parent.data.tags.get(OWNER_TAG, "")) is not False:
            continue
        children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'")
        if all(liveness.alive(c.data.tags.get(OWNER_TAG, "")) is False for c in children):
            for child in children:
                client.set_terminated(child.info.run_id, "KILLED")
            client.set_terminated(parent_id, "KILLED")
    latest = client.search_runs([experiment_id], f"tags.`dvc.stage` = '{stage}'", max_results=1, order_by=["attributes.start_time DESC"])
    return latest[0].info.run_id if latest and latest[0].info.status == "KILLED" else None


class StageRun:
    """The MLflow child run of one stage. Use as ``with StageRun(name, params, model=..., task=...) as run:``.

    ``labels`` (keys in :data:`LABELS`: model, task, backbone, recipe) become ``zhnlp.<key>`` tags, beside
    ``zhnlp.stage_kind``, so the MLflow runs table groups and charts stage runs by them."""

    def __init__(self, stage: str, params: Mapping[str, Any], **labels: str | None):
        self.stage = os.environ.get("DVC_STAGE") or stage
        self.params = params
        self.metrics: dict[str, float] = {}
        unknown = set(labels) - set(LABELS)
        if unknown:
            raise TypeError(f"StageRun labels are {', '.join(LABELS)}; got {', '.join(sorted(unknown))}")
        self.labels = {f"zhnlp.{k}": str(v) for k, v in labels.items() if v is not None}

    def __enter__(self) -> "StageRun":
        # One live writer per stage, and none outliving its dvc/flow (see stages.common.liveness).
        self._locked = liveness.hold(self.stage)
        self._sigterm = liveness.install_sigterm()
        try:
            liveness.watch_owner(self.stage)
            return self._start()
        except BaseException:
            self._release()
            raise

    def _start(self) -> "StageRun":
        import mlflow

        setup_env()
        if not progress_enabled():  # the libraries' own bars too (weight loading, artifact downloads), e.g. in the flow's logs
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()  # transformers takes this state when it is imported
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            if "transformers" in sys.modules:
                sys.modules["transformers"].utils.logging.disable_progress_bar()
        self._mlflow = mlflow
        client = mlflow.MlflowClient()
        exp_id = ensure_experiment(client)
        mlflow.set_experiment(experiment_id=exp_id)
        resumed_from = close_stale_runs(client, exp_id, self.stage)
        self.parent_id = _pipeline_parent(client, exp_id)
        deps = dvc_deps(self.stage) if os.environ.get("DVC_STAGE") else []
        tags = {
            "dvc.stage": self.stage,
            "dvc.deps_hash": deps_hash(deps) if deps else "not-run-by-dvc",
            "git.commit": git_commit(),
            "zhnlp.stage_kind": self.stage.split("@")[0],
            OWNER_TAG: liveness.identity(),
        } | self.labels
        if resumed_from:
            tags[RESUMED_TAG] = resumed_from
        if os.environ.get(PREFECT_RUN_ENV):
            tags["prefect.flow_run_id"] = os.environ[PREFECT_RUN_ENV]
        self.run = mlflow.start_run(run_name=self.stage, parent_run_id=self.parent_id, tags=tags)
        self._log_data_inputs(deps)
        flat = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in flatten(self.params).items()}
        for chunk in _chunks(list(flat.items()), 90):
            mlflow.log_params({k: str(v)[:6000] for k, v in chunk})
        self._t0 = time.perf_counter()
        return self

    def _log_data_inputs(self, deps: list[dict]) -> None:
        """Data dependencies become MLflow dataset inputs, with DVC's md5 as the digest (lineage)."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        for dep in deps:
            path, digest = dep.get("path"), dep.get("md5")
            if path and digest and not _is_code(path):
                with warnings.catch_warnings():  # "can be interpreted in multiple ways": both are local files
                    warnings.simplefilter("ignore", UserWarning)
                    source = resolve_dataset_source(str(resolve(path)))
                self._mlflow.log_input(MetaDataset(source, name=path, digest=digest), context="input")

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        numeric = {k: float(v) for k, v in flatten(metrics).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.metrics.update(numeric)
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._mlflow.log_text(text, name)

    def log_table(self, rows: list[dict], name: str) -> None:
        """Rows (one dict each) as an MLflow table artifact ``name`` (.json), shown by the run's Artifacts and
        Evaluation views."""
        columns = list(dict.fromkeys(k for row in rows for k in row))
        self._mlflow.log_table({c: [row.get(c) for row in rows] for c in columns}, name)

    def log_image(self, path: Path, name: str) -> None:
        """A PNG as an MLflow image artifact (shown inline in the run's Artifacts view)."""
        from PIL import Image

        with Image.open(path) as image:
            self._mlflow.log_image(image.copy(), artifact_file=name)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            killed = exc_type is not None and issubclass(exc_type, (liveness.Terminated, KeyboardInterrupt))
            status = "KILLED" if killed else "FAILED" if exc_type else "FINISHED"
            self._mlflow.log_metric("stage_seconds", time.perf_counter() - self._t0)
            self._mlflow.end_run(status=status)
            if self.parent_id and not os.environ.get(PIPELINE_RUN_ENV):
                # A dvc-started parent has no end hook: each child marks it finished so far.
                self._mlflow.MlflowClient().set_terminated(self.parent_id, status)
        finally:
            self._release()

    def _release(self) -> None:
        if self._locked:
            liveness.release(self.stage)
        liveness.restore_sigterm(self._sigterm)


CODE_PACKAGES = ("stages", "zhnlp", "demo")  # code deps (files or whole packages) are not datasets


def _is_code(path: str) -> bool:
    return path.endswith(".py") or Path(path).parts[0] in CODE_PACKAGES


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def publish_prep_report(run: StageRun, report: str, stats: list, rejected: dict, metrics_path: Path, lengths_path: Path) -> dict:
    """Write a prepare stage's metrics and length plot; log them, the data report and sample rows."""
    metrics = {s.split: s.metrics() for s in stats} | rejected
    write_json(metrics_path, metrics)
    write_json(lengths_path, [row for s in stats for row in s.histogram()])
    run.log_metrics(metrics)
    run.log_text(report, "data_report.md")
    samples = [json.dumps(r, ensure_ascii=False, default=str) for s in stats for r in s.samples]
    run.log_text("\n".join(samples) + "\n", "sample_rows.jsonl")
    print(report)
    return metrics
