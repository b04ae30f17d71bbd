"""LCCC dedupe memory: the constant-memory DigestStore against the old Python set, 1M vs 12M dialogues.

Each measurement is a fresh child process (``--child IMPL N``) that generates N synthetic
LCCC dialogues on the fly (spaced characters, 3 turns, all distinct except ~6% repeats:
every 20th row repeats a row from anywhere earlier, every 50th one of the last 100; the
stream is cut into train/valid/test "files" as the stage's single cleaner sees them) and
runs them through :class:`DialogueCleaner` with:

* ``set``: the old dedupe, one Python int per unique digest in a set (``SetDigests``);
* ``store``: :class:`zhnlp.data.lccc.DigestStore` (the default);
* ``off``: ``dedupe: false`` (the cleaner without dedupe; speed floor, 1M only).

The parent reaps each child with wait4 for its peak RSS (ru_maxrss) and reports, per
implementation, peak RSS at N small and large, their ratio (target <= 1.2 for ``store``),
and rows/s of the loop (generation + cleaning; generation alone is ~6M rows/s). Every
child returns a checksum of the kept row numbers and the drop counts: the set and the
store must agree. The small N runs ``repeat`` times (best rows/s, highest RSS), the large
one once. ``ZHNLP_BENCH_LCCC_N="1000000,4000000"`` changes the sizes.

`python -m benchmarks bench_lccc_dedupe`; results in benchmarks/results/bench_lccc_dedupe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

from benchmarks.common import MIB, ROOT, bench_env, format_table, ratio, run_child
from zhnlp.data.lccc import DialogueCleaner, DialogueLimits
from zhnlp.data.rows import RowPolicy

SIZES = (1_000_000, 12_000_000)
IMPLS = ("set", "store")
CHARS = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生会自着去过家学对她里后小么心多天能好都然没日起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
PHRASES = [  # 256 distinct spaced phrases of 4-12 characters: two name k, the rest vary
    " ".join([CHARS[k % len(CHARS)], CHARS[k // len(CHARS)], *(CHARS[(k * 7 + m * 13) % len(CHARS)] for m in range(2 + k % 9))])
    for k in range(256)
]
SPLITS = (("train", 0.9), ("valid", 0.95), ("test", 1.0))  # split -> end of its share of the stream


class SetDigests:
    """The old dedupe: each unique digest as a Python int in a set (~70 bytes each)."""

    def __init__(self):
        self._digests: set[int] = set()

    def add(self, digest: bytes) -> bool:
        key = int.from_bytes(digest, "little")
        if key in self._digests:
            return False
        self._digests.add(key)
        return True


def dialogues(n: int):
    """(row number, raw turns) for n rows; row i is distinct (i < 256**3) unless it repeats an earlier row."""
    for i in range(n):
        j = i
        if i % 20 == 19:
            j = (i * 2654435761) % i  # anywhere earlier
        elif i % 50 == 1 and i > 100:
            j = i - 1 - (i * 40503) % 100  # one of the last 100
        yield i, [PHRASES[j & 255], PHRASES[(j >> 8) & 255], PHRASES[(j >> 16) & 255] + " o k"]


def child(impl: str, n: int) -> dict:
    digests = SetDigests() if impl == "set" else None
    cleaner = DialogueCleaner(DialogueLimits(dedupe=impl != "off"), digests=digests)
    policy = RowPolicy("skip")
    cuts = [(name, int(n * end)) for name, end in SPLITS]
    checksum, split = 0, 0
    t0 = time.perf_counter()
    for i, turns in dialogues(n):
        while i >= cuts[split][1]:
            split += 1
        if cleaner.clean(cuts[split][0], i, turns, policy) is not None:
            checksum = (checksum * 1_000_003 + i) & 0xFFFF_FFFF_FFFF
    seconds = time.perf_counter() - t0
    cleaner.close()
    return {"rows": n, "kept": cleaner.kept, "dropped": dict(policy.dropped), "checksum": checksum, "seconds": seconds,
            "self_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB}


def measure(impl: str, n: int, tmp: Path) -> dict:
    env = bench_env(tmp) | {"TMPDIR": str(tmp)}  # SQLite's scratch file goes here
    proc = run_child([sys.executable, "-m", "benchmarks.bench_lccc_dedupe", "--child", impl, str(n)], cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"child {impl} {n} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout)
    return out | {"max_rss_mib": proc.max_rss_kib * 1024 / MIB, "rows_per_s": n / out["seconds"]}


def sizes() -> tuple[int, int]:
    text = os.environ.get("ZHNLP_BENCH_LCCC_N")
    if not text:
        return SIZES
    small, large = (int(x) for x in text.split(","))
    return small, large


def run(repeat: int, tmp: Path) -> dict:
    small, large = sizes()
    results: dict = {"sizes": [small, large], "impls": {}}
    for impl in IMPLS:
        runs = [measure(impl, small, tmp) for _ in range(repeat)]
        best = max(runs, key=lambda r: r["rows_per_s"])
        big = measure(impl, large, tmp)
        print(f"  {impl}: {small:,} {best['rows_per_s']:,.0f} rows/s {best['max_rss_mib']:.0f} MiB; "
              f"{large:,} {big['rows_per_s']:,.0f} rows/s {big['max_rss_mib']:.0f} MiB", flush=True)
        results["impls"][impl] = {
            "small": best | {"max_rss_mib": max(r["max_rss_mib"] for r in runs)},
            "large": big,
            "rss_ratio": ratio(big["max_rss_mib"], max(r["max_rss_mib"] for r in runs)),
        }
    off = max((measure("off", small, tmp) for _ in range(repeat)), key=lambda r: r["rows_per_s"])
    results["impls"]["off"] = {"small": off}
    results["idle_rss_mib"] = measure("off", 1, tmp)["max_rss_mib"]
    s, st = results["impls"]["set"], results["impls"]["store"]
    results["same_output"] = all(
        (s[k]["kept"], s[k]["dropped"], s[k]["checksum"]) == (st[k]["kept"], st[k]["dropped"], st[k]["checksum"]) for k in ("small", "large")
    )
    return results


def summary(r: dict) -> str:
    small, large = r["sizes"]
    set_speed = {k: r["impls"]["set"][k]["rows_per_s"] for k in ("small", "large")}
    rows = []
    for impl, x in r["impls"].items():
        for k, n in (("small", small), ("large", large)):
            if k in x:
                m = x[k]
                rows.append([impl, n, m["kept"], m["max_rss_mib"], m["rows_per_s"], ratio(m["rows_per_s"], set_speed[k]),
                             x.get("rss_ratio") if k == "large" else None])
    head = (f"LCCC dedupe, synthetic dialogues, one child per run (peak RSS of the child; imports alone "
            f"{r['idle_rss_mib']:.0f} MiB); set and store give the same kept rows and drops: {r['same_output']}")
    return head + "\n" + format_table(["dedupe", "dialogues", "kept", "peak RSS MiB", "rows/s", "speed vs set", "RSS large/small"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), required=True)
    args = parser.parse_args(argv)
    impl, n = args.child[0], int(args.child[1])
    if impl not in (*IMPLS, "off"):
        parser.error(f"unknown dedupe {impl!r}")
    json.dump(child(impl, n), sys.stdout)
    print()


if __name__ == "__main__":
    main()
