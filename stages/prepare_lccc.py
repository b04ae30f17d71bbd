"""prepare_lccc: LCCC dialogues (JSON or tab-separated text) -> data/prepared/lccc/<split>.parquet."""

from __future__ import annotations

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run
from zhnlp.data.lccc import LCCC_SCHEMA, DialogueCleaner, LcccParams, iter_dialogues
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy, check_file
from zhnlp.data.split_carving import RoutedSinks, SplitRouter
from zhnlp.progress import progress


def main() -> None:
    section = load_params().get("lccc")
    config = LcccParams.from_params(section)  # strict: every key known and typed
    params = {f"lccc.{key}": value for key, value in section.items()}  # as declared in dvc.yaml
    root = resolve(config.path)
    out_dir = ROOT / "data" / "prepared" / "lccc"
    report_dir = ROOT / "reports" / "prepare_lccc"
    cleaner = DialogueCleaner(config.limits)
    for split, source in config.splits.items():  # a missing file or a directory fails here, before any run
        check_file(root / source.file, f"lccc split {split!r}:")

    router = SplitRouter(config.carve)
    with StageRun("prepare_lccc", params, task="lccc") as stage:
        stats = {s: SplitStats(s) for name in config.splits for s in router.targets(name)}
        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, source in config.splits.items():
                mark = policy.mark()
                read = _write_split(root / source.file, source.key, split, policy, cleaner, router, out_dir, stats)
                policy.check_split(root / source.file, split, read, mark, config.max_bad_ratio)
        rejected = policy.metrics() | {"empty_turns_removed": cleaner.empty_turns_removed, "truncated_dialogues": cleaner.truncated_dialogues}
        report = markdown_report("LCCC", list(stats.values()), rejected)
        publish_prep_report(stage, report, list(stats.values()), rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, key, split: str, policy: RowPolicy, cleaner: DialogueCleaner, router: SplitRouter, out_dir, stats: dict) -> int:
    """Stream one shipped split into its own file and the splits carved from it; the dialogues read."""
    read = 0

    def count(target: str, row: dict) -> None:
        stats[target].add(sum(len(t) for t in row["turns"]), None, row)

    with RoutedSinks(router, split, out_dir, lambda path: ParquetSink(path, LCCC_SCHEMA), count) as sinks:
        for row in progress(iter_dialogues(path, policy, cleaner, key=key), f"lccc {split}", unit="dialogues"):
            sinks.write(row, "\n".join(row["turns"]))  # the dialogue's text decides a carved row's split
            read += 1
    return read


if __name__ == "__main__":
    run(main)
