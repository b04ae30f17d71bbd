"""tokenizer@<name>: train (char, word) or copy (pretrained) a tokenizer -> models/tokenizers/<name>/.

Trained on the prepared train splits (every CLUE task's text_a/text_b, Ape210K questions,
LCCC turns); metrics (vocab sizes, UNK rate and tokens per character on each corpus's
train and evaluation split) go to reports/tokenizer/<name>.json.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import time

from stages.common import ROOT, StageRun, fail, resolve, stage_params, write_json
from zhnlp.encoding import CORPORA, EVAL_SPLITS, TRAIN_SPLITS, corpus_files, iter_texts
from zhnlp.tokenization import META_FILE, TokenizerError, build_tokenizer, configure_jieba, load_tokenizer, measure

SAMPLE_TEXTS = ("王老师买了5支钢笔，每支6元。", "你觉得iPhone12好用吗？", "研究生命的起源")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    name = parser.parse_args().name
    key = f"tokenizer.{name}"
    try:
        params = stage_params(key)
    except KeyError as err:
        fail(str(err.args[0]))
    config = dict(params[key])
    if config.get("mode") == "pretrained" and config.get("path"):
        config["path"] = str(resolve(config["path"]))
    prepared = ROOT / "data" / "prepared"
    out_dir = ROOT / "models" / "tokenizers" / name
    metrics_path = ROOT / "reports" / "tokenizer" / f"{name}.json"

    with StageRun(f"tokenizer@{name}", params) as run:
        configure_jieba(ROOT / ".jieba_cache")
        if out_dir.exists():
            shutil.rmtree(out_dir)

        def training_texts():  # read twice (see zhnlp.tokenization.train_char_tokenizer)
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
            "train_seconds": round(train_seconds, 3),
            "corpora": corpora,
        }
        write_json(metrics_path, metrics)
        run.log_metrics({k: v for k, v in metrics.items() if k != "mode"})
        for fname in ("tokenizer.json", "tokenizer_config.json", META_FILE):
            if (out_dir / fname).is_file():
                run.log_artifact(out_dir / fname, "tokenizer")
        samples = [f"{t}\n  {' '.join(tok.tokenize(t))}" for t in SAMPLE_TEXTS]
        run.log_text("\n".join(samples) + "\n", "sample_tokenization.txt")
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
    main()
