"""demo_data: writes the small, learnable demo corpora to data/demo in the official formats (see the demo package)."""

from __future__ import annotations

from demo import DemoConfig, write_demo_corpora
from stages.common import ROOT, StageRun, run, stage_params, write_json
from zhnlp.config import from_params


def main() -> None:
    params = stage_params("demo")
    cfg = from_params(DemoConfig, params["demo"], "demo")
    with StageRun("demo_data", params) as tracking:
        counts = write_demo_corpora(ROOT / "data" / "demo", seed=cfg.seed, scale=cfg.scale)
        metrics = {"files": len(counts), "rows": sum(counts.values())}
        write_json(ROOT / "reports" / "demo_data.json", metrics)
        tracking.log_metrics(metrics)
        tracking.log_text("\n".join(f"{name}\t{n}" for name, n in sorted(counts.items())) + "\n", "files.tsv")


if __name__ == "__main__":
    run(main)
