"""Token dataset: our `ShardedTokenDataset` + `ShardWindowSampler` vs Hugging Face `datasets` (Arrow cache).

Synthetic shards written with `zhnlp.text.shards.ShardWriter` (``SHARDS`` × ``SHARD_ROWS`` rows of
``SEQ_LEN`` int32 ``input_ids`` + ``word_ids``). Each reader runs in its own child process (so its
peak RSS is its own) and fetches ``FETCH`` rows, best of ``repeat`` passes:

* ours: the Trainer's access pattern, ``dataset[key]`` for the keys of `ShardWindowSampler`
  (window = cache_shards = 4), one row at a time (what the DataLoader's fetcher does for us);
* datasets: ``Dataset.from_parquet(...)`` (memory-mapped Arrow cache) ``.with_format("numpy")``,
  indexed by a global shuffle and by our sampler's windowed order, one row at a time and in
  batches of 32 (``ds[list_of_32]``, what a batch sampler would ask for);
* the one-time conversion of the shards to datasets' Arrow cache (seconds, MiB on disk).

`datasets` is not a project dependency: install it outside the venv, e.g.
``pip install --target /tmp/hfds datasets`` and run with ``PYTHONPATH=/tmp/hfds``; without it
the benchmark prints SKIP. `python -m benchmarks.bench_token_dataset [--repeat R]`;
results in benchmarks/results/bench_token_dataset.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import MIB, ROOT, bench_env, format_table, ratio, run_child, write_results

SHARDS, SHARD_ROWS, SEQ_LEN, FETCH, BATCH, WINDOW, SEED = 20, 50_000, 128, 200_000, 32, 4, 0
MODES = ("ours_window", "hf_global", "hf_window", "hf_global_b32", "hf_window_b32")


def datasets_missing() -> str | None:
    try:
        import datasets  # noqa: F401
    except ImportError as exc:
        return f"Hugging Face `datasets` is not importable ({exc}); install it outside the venv and set PYTHONPATH"
    return None


def write_shards(folder: Path, shards: int, shard_rows: int) -> list[Path]:
    from zhnlp.text.shards import Row, ShardWriter, shard_paths, shard_schema

    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardWriter(folder, "train", shard_schema(True), shard_rows)
    rng = np.random.default_rng(SEED)
    wids = np.repeat(np.arange(SEQ_LEN), 2)[:SEQ_LEN].astype(np.int32)
    wids[0] = wids[-1] = -1
    wid_list = wids.tolist()
    for start in range(0, shards * shard_rows, 8192):
        block = rng.integers(100, 21128, size=(min(8192, shards * shard_rows - start), SEQ_LEN), dtype=np.int32)
        for ids in block.tolist():
            writer.write(Row(ids, wid_list, "clue", "train", 0))
    writer.close()
    return shard_paths(folder, "train")


def window_keys(paths: list[Path], rows: int) -> list[int]:
    from zhnlp.train.mlm import ShardedTokenDataset, ShardWindowSampler

    ds = ShardedTokenDataset(paths, cache_shards=WINDOW)
    keys = []
    for k in ShardWindowSampler(ds, SEED, WINDOW):
        keys.append(k)
        if len(keys) == rows:
            break
    return keys


def child(mode: str, shards: Path, cache: Path, rows: int, repeat: int) -> dict:
    """One reader in this process: best rows/s over ``repeat`` passes of ``rows`` fetches."""
    from zhnlp.text.shards import shard_paths

    import psutil

    import zhnlp.train.mlm  # noqa: F401 - every reader pays the same imports; RSS is reported above them

    if mode.startswith("hf_"):
        import datasets
    paths = shard_paths(shards, "train")
    out: dict = {"mode": mode, "import_rss_mib": psutil.Process().memory_info().rss / MIB}
    if mode == "hf_convert":
        datasets.disable_progress_bars()
        t0 = time.perf_counter()
        ds = datasets.Dataset.from_parquet([str(p) for p in paths], cache_dir=str(cache), columns=["input_ids", "word_ids"])
        out["seconds"] = time.perf_counter() - t0
        out["cache_mib"] = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / MIB
        out["rows"] = len(ds)
        out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out

    if mode == "ours_window":
        from zhnlp.train.mlm import ShardedTokenDataset, ShardWindowSampler

        ds = ShardedTokenDataset(paths, cache_shards=WINDOW)
        sampler = ShardWindowSampler(ds, SEED, WINDOW)

        def one_pass() -> int:
            n = 0
            for key in sampler:
                item = ds[key]
                n += len(item["input_ids"]) + len(item["word_ids"])
                if n >= rows * 2 * SEQ_LEN:
                    break
            return n

    else:
        import datasets

        datasets.disable_progress_bars()
        hf = datasets.Dataset.from_parquet([str(p) for p in paths], cache_dir=str(cache), columns=["input_ids", "word_ids"])
        hf = hf.with_format("numpy")
        if "global" in mode:
            order = np.random.default_rng(SEED).permutation(len(hf))[:rows].tolist()
        else:
            order = window_keys(paths, rows)
            order = [k % len(hf) for k in order]
        batch = BATCH if mode.endswith("_b32") else 0

        def one_pass() -> int:
            n = 0
            if batch:
                for s in range(0, len(order), batch):
                    b = hf[order[s : s + batch]]
                    n += b["input_ids"].size + b["word_ids"].size
            else:
                for i in order:
                    item = hf[i]
                    n += len(item["input_ids"]) + len(item["word_ids"])
            return n

    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = one_pass()
        best = min(best, time.perf_counter() - t0)
        assert n == rows * 2 * SEQ_LEN, (mode, n)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.update(seconds=best, rows_per_s=rows / best, max_rss_mib=peak, data_rss_mib=peak - out["import_rss_mib"])
    return out


def run(repeat: int, tmp: Path, *, shards: int = SHARDS, shard_rows: int = SHARD_ROWS, fetch: int = FETCH) -> dict:
    missing = datasets_missing()
    if missing:
        print(f"SKIP bench_token_dataset: {missing}")
        return {"skipped": missing}
    fetch = min(fetch, shards * shard_rows)
    shard_dir, cache = tmp / "shards", tmp / "hf-cache"
    t0 = time.perf_counter()
    paths = write_shards(shard_dir, shards, shard_rows)
    write_s = time.perf_counter() - t0
    env = bench_env(tmp)
    env["HF_DATASETS_CACHE"] = str(cache)

    def spawn(mode: str) -> dict:
        cmd = [sys.executable, "-m", "benchmarks.bench_token_dataset", "--child", mode, "--shard-dir", str(shard_dir),
               "--cache", str(cache), "--fetch", str(fetch), "--repeat", str(repeat)]
        proc = run_child(cmd, cwd=ROOT, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"child {mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    convert = spawn("hf_convert")  # one-time: later children find the cache
    readers = {mode: spawn(mode) for mode in MODES}
    ours = readers["ours_window"]["rows_per_s"]
    for r in readers.values():
        r["speed_vs_ours"] = ratio(r["rows_per_s"], ours)
        r["data_rss_vs_ours"] = ratio(r["data_rss_mib"], readers["ours_window"]["data_rss_mib"])
    return {
        "shards": shards, "shard_rows": shard_rows, "seq_len": SEQ_LEN, "fetch_rows": fetch, "window": WINDOW,
        "parquet_mib": sum(p.stat().st_size for p in paths) / MIB, "write_shards_s": write_s,
        "datasets_version": __import__("datasets").__version__,
        "hf_convert": convert, "readers": readers,
    }


def summary(r: dict) -> str:
    if "skipped" in r:
        return f"bench_token_dataset: SKIPPED ({r['skipped']})"
    c = r["hf_convert"]
    head = (
        f"Token dataset, {r['shards']} shards × {r['shard_rows']:,} rows × {r['seq_len']} ids (+ word_ids), "
        f"{r['fetch_rows']:,} rows fetched, best of the run's repeats; Parquet {r['parquet_mib']:.0f} MiB; "
        f"datasets {r['datasets_version']} conversion to its Arrow cache: {c['seconds']:.1f} s, {c['cache_mib']:.0f} MiB extra on disk"
    )
    rows = [[m, x["rows_per_s"], x["speed_vs_ours"], x["max_rss_mib"], x["data_rss_mib"], x["data_rss_vs_ours"]] for m, x in r["readers"].items()]
    head += "\n(peak RSS: whole child; above imports: peak minus RSS after importing torch/transformers/datasets;"
    head += " datasets' memory-mapped pages count as resident once touched)"
    return head + "\n" + format_table(["reader", "rows/s", "speed vs ours", "peak RSS MiB", "above imports MiB", "vs ours"], rows)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--shards", type=int, default=SHARDS, help="number of shards")
    parser.add_argument("--shard-rows", type=int, default=SHARD_ROWS)
    parser.add_argument("--fetch", type=int, default=FETCH, help="rows fetched per pass")
    parser.add_argument("--child", choices=("hf_convert", *MODES), help=argparse.SUPPRESS)
    parser.add_argument("--shard-dir", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.shard_dir), Path(args.cache), args.fetch, args.repeat)))
        return None
    tmp = Path(tempfile.mkdtemp(prefix="zhnlp-bench-token-dataset-"))
    try:
        t0 = time.perf_counter()
        results = {"benchmark": "bench_token_dataset"} | run(args.repeat, tmp, shards=args.shards, shard_rows=args.shard_rows, fetch=args.fetch)
        results["wall_s"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    path = write_results("bench_token_dataset", results)
    print(summary(results))
    print(f"(results: {path}, {results['wall_s']:.0f} s)")
    return results


if __name__ == "__main__":
    main()
