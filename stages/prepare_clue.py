"""prepare_clue@<task>: CLUE/FewCLUE JSON lines -> data/prepared/clue/<task>/<split>.parquet.

Under ``dvc repro`` the task comes from DVC_STAGE (no params text reaches the shell); by hand:
``python -m stages.prepare_clue TASK``.
"""

from __future__ import annotations

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run, stage_item, write_json
from zhnlp.data.clue import CLUE_SCHEMA, ClueParams, TaskSpec, iter_split, split_files
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy


def main() -> None:
    config = ClueParams.from_params(load_params().get("clue"))  # the whole section, strictly
    task = stage_item("prepare_clue", "clue.tasks")
    spec = config.task(task)
    params = {"clue.path": config.path, "clue.on_bad_rows": config.on_bad_rows, "clue.max_bad_ratio": config.max_bad_ratio,
              "clue.layouts": config.layouts, f"clue.tasks.{task}": config.tasks[task]}  # as declared in dvc.yaml
    task_dir = resolve(config.path) / spec.dir
    out_dir = ROOT / "data" / "prepared" / "clue" / task
    report_dir = ROOT / "reports" / "prepare_clue"
    files = split_files(task_dir, spec, config.layouts)  # a missing file or a directory fails here, before any run

    with StageRun(f"prepare_clue@{task}", params) as stage:
        stats = []
        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, path in files.items():
                mark = policy.mark()
                stats.append(_write_split(path, spec, split, policy, out_dir / f"{split}.parquet"))
                policy.check_split(path, split, stats[-1].rows, mark, config.max_bad_ratio)
        write_json(out_dir / "labels.json", list(spec.labels))
        rejected = policy.metrics()
        report = markdown_report(f"CLUE {task}", stats, rejected)
        publish_prep_report(stage, report, stats, rejected, report_dir / f"{task}.json", report_dir / f"{task}_lengths.json")


def _write_split(path, spec: TaskSpec, split: str, policy: RowPolicy, out_path) -> SplitStats:
    stats = SplitStats(split)
    with ParquetSink(out_path, CLUE_SCHEMA) as sink:
        for row in iter_split(path, spec, split, policy):
            sink.write(row)
            stats.add(len(row["text_a"]) + len(row["text_b"] or ""), row["label"], row)
    return stats


if __name__ == "__main__":
    run(main)
