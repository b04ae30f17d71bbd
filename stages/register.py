"""register: every finetuned transformer model as an MLflow model; one registered model per task.

Reads ``models/finetune/<model>/<task>/`` and ``reports/finetune/<model>/<task>.json`` for every model in
finetune.models + finetune.checkpoints and every task in clue.tasks, and the Ape210K and LCCC heads
(``models/finetune_ape210k``, ``models/finetune_lccc`` and their metrics; :mod:`zhnlp.tasks.registry`). Each
model is logged as a pyfunc from code (``stages/registry_model.py``, serving :mod:`zhnlp.tasks.serving`:
safetensors weights, the kind's signature, an input example from the prepared test split, pinned pip
requirements, nothing pickled),
attached to the latest FINISHED MLflow run of its finetune stage (``Model.log(run_id=...)``: the run gets
the model as an output and keeps its status, times and metrics), and registered as a version of
``<register.name_prefix><task>`` tagged ``dvc.stage``, ``dvc.deps_hash``, ``zhnlp.model``, ``zhnlp.task``,
``zhnlp.kind``, ``zhnlp.recipe``, ``zhnlp.serving_code``. A version that already holds the model (same deps hash and
serving code; by hand: same run) is kept.
The alias ``champion`` points at the best dev score among the models trained under the configured
recipe. Writes ``reports/registry.json`` (names and scores only: versions, run ids and times stay in MLflow).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from stages.common import ROOT, StageRun, run, stage_params, write_json
from zhnlp.config import from_params
from zhnlp.tasks.registry import (
    NOT_RUN_BY_DVC,
    Candidate,
    RegisterConfig,
    RegistryError,
    champion,
    find_candidates,
    generative_candidates,
    pip_requirements,
    registry_report,
    same_version,
)
from zhnlp.tasks.serving import ENTITIES, ENTITY_FIELDS, STRINGS, example_rows, served_kind

ALIAS = "champion"
MODEL_CODE = Path(__file__).resolve().parent / "registry_model.py"
LIBRARY = MODEL_CODE.parents[1] / "zhnlp"  # the library of this checkout, bundled with each model (code_paths)
SERVING_CODE = (MODEL_CODE, LIBRARY / "tasks" / "registry.py", LIBRARY / "tasks" / "serving.py")


def finetune_run(client, experiment_id: str, stage: str):
    """The latest FINISHED run of the finetune stage that trained the model."""
    found = client.search_runs(
        [experiment_id], f"tags.`dvc.stage` = '{stage}' and attributes.status = 'FINISHED'", max_results=1, order_by=["attributes.start_time DESC"]
    )
    if not found:
        raise RegistryError(f"no FINISHED MLflow run of {stage} in this tracking store; rerun it (dvc repro -f {stage})")
    return found[0]


def serving_code_hash() -> str:
    """sha256 of the code that shapes a served model beyond its head: a change re-registers every model."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in SERVING_CODE)).hexdigest()[:16]


