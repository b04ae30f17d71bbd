"""prepare_ape210k: Ape210K JSON lines -> data/prepared/ape210k/<split>.parquet (normalised, answer-checked)."""

from __future__ import annotations

from stages.common import ROOT, StageRun, fail, publish_prep_report, resolve, stage_params
from zhnlp.ape210k import APE_SCHEMA, iter_problems
from zhnlp.report import SplitStats, markdown_report
from zhnlp.rows import BadInputError, ParquetSink, RowPolicy


def main() -> None:
    params = stage_params("ape210k.path", "ape210k.splits", "ape210k.on_bad_rows")
    root = resolve(params["ape210k.path"])
    out_dir = ROOT / "data" / "prepared" / "ape210k"
    report_dir = ROOT / "reports" / "prepare_ape210k"

    with StageRun("prepare_ape210k", params) as run:
        stats = []
        with RowPolicy(params["ape210k.on_bad_rows"], out_dir / "quarantine.jsonl") as policy:
            try:
                for split, name in params["ape210k.splits"].items():
                    stats.append(_write_split(root / name, split, policy, out_dir / f"{split}.parquet"))
            except (BadInputError, FileNotFoundError) as err:
                fail(str(err))
        rejected = policy.metrics()
        report = markdown_report("Ape210K", stats, rejected)
        publish_prep_report(run, report, stats, rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, split: str, policy: RowPolicy, out_path) -> SplitStats:
    if not path.is_file():
        raise FileNotFoundError(f"ape210k split {split!r}: {path} not found")
    stats = SplitStats(split)
    with ParquetSink(out_path, APE_SCHEMA) as sink:
        for row in iter_problems(path, policy):
            sink.write(row)
            stats.add(len(row["question"]), None, row)
    return stats


if __name__ == "__main__":
    main()
