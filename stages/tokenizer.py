"""tokenizer@<name>: train (char, word) or copy (pretrained) a tokenizer -> models/tokenizers/<name>/.

Trained on the prepared train splits (every CLUE task's text_a/text_b, Ape210K questions,
LCCC turns); metrics (vocab sizes, UNK rate and tokens per character on each corpus's
train and evaluation split) go to reports/tokenizer/<name>.json; the training time goes to
MLflow only (a DVC metric must not change on a rerun). Under ``dvc repro`` the name comes
from DVC_STAGE; by hand: ``python -m stages.tokenizer NAME``.
"""

from __future__ import annotations

import itertools
import shutil
import time

from stages.common import ROOT, StageRun, fail, resolve, run, stage_item, stage_params, write_json
from zhnlp.text.encoding import CORPORA, EVAL_SPLITS, TRAIN_SPLITS, corpus_files, iter_texts
from zhnlp.text.tokenization import META_FILE, TokenizerError, configure_jieba, load_tokenizer
from zhnlp.text.tokenizer_training import build_tokenizer, measure
from zhnlp.text.tokenizer_settings import as_dict, tokenizer_settings

SAMPLE_TEXTS = ("王老师买了5支钢笔，每支6元。", "你觉得iPhone12好用吗？", "研究生命的起源")


def main() -> None:
    name = stage_item("tokenizer", "tokenizer")
    key = f"tokenizer.{name}"
    params = stage_params(key)
    config = as_dict(tokenizer_settings(params[key], key))
    if config.get("mode") == "pretrained" and config.get("path"):
        config["path"] = str(resolve(config["path"]))
    prepared = ROOT / "data" / "prepared"
    out_dir = ROOT / "models" / "tokenizers" / name
    metrics_path = ROOT / "reports" / "tokenizer" / f"{name}.json"

    with StageRun(f"tokenizer@{name}", params) as tracking:
        configure_jieba(ROOT / ".jieba_cache")
        if out_dir.exists():
            shutil.rmtree(out_dir)

        def training_texts():  # read twice (see zhnlp.text.tokenization.train_char_tokenizer)
            return itertools.chain.from_iterable(iter_texts(prepared, c, TRAIN_SPLITS[c]) for c in CORPORA)

        if config.get("mode") != "pretrained" and not any(corpus_files(prepared, c, TRAIN_SPLITS[c]) for c in CORPORA):
            fail(f"no prepared train split under {prepared}; run the prepare stages first")
        t0 = time.perf_counter()
        try:
            info = build_tokenizer(config, training_texts, out_dir)
        except TokenizerError as err:
            fail(f"{key}: {err}")
        train_seconds = time.perf_counter() - t0
        tok = load_tokenizer(out_dir)  # through AutoTokenizer.from_pretrained, as every consumer loads it

        corpora = {}
        for corpus in CORPORA:
            corpora[corpus] = {
                role: measure(tok, iter_texts(prepared, corpus, split)).metrics()
                for role, split in (("train", TRAIN_SPLITS[corpus]), ("eval", EVAL_SPLITS[corpus]))
            }
        training = {k: sum(corpora[c]["train"][k] for c in CORPORA) for k in ("texts", "chars")}
        metrics = info | {
            "vocab_size": tok.vocab_size,
            "training_texts": training["texts"],
            "training_chars": training["chars"],
            "corpora": corpora,
        }
        write_json(metrics_path, metrics)
        tracking.log_metrics({k: v for k, v in metrics.items() if k != "mode"} | {"train_seconds": round(train_seconds, 3)})
        for fname in ("tokenizer.json", "tokenizer_config.json", META_FILE):
            if (out_dir / fname).is_file():
                tracking.log_artifact(out_dir / fname, "tokenizer")
        samples = [f"{t}\n  {' '.join(tok.tokenize(t))}" for t in SAMPLE_TEXTS]
        tracking.log_text("\n".join(samples) + "\n", "sample_tokenization.txt")
        print(_summary(name, metrics))
        print("\n".join(samples))


def _summary(name: str, m: dict) -> str:
    lines = [f"tokenizer {name}: mode {m['mode']}, vocab {m['vocab_size']}" + (f" ({m['char_vocab_size']} char + {m['words']} words)" if "words" in m else "")]
    lines.append(f"{'corpus':<10}{'split':<7}{'texts':>8}{'chars':>10}{'tokens':>10}{'tok/char':>10}{'unk rate':>10}")
    for corpus, roles in m["corpora"].items():
        for role, s in roles.items():
            lines.append(f"{corpus:<10}{role:<7}{s['texts']:>8}{s['chars']:>10}{s['tokens']:>10}{s['tokens_per_char']:>10.4f}{s['unk_rate']:>10.5f}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
