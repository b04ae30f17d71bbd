"""encode@<tokenizer>: prepared train splits (+ the pretrain_text texts) -> data/encoded/<tokenizer>/ Parquet shards.

Schema and split rules: zhnlp/text/encoding.py. Metrics: reports/encode/<tokenizer>.json (counts only;
the time and throughput go to MLflow, so a rerun leaves the DVC metrics unchanged). Under
``dvc repro`` the name comes from DVC_STAGE; by hand: ``python -m stages.encode TOKENIZER``.
"""

from __future__ import annotations

import itertools
import shutil
import time

from stages.common import ROOT, StageRun, fail, run, stage_item, stage_params, write_json
from zhnlp.text.encoding import CORPORA, SPLITS, TRAIN_SPLITS, EncodeConfig, encode_documents, iter_documents, iter_text_documents
from zhnlp.data.rows import BadInputError
from zhnlp.text.tokenization import TokenizerError, configure_jieba, load_tokenizer


def main() -> None:
    name = stage_item("encode", "tokenizer")
    params = stage_params("encode", "pretrain_text")
    config = EncodeConfig.from_params(params["encode"])
    tok_dir = ROOT / "models" / "tokenizers" / name
    prepared = ROOT / "data" / "prepared"
    out_dir = ROOT / "data" / "encoded" / name
    metrics_path = ROOT / "reports" / "encode" / f"{name}.json"
    texts = list(params["pretrain_text"] or {})  # prepare_text@<name> outputs, in params order

    with StageRun(f"encode@{name}", params) as tracking:
        configure_jieba(ROOT / ".jieba_cache")
        if not tok_dir.is_dir():
            fail(f"no tokenizer at {tok_dir}; run tokenizer@{name} first")
        try:
            tok = load_tokenizer(tok_dir)
        except TokenizerError as err:
            fail(str(err))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        documents = itertools.chain(
            itertools.chain.from_iterable(iter_documents(prepared, c, TRAIN_SPLITS[c]) for c in CORPORA),
            iter_text_documents(prepared, texts),
        )
        t0 = time.perf_counter()
        try:
            stats = encode_documents(tok, documents, out_dir, config, desc=f"encode@{name}")
        except (BadInputError, FileNotFoundError, ValueError) as err:
            fail(str(err))
        seconds = time.perf_counter() - t0
        total_tokens = sum(stats["splits"][s]["tokens"] for s in SPLITS)
        metrics = {
            "mode": stats["mode"],
            "vocab_size": stats["vocab_size"],
            "input_documents": stats["input_documents"],
            "empty_documents": stats["empty_documents"],
            "windowed_documents": stats["windowed_documents"],
            "splits": {s: {k: v for k, v in stats["splits"][s].items() if k != "shards"} | {"shards": len(stats["splits"][s]["shards"])} for s in SPLITS},
        }
        write_json(metrics_path, metrics)
        timing = {"encode_seconds": round(seconds, 3), "tokens_per_second": round(total_tokens / seconds, 1) if seconds > 0 else 0.0}
        tracking.log_metrics({k: v for k, v in metrics.items() if k != "mode"} | timing)
        tracking.log_artifact(out_dir / "stats.json")
        print(_summary(name, metrics | timing))


def _summary(name: str, m: dict) -> str:
    lines = [f"encode {name}: mode {m['mode']}, vocab {m['vocab_size']}, {m['windowed_documents']} documents windowed, {m['encode_seconds']:.1f} s"]
    lines.append(f"{'split':<9}{'source':<24}{'documents':>10}{'rows':>9}{'tokens':>10}")
    for split, s in m["splits"].items():
        for source, c in s["sources"].items():
            lines.append(f"{split:<9}{source:<24}{c['documents']:>10}{c['rows']:>9}{c['tokens']:>10}")
        lines.append(f"{split:<9}{'(all, ' + str(s['shards']) + ' shards)':<24}{s['documents']:>10}{s['rows']:>9}{s['tokens']:>10}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
