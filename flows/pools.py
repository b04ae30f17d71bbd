"""Stages on Prefect work pools (``flow.executor: pools``): the head's side.

The head (flows/pipeline.py) still decides what is stale and claims each stage with DVC's locks.
For a stage it then, instead of a subprocess:

1. takes a slot of the stage's resource class (a Prefect global concurrency limit ``zhnlp-<class>``,
   when ``flow.slots`` sets one) for as long as the stage runs;
2. creates a run of the ``zhnlp-stage/<pool>`` deployment (flows/remote_stage.py) with this commit,
   this dvc.lock, the MLflow parent and the DVC remote;
3. waits for it. A run whose worker stopped sending heartbeats for ``flow.worker_lost_seconds``
   (the worker or its host died) is marked Crashed, its MLflow child KILLED, and the stage fails
   this attempt, so the flow's retries hand it to the pool again: another worker, or the same one
   once it is back;
4. on success takes the outputs from the remote by the run-cache entry and commits them
   (:meth:`flows.dag.DvcWriter.take_from_remote`): the head is the only writer of dvc.lock.

``python -m flows.pools setup`` (run by ``make services``) creates the pools, their deployments and
the slot limits; the flow does the same when it starts, so a pool renamed in params just works.
"""

from __future__ import annotations

import datetime
import sys
import time
from contextlib import nullcontext

import flows  # noqa: F401 - offline, in-project Prefect defaults
from flows.dag import DvcWriter, StagePlan
from flows.remote_stage import WORKER_TAG, run_dvc_stage
from zhnlp.flow_settings import FlowSettings

STAGE_FLOW = "zhnlp-stage"
ENTRYPOINT = "flows/remote_stage.py:run_dvc_stage"
# Each worker runs the flow in its own checkout, wherever that is on its host (`make worker` sets it).
PULL_STEPS = [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $ZHNLP_CHECKOUT }}"}}]
POLL_SECONDS = 1.0


class WorkerLost(RuntimeError):
    """The worker running a stage stopped sending heartbeats."""


def slot_limit(resource_class: str) -> str:
    return f"zhnlp-{resource_class}"


def setup(settings: FlowSettings) -> list[str]:
    """Create (or bring up to date) the work pools, the stage deployment on each, and the slot limits."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate, WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.utilities.callables import parameter_schema
    from prefect.workers.process import ProcessWorker

    done = []
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(STAGE_FLOW)
        for pool in sorted(set(settings.pools.values())):
            try:
                client.read_work_pool(pool)
            except ObjectNotFound:
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
            client.create_deployment(
                flow_id=flow_id,
                name=pool,
                work_pool_name=pool,
                entrypoint=ENTRYPOINT,
                pull_steps=PULL_STEPS,
                parameter_openapi_schema=parameter_schema(run_dvc_stage).model_dump(),
                description="One zhnlp DVC stage, run in the worker's checkout (flows/remote_stage.py)",
                tags=["zhnlp", "dvc"],
            )
            done.append(f"{STAGE_FLOW}/{pool}")
        for cls, limit in sorted(settings.slots.items()):
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=slot_limit(cls), limit=limit))
            except ObjectAlreadyExists:
                client.update_global_concurrency_limit(slot_limit(cls), GlobalConcurrencyLimitUpdate(limit=limit))
            done.append(f"{slot_limit(cls)} ({limit} at once)")
    return done


def run_on_pool(plan: StagePlan, writer: DvcWriter, settings: FlowSettings, commit: str, env: dict, logger) -> dict:
    """Run one stage on its pool and commit its outputs here; raise if it failed or its worker was lost."""
    from prefect.concurrency.sync import concurrency
    from prefect.deployments import run_deployment

    pool, cls = settings.pool(plan.name), settings.resource_class(plan.name)
    started, t0 = time.time(), time.perf_counter()
    with concurrency(slot_limit(cls), occupy=1, strict=False) if cls in settings.slots else nullcontext():
        run = run_deployment(
            f"{STAGE_FLOW}/{pool}",
            parameters={
                "stage": plan.name,
                "commit": commit,
                "lock": writer.lock_text(),
                "env": env,
                "remote": settings.dvc_remote,
                "torchrun": list(settings.torchrun),
            },
            timeout=0,
            as_subflow=True,
            tags=["zhnlp", f"zhnlp.pool:{pool}"],
        )
        logger.info("%s: flow run %s on pool %s", plan.name, run.name, pool)
        final = wait(run.id, settings.worker_lost_seconds, env, plan.name, logger)
    remote_s = time.perf_counter() - t0
    if not final.state.is_completed():
        raise RuntimeError(f"stage {plan.name} {final.state.name.lower()} on {worker_of(final) or 'pool ' + pool}: {final.state.message or ''}")
    t = time.perf_counter()
    writer.take_from_remote(plan.name, settings.dvc_remote)
    take_s = time.perf_counter() - t
    return {
        "stage": plan.name,
        "status": "ran",
        "seconds": round(remote_s + take_s, 2),
        "started": started,
        "finished": time.time(),
        "worker": worker_of(final),
        "pool": pool,
        "take_s": round(take_s, 3),
    }


def wait(run_id, lost_after: float, env: dict, stage: str, logger):
    """Poll the flow run until it ends; a run whose worker went silent is marked Crashed (WorkerLost)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    waiting_since, hinted = time.monotonic(), False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state.is_final():
                return run
            worker = worker_of(run)
            if worker:
                silent = _silent_seconds(client, run.work_pool_name, worker)
                if silent is None or silent > lost_after:
                    message = f"worker {worker} sent no heartbeat for {lost_after:.0f} s"
                    client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                    _kill_mlflow_child(env, stage, worker)
                    raise WorkerLost(f"stage {stage}: {message}; the attempt is given up")
            elif run.state.is_scheduled() and not hinted and time.monotonic() - waiting_since > 60:
                logger.warning("%s: no worker has taken it for 60 s; start one with `make worker POOL=%s`", stage, run.work_pool_name)
                hinted = True
            time.sleep(POLL_SECONDS)


def worker_of(run) -> str | None:
    return next((t[len(WORKER_TAG):] for t in run.tags if t.startswith(WORKER_TAG)), None)


def _silent_seconds(client, pool: str, worker: str) -> float | None:
    found = [w for w in client.read_workers_for_work_pool(pool) if w.name == worker]
    if not found or found[0].last_heartbeat_time is None:
        return None
    beat = found[0].last_heartbeat_time
    return (datetime.datetime.now(datetime.timezone.utc) - beat).total_seconds()


def _kill_mlflow_child(env: dict, stage: str, worker: str) -> None:
    """The lost worker's stage run can't end itself: mark it KILLED under this execution's parent."""
    import mlflow

    from stages.common import PIPELINE_RUN_ENV

    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    parent = client.get_run(env[PIPELINE_RUN_ENV])
    query = f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'"
    for child in client.search_runs([parent.info.experiment_id], query):
        if child.data.tags.get("zhnlp.worker") == worker:
            client.set_terminated(child.info.run_id, "KILLED")


def main() -> None:
    import argparse

    from zhnlp.errors import UserError

    parser = argparse.ArgumentParser(description="Work pools for flow.executor: pools.")
    parser.add_argument("command", choices=["setup"], help="setup: create the pools, deployments and slot limits")
    args = parser.parse_args()
    from flows.pipeline import flow_settings

    try:
        settings = flow_settings()
    except UserError as err:
        sys.exit(f"error: {err}")
    if args.command == "setup":
        for line in setup(settings):
            print("ready:", line)


if __name__ == "__main__":
    main()
