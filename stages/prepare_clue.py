"""prepare_clue@<task>: CLUE/FewCLUE JSON lines -> data/prepared/clue/<task>/<split>.parquet."""

from __future__ import annotations

import argparse

from stages.common import ROOT, StageRun, fail, publish_prep_report, resolve, stage_params, write_json
from zhnlp.clue import CLUE_SCHEMA, TaskSpec, iter_split, split_files
from zhnlp.report import SplitStats, markdown_report
from zhnlp.rows import BadInputError, ParquetSink, RowPolicy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("task")
    task = parser.parse_args().task
    keys = ("clue.path", "clue.on_bad_rows", "clue.layouts", f"clue.tasks.{task}")
    params = stage_params(*keys)
    spec = TaskSpec.from_params(task, params[f"clue.tasks.{task}"])
    task_dir = resolve(params["clue.path"]) / spec.dir
    out_dir = ROOT / "data" / "prepared" / "clue" / task
    report_dir = ROOT / "reports" / "prepare_clue"

    with StageRun(f"prepare_clue@{task}", params) as run:
        stats = []
        with RowPolicy(params["clue.on_bad_rows"], out_dir / "quarantine.jsonl") as policy:
            try:
                for split, path in split_files(task_dir, spec, params["clue.layouts"]).items():
                    stats.append(_write_split(path, spec, split, policy, out_dir / f"{split}.parquet"))
            except (BadInputError, FileNotFoundError) as err:
                fail(str(err))
        write_json(out_dir / "labels.json", list(spec.labels))
        rejected = policy.metrics()
        report = markdown_report(f"CLUE {task}", stats, rejected)
        publish_prep_report(run, report, stats, rejected, report_dir / f"{task}.json", report_dir / f"{task}_lengths.json")


def _write_split(path, spec: TaskSpec, split: str, policy: RowPolicy, out_path) -> SplitStats:
    stats = SplitStats(split)
    with ParquetSink(out_path, CLUE_SCHEMA) as sink:
        for row in iter_split(path, spec, split, policy):
            sink.write(row)
            stats.add(len(row["text_a"]) + len(row["text_b"] or ""), row["label"], row)
    return stats


if __name__ == "__main__":
    main()