def signature(kind: str, example: list[dict]):
    """The kind's request columns that the example fills (required unless optional in the kind) and its response columns."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    def mlflow_type(name: str):
        if name == STRINGS:
            return Array("string")
        if name == ENTITIES:
            return Array(Object([Property(field, kind_) for field, kind_ in ENTITY_FIELDS]))
        return name

    served = served_kind(kind)
    inputs = [ColSpec(mlflow_type(c.type), c.name, required=c.required) for c in served.inputs if c.name in example[0]]
    return ModelSignature(Schema(inputs), Schema([ColSpec(mlflow_type(c.type), c.name) for c in served.outputs]))


def log_version(client, name: str, cand: Candidate, source, tmp: Path):
    """(model version, whether it is new) of ``cand`` under ``name``, logged and registered unless present."""
    import mlflow
    import pandas as pd
    from mlflow.models import Model

    run_id = source.info.run_id
    tags = {
        "dvc.stage": cand.stage,
        "dvc.deps_hash": source.data.tags.get("dvc.deps_hash", NOT_RUN_BY_DVC),
        "zhnlp.model": cand.model,
        "zhnlp.task": cand.task,
        "zhnlp.kind": cand.kind,
        "zhnlp.recipe": str(cand.recipe),
        "zhnlp.serving_code": serving_code_hash(),
    }
    for version in client.search_model_versions(f"name = '{name}'"):
        if same_version(version.tags, version.run_id, tags, run_id):
            return version, False
    rows = example_rows(cand.data_dir, cand.kind)
    max_seq_len = int(source.data.params.get(f"finetune.recipes.{cand.recipe}.max_seq_len", 128))
    serving = tmp / f"{cand.model}-{cand.task}.json"
    write_json(serving, {"kind": cand.kind, "max_seq_len": max_seq_len, "num_beams": cand.num_beams, "task": cand.task})
    info = Model.log(
        artifact_path=None,
        name=f"{cand.model}-{cand.task}",
        flavor=mlflow.pyfunc,
        run_id=run_id,  # the finetune run, not the active register run
        python_model=str(MODEL_CODE),
        artifacts={"model": str(cand.model_dir), "serving": str(serving)},
        code_paths=[str(LIBRARY)],
        signature=signature(cand.kind, rows),
        input_example=pd.DataFrame(rows),
        pip_requirements=pip_requirements(),
        tags=tags,
    )
    # register_model also records the version on the logged model (its Models page); the version's run is the finetune run
    version = mlflow.register_model(info.model_uri, name, await_registration_for=0, tags=tags)
    note = f"dev {cand.metric} {cand.dev:.4f} (recipe {cand.recipe}; the champion alias follows the best under the configured recipe)"
    return client.update_model_version(name, version.version, description=note), True


def register_task(client, experiment_id: str, name: str, candidates: list[Candidate], tmp: Path) -> dict:
    """Every candidate of one task as a version of ``name``; the alias on the champion's. {model: (version, new)}."""
    first = candidates[0]
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    # description and tags kept current, also on a model an older version of this stage registered
    client.update_registered_model(name, description=f"Finetuned {first.task} models ({first.kind}; stage register)")
    for key, value in {"zhnlp.task": first.task, "zhnlp.kind": first.kind}.items():
        client.set_registered_model_tag(name, key, value)
    versions = {c.model: log_version(client, name, c, finetune_run(client, experiment_id, c.stage), tmp) for c in candidates}
    best = champion(candidates)
    if best is not None:
        client.set_registered_model_alias(name, ALIAS, versions[best.model][0].version)
    elif ALIAS in (client.get_registered_model(name).aliases or {}):
        client.delete_registered_model_alias(name, ALIAS)
    return versions


def main() -> None:
    keys = ("finetune.models", "finetune.checkpoints", "finetune.recipe", "finetune.checkpoint_recipe", "clue.tasks", "finetune_ape210k.beams")
    params = stage_params("register", *keys)
    cfg = from_params(RegisterConfig, params["register"], "register")
    with StageRun("register", params) as tracking:
        candidates = []
        if cfg.enabled:
            candidates = (find_candidates(ROOT, params) if "clue" in cfg.include else []) + generative_candidates(ROOT, params, cfg.include)
        report = registry_report(cfg.name_prefix, candidates) | {"enabled": cfg.enabled}
        import mlflow

        client = mlflow.MlflowClient()
        experiment_id = tracking.run.info.experiment_id
        new = 0
        with tempfile.TemporaryDirectory() as tmp:
            for task, entry in report["tasks"].items():
                of_task = [c for c in candidates if c.task == task]
                versions = register_task(client, experiment_id, entry["registered_model"], of_task, Path(tmp))
                new += sum(is_new for _, is_new in versions.values())
                shown = "  ".join(f"{m}=v{v.version}{' (new)' if is_new else ''}" for m, (v, is_new) in versions.items())
                best = f"{entry['champion']} (dev.{entry['metric']}={entry['champion_dev']:.4f})" if entry["champion"] else "none (no model of the configured recipe)"
                print(f"register: {entry['registered_model']}: {shown}; @{ALIAS} = {best}")
                if entry["champion"]:
                    tracking.log_metrics({f"{task}.champion_dev": entry["champion_dev"]})
        path = ROOT / "reports" / "registry.json"
        write_json(path, report)
        tracking.log_metrics({"versions.new": new})
        tracking.log_artifact(path)


if __name__ == "__main__":
    run(main)
