"""prepare_clue@<task>: CLUE/FewCLUE files of any task kind -> data/prepared/clue/<task>/<split>.parquet.

The task's ``kind`` (``clue.tasks.<task>.kind``: classification, span_extraction, multiple_choice,
idiom_cloze, ner) picks the reader and the row schema (``zhnlp.data.clue.reader_for``). Writes one
Parquet file per split (carved splits included), ``task.json`` (kind, labels) and, for classification,
``labels.json``. Under ``dvc repro`` the task comes from DVC_STAGE (no params text reaches the shell);
by hand: ``python -m stages.prepare_clue TASK``.
"""

from __future__ import annotations

from collections import Counter

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run, stage_item, write_json
from zhnlp.data.clue import ClueParams, reader_for, split_paths
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy
from zhnlp.data.split_carving import RoutedSinks, SplitRouter, parse_carves
from zhnlp.progress import progress


def main() -> None:
    config = ClueParams.from_params(load_params().get("clue"))  # the whole section, strictly
    task = stage_item("prepare_clue", "clue.tasks")
    spec = config.task(task)
    params = {"clue.path": config.path, "clue.on_bad_rows": config.on_bad_rows, "clue.max_bad_ratio": config.max_bad_ratio,
              "clue.layouts": config.layouts, f"clue.tasks.{task}": config.tasks[task]}  # as declared in dvc.yaml
    task_dir = resolve(config.path) / spec.dir
    out_dir = ROOT / "data" / "prepared" / "clue" / task
    report_dir = ROOT / "reports" / "prepare_clue"
    files = split_paths(task_dir, spec, config.layouts)  # a missing file or a directory fails here, before any run
    router = SplitRouter(parse_carves(spec.carve, files, f"clue.tasks.{task}.carve"))
    reader = reader_for(spec.kind)

    with StageRun(f"prepare_clue@{task}", params | {"kind": spec.kind}, task=task) as stage:
        stats: dict[str, SplitStats] = {}
        repaired: Counter = Counter()  # rows kept after a repair the reader names (e.g. fixed_answer_offsets)

        def count(split: str, row: dict) -> None:
            stats.setdefault(split, SplitStats(split)).add(reader.row_chars(row), row.get("label"), row)

        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, paths in files.items():
                mark = policy.mark()
                for target in router.targets(split):
                    stats.setdefault(target, SplitStats(target))
                sink = lambda path: ParquetSink(path, reader.schema)  # noqa: E731
                with RoutedSinks(router, split, out_dir, sink, count) as sinks:
                    for row in progress(reader.iter_split(paths, split, policy, spec, repaired), f"{task} {split}"):
                        sinks.write(row, reader.carve_key(row))
                kept = sum(stats[s].rows for s in router.targets(split))
                policy.check_split(paths[0], split, kept, mark, config.max_bad_ratio)
        if spec.kind == "classification":
            write_json(out_dir / "labels.json", list(spec.labels))
        write_json(out_dir / "task.json", {"kind": spec.kind, "labels": list(spec.labels)})
        rejected = policy.metrics() | ({"repaired": dict(sorted(repaired.items()))} if repaired else {})
        report = markdown_report(f"CLUE {task} ({spec.kind})", list(stats.values()), rejected)
        publish_prep_report(stage, report, list(stats.values()), rejected, report_dir / f"{task}.json", report_dir / f"{task}_lengths.json")


if __name__ == "__main__":
    run(main)
