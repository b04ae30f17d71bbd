"""prepare_ape210k: Ape210K JSON lines -> data/prepared/ape210k/<split>.parquet (normalised, answer-checked)."""

from __future__ import annotations

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run
from zhnlp.data.ape210k import APE_SCHEMA, ApeParams, iter_problems
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy, check_file


def main() -> None:
    section = load_params().get("ape210k")
    config = ApeParams.from_params(section)  # strict: every key known and typed
    params = {f"ape210k.{key}": value for key, value in section.items()}  # as declared in dvc.yaml
    root = resolve(config.path)
    out_dir = ROOT / "data" / "prepared" / "ape210k"
    report_dir = ROOT / "reports" / "prepare_ape210k"
    for split, name in config.splits.items():  # a missing file or a directory fails here, before any run
        check_file(root / name, f"ape210k split {split!r}:")

    with StageRun("prepare_ape210k", params) as stage:
        stats = []
        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, name in config.splits.items():
                mark = policy.mark()
                stats.append(_write_split(root / name, split, policy, out_dir / f"{split}.parquet"))
                policy.check_split(root / name, split, stats[-1].rows, mark, config.max_bad_ratio)
        rejected = policy.metrics()
        report = markdown_report("Ape210K", stats, rejected)
        publish_prep_report(stage, report, stats, rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, split: str, policy: RowPolicy, out_path) -> SplitStats:
    stats = SplitStats(split)
    with ParquetSink(out_path, APE_SCHEMA) as sink:
        for row in iter_problems(path, policy):
            sink.write(row)
            stats.add(len(row["question"]), None, row)
    return stats


if __name__ == "__main__":
    run(main)
