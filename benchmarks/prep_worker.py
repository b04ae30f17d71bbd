"""One measurement in a fresh process: prints {"rows", "kept", "seconds"} as JSON.

    python -m benchmarks.prep_worker MODE CORPUS DATA_DIR OUT_DIR [--keys train,valid,test]

MODE is ``reader`` (the zhnlp reader and ParquetSink, as the stage runs them),
``baseline`` (only json.loads per line, or line.split("\\t") for LCCC text, or one
json.load for LCCC JSON) or ``idle`` (imports only). Every mode imports the same
modules, so the parent can subtract the idle child's peak RSS as the fixed cost.
``rows`` counts input rows (kept + rejected + dropped) so modes compare fairly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas  # noqa: F401 - pyarrow imports it on the first Table.from_pylist (~0.3 s); stages have it via mlflow
import yaml

from zhnlp.data.ape210k import APE_SCHEMA, iter_problems
from zhnlp.data.clue import CLUE_SCHEMA, TaskSpec, iter_split, split_files
from zhnlp.data.lccc import LCCC_SCHEMA, DialogueCleaner, DialogueLimits, iter_dialogues
from zhnlp.data.report import SplitStats
from zhnlp.data.rows import ParquetSink, RowPolicy

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ("clue", "ape210k", "lccc_text", "lccc_json")
CLUE_TASKS = ("tnews", "iflytek", "ocnli", "csl", "cluewsc")
APE_FILES = ("valid.ape.json",)
LCCC_TEXT_FILES = ("toy_train.txt", "toy_valid.txt")
LCCC_JSON_FILE = "toy_data.json"
LCCC_JSON_KEYS = ("train", "valid", "test")


def params() -> dict:
    with open(ROOT / "params.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def clue_inputs(data_dir: Path) -> list[tuple[TaskSpec, str, Path]]:
    """(task spec, split, file) for every split file the stage would read."""
    clue = params()["clue"]
    out = []
    for task in CLUE_TASKS:
        spec = TaskSpec.from_params(task, clue["tasks"][task])
        for split, path in split_files(data_dir / "clue" / spec.dir, spec, clue["layouts"]).items():
            out.append((spec, split, path))
    return out


def input_files(corpus: str, data_dir: Path) -> list[Path]:
    """Every file a corpus measurement reads (the parent scales exactly these)."""
    if corpus == "clue":
        return [path for _, _, path in clue_inputs(data_dir)]
    if corpus == "ape210k":
        return [data_dir / "ape210k" / f for f in APE_FILES]
    if corpus == "lccc_text":
        return [data_dir / "lccc" / f for f in LCCC_TEXT_FILES]
    if corpus == "lccc_json":
        return [data_dir / "lccc" / LCCC_JSON_FILE]
    raise ValueError(f"unknown corpus {corpus!r}; known: {CORPORA}")


# ---------------------------------------------------------------- reader mode (as the stages do)


def read_clue(data_dir: Path, out_dir: Path, keys) -> tuple[int, int]:
    kept = rejected = 0
    inputs = clue_inputs(data_dir)
    for task in CLUE_TASKS:
        task_out = out_dir / "clue" / task
        with RowPolicy("skip", task_out / "quarantine.jsonl") as policy:  # one policy per task
            for spec, split, path in (i for i in inputs if i[0].name == task):
                stats = SplitStats(split)
                with ParquetSink(task_out / f"{split}.parquet", CLUE_SCHEMA) as sink:
                    for row in iter_split(path, spec, split, policy):
                        sink.write(row)
                        stats.add(len(row["text_a"]) + len(row["text_b"] or ""), row["label"], row)
                kept += stats.rows
            rejected += _rejected(policy)
    return kept, rejected


def read_ape210k(data_dir: Path, out_dir: Path, keys) -> tuple[int, int]:
    kept = 0
    with RowPolicy("skip", out_dir / "quarantine.jsonl") as policy:
        for path in input_files("ape210k", data_dir):
            stats = SplitStats(path.name.split(".")[0])
            with ParquetSink(out_dir / f"{stats.split}.parquet", APE_SCHEMA) as sink:
                for row in iter_problems(path, policy):
                    sink.write(row)
                    stats.add(len(row["question"]), None, row)
            kept += stats.rows
        return kept, _rejected(policy)


def read_lccc(sources: list[tuple[str, Path, str | None]], out_dir: Path) -> tuple[int, int]:
    limits = DialogueLimits(**params()["lccc"]["limits"])
    cleaner = DialogueCleaner(limits)  # one cleaner for all splits, as in the stage
    kept = 0
    with RowPolicy("skip", out_dir / "quarantine.jsonl") as policy:
        for split, path, key in sources:
            stats = SplitStats(split)
            with ParquetSink(out_dir / f"{split}.parquet", LCCC_SCHEMA) as sink:
                for row in iter_dialogues(path, policy, cleaner, key=key):
                    sink.write(row)
                    stats.add(sum(len(t) for t in row["turns"]), None, row)
            kept += stats.rows
        return kept, _rejected(policy)


def read_lccc_text(data_dir: Path, out_dir: Path, keys) -> tuple[int, int]:
    sources = [(p.stem, p, None) for p in input_files("lccc_text", data_dir)]
    return read_lccc(sources, out_dir)


def read_lccc_json(data_dir: Path, out_dir: Path, keys) -> tuple[int, int]:
    (path,) = input_files("lccc_json", data_dir)
    return read_lccc([(key, path, key) for key in keys], out_dir)


def _rejected(policy: RowPolicy) -> int:
    return sum(policy.bad.values()) + sum(policy.dropped.values())


READERS = {"clue": read_clue, "ape210k": read_ape210k, "lccc_text": read_lccc_text, "lccc_json": read_lccc_json}


# ---------------------------------------------------------------- baseline mode (minimum parsing)


def baseline(corpus: str, data_dir: Path, keys) -> int:
    rows = 0
    for path in input_files(corpus, data_dir):
        if corpus == "lccc_json":
            with open(path, encoding="utf-8") as fh:
                obj = json.load(fh)
            rows += sum(len(obj[k]) for k in keys)
            continue
        parse = _split_tabs if corpus == "lccc_text" else json.loads
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    parse(line)
                    rows += 1
    return rows


def _split_tabs(line: str) -> list[str]:
    return line.rstrip("\r\n").split("\t")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("reader", "baseline", "idle"))
    parser.add_argument("corpus", choices=CORPORA)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--keys", default=",".join(LCCC_JSON_KEYS), help="LCCC JSON splits to read")
    args = parser.parse_args()
    keys = args.keys.split(",")

    t0 = time.perf_counter()
    if args.mode == "reader":
        kept, rejected = READERS[args.corpus](args.data_dir, args.out_dir, keys)
        rows = kept + rejected
    elif args.mode == "baseline":
        rows = kept = baseline(args.corpus, args.data_dir, keys)
    else:
        rows = kept = 0
    seconds = time.perf_counter() - t0
    json.dump({"rows": rows, "kept": kept, "seconds": seconds}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
