"""prepare_text@<name>: unlabelled JSON-lines text (``pretrain_text.<name>``) -> data/prepared/text/<name>/text.parquet.

The source file is this stage's DVC dependency, so editing or replacing it reruns the stage and,
through ``data/prepared``, ``encode`` and pretraining. ``encode`` reads the texts of exactly the
names in ``pretrain_text``. Under ``dvc repro`` the name comes from DVC_STAGE; by hand:
``python -m stages.prepare_text NAME``.
"""

from __future__ import annotations

from stages.common import ROOT, StageRun, publish_prep_report, resolve, run, stage_item, stage_params
from zhnlp.config import from_params
from zhnlp.data.report import SplitStats, markdown_report
from zhnlp.data.rows import ParquetSink, RowPolicy, check_file
from zhnlp.data.unlabeled_text import TEXT_SCHEMA, TextSource, iter_unlabeled
from zhnlp.progress import progress


def main() -> None:
    name = stage_item("prepare_text", "pretrain_text")
    key = f"pretrain_text.{name}"
    params = stage_params(key)
    source = from_params(TextSource, params[key], key)  # strict: unknown keys, wrong types
    path = resolve(source.path)
    check_file(path, f"{key}:")  # a missing file or a directory fails here, before any run
    out_dir = ROOT / "data" / "prepared" / "text" / name
    report_dir = ROOT / "reports" / "prepare_text"

    with StageRun(f"prepare_text@{name}", params) as stage:
        stats = SplitStats("text")
        with RowPolicy(source.on_bad_rows, out_dir / "quarantine.jsonl") as policy:
            mark = policy.mark()
            with ParquetSink(out_dir / "text.parquet", TEXT_SCHEMA) as sink:
                for row in progress(iter_unlabeled(path, source.field, policy), f"text {name}"):
                    sink.write(row)
                    stats.add(len(row["text"]), None, row)
            policy.check_split(path, "text", stats.rows, mark, source.max_bad_ratio)
        rejected = policy.metrics()
        report = markdown_report(f"Unlabelled text {name}", [stats], rejected)
        publish_prep_report(stage, report, [stats], rejected, report_dir / f"{name}.json", report_dir / f"{name}_lengths.json")


if __name__ == "__main__":
    run(main)
