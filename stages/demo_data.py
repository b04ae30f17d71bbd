"""demo_data: writes the small, learnable demo corpora to data/demo in the official formats."""

from __future__ import annotations

from stages.common import ROOT, StageRun, stage_params, write_json
from zhnlp.demo import write_demo_corpora


def main() -> None:
    params = stage_params("demo.seed", "demo.scale")
    with StageRun("demo_data", params) as run:
        counts = write_demo_corpora(ROOT / "data" / "demo", seed=params["demo.seed"], scale=params["demo.scale"])
        metrics = {"files": len(counts), "rows": sum(counts.values())}
        write_json(ROOT / "reports" / "demo_data.json", metrics)
        run.log_metrics(metrics)
        run.log_text("\n".join(f"{name}\t{n}" for name, n in sorted(counts.items())) + "\n", "files.tsv")


if __name__ == "__main__":
    main()
