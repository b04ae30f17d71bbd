"""prepare_lccc: LCCC dialogues (JSON or tab-separated text) -> data/prepared/lccc/<split>.parquet."""

from __future__ import annotations

from stages.common import ROOT, StageRun, load_params, publish_prep_report, resolve, run
from zhnlp.data.lccc import LCCC_SCHEMA, DialogueCleaner, LcccParams, iter_dialogues
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy, check_file


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

    with StageRun("prepare_lccc", params) as stage:
        stats = []
        with RowPolicy(config.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            for split, source in config.splits.items():
                mark = policy.mark()
                stats.append(_write_split(root / source.file, source.key, split, policy, cleaner, out_dir / f"{split}.parquet"))
                policy.check_split(root / source.file, split, stats[-1].rows, mark, config.max_bad_ratio)
        rejected = policy.metrics() | {"empty_turns_removed": cleaner.empty_turns_removed, "truncated_dialogues": cleaner.truncated_dialogues}
        report = markdown_report("LCCC", stats, rejected)
        publish_prep_report(stage, report, stats, rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, key, split: str, policy: RowPolicy, cleaner: DialogueCleaner, out_path) -> SplitStats:
    stats = SplitStats(split)
    with ParquetSink(out_path, LCCC_SCHEMA) as sink:
        for row in iter_dialogues(path, policy, cleaner, key=key):
            sink.write(row)
            stats.add(sum(len(t) for t in row["turns"]), None, row)
    return stats


if __name__ == "__main__":
    run(main)
