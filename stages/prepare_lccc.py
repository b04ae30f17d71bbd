"""prepare_lccc: LCCC dialogues (JSON or tab-separated text) -> data/prepared/lccc/<split>.parquet."""

from __future__ import annotations

from stages.common import ROOT, StageRun, fail, publish_prep_report, resolve, stage_params
from zhnlp.lccc import LCCC_SCHEMA, DialogueCleaner, DialogueLimits, iter_dialogues
from zhnlp.report import SplitStats, markdown_report
from zhnlp.rows import BadInputError, ParquetSink, RowPolicy


def main() -> None:
    params = stage_params("lccc.path", "lccc.splits", "lccc.limits", "lccc.on_bad_rows")
    root = resolve(params["lccc.path"])
    out_dir = ROOT / "data" / "prepared" / "lccc"
    report_dir = ROOT / "reports" / "prepare_lccc"
    cleaner = DialogueCleaner(DialogueLimits(**params["lccc.limits"]))

    with StageRun("prepare_lccc", params) as run:
        stats = []
        with RowPolicy(params["lccc.on_bad_rows"], out_dir / "quarantine.jsonl") as policy:
            try:
                for split, source in params["lccc.splits"].items():
                    stats.append(_write_split(root / source["file"], source.get("key"), split, policy, cleaner, out_dir / f"{split}.parquet"))
            except (BadInputError, FileNotFoundError, ValueError) as err:
                fail(str(err))
        rejected = policy.metrics() | {"empty_turns_removed": cleaner.empty_turns_removed, "truncated_dialogues": cleaner.truncated_dialogues}
        report = markdown_report("LCCC", stats, rejected)
        publish_prep_report(run, report, stats, rejected, report_dir / "metrics.json", report_dir / "lengths.json")


def _write_split(path, key, split: str, policy: RowPolicy, cleaner: DialogueCleaner, out_path) -> SplitStats:
    if not path.is_file():
        raise FileNotFoundError(f"lccc split {split!r}: {path} not found")
    stats = SplitStats(split)
    with ParquetSink(out_path, LCCC_SCHEMA) as sink:
        for row in iter_dialogues(path, policy, cleaner, key=key):
            sink.write(row)
            stats.add(sum(len(t) for t in row["turns"]), None, row)
    return stats


if __name__ == "__main__":
    main()
