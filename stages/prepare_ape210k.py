"""prepare_ape210k: Ape210K JSON lines -> data/prepared/ape210k/<split>.parquet (normalised, answer-checked)."""

from __future__ import annotations

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run
from zhnlp.data.ape210k import APE_SCHEMA, ApeParams, iter_problems
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy, check_file
from zhnlp.data.split_carving import RoutedSinks, SplitRouter
from zhnlp.progress import progress


def main() -> None:
    section = load_params().get("ape210k")
    config = ApeParams.from_params(section)  # strict: every key known and typed
    params = {f"ape210k.{key}": value for key, value in section.items()}  # as declared in dvc.yaml
    root = resolve(config.path)
    out_dir = ROOT / "data" / "prepared" / "ape210k"
    report_dir = ROOT / "reports" / "prepare_ape210k"
    for split, name in config.splits.items():  # a missing file or a directory fails here, before any run
        check_file(root / name, f"ape210k split {split!r}:")

    router = SplitRouter(config.carve)
    with StageRun("prepare_ape210k", params, task="ape210k") as stage:
        stats = {s: SplitStats(s) for name in config.splits for s in router.targets(name)}
        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, name in config.splits.items():
                mark = policy.mark()
                read = _write_split(root / name, split, policy, router, out_dir, stats)
                policy.check_split(root / name, split, read, mark, config.max_bad_ratio)
        rejected = policy.metrics()
        report = markdown_report("Ape210K", list(stats.values()), rejected)
        publish_prep_report(stage, report, list(stats.values()), rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, split: str, policy: RowPolicy, router: SplitRouter, out_dir, stats: dict) -> int:
    """Stream one shipped split into its own file and the splits carved from it; the rows read."""
    read = 0

    def count(target: str, row: dict) -> None:
        stats[target].add(len(row["question"]), None, row)

    with RoutedSinks(router, split, out_dir, lambda path: ParquetSink(path, APE_SCHEMA), count) as sinks:
        for row in progress(iter_problems(path, policy), f"ape210k {split}"):
            sinks.write(row, str(row["id"]))  # the problem id decides a carved row's split
            read += 1
    return read


if __name__ == "__main__":
    run(main)
