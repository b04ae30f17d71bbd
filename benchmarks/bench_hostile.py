"""Hostile rows: the worst inputs we could construct, fed to every corpus reader, one file each.

Each case is a small file holding one hostile row (huge digit runs, nested brackets, huge
lines, deep JSON nesting, many ``%``, long mixed numbers, huge turn counts, ...). For each we
time the whole read (best of ``repeat``) under ``on_bad_rows: skip`` and check the outcome:
the row is kept, dropped or rejected with the expected reason, or the file fails with a
one-line BadInputError (broken LCCC JSON structure). Every read must stay under
``BUDGET_S`` (10 ms). :func:`cases` is shared with tests/test_bad_input.py, which checks the
outcomes (not the times).

Also measured here: the LCCC JSON scanner (zhnlp.data.lccc) against ijson on toy_data.json
scaled 10x, throughput and peak traced memory, when ijson is importable (it is not a
dependency: ``pip install --target DIR ijson`` and ``PYTHONPATH=DIR`` to include it).

`python -m benchmarks bench_hostile`; results in benchmarks/results/bench_hostile.json.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import SHARED_DATA, format_table
from zhnlp.data.ape210k import iter_problems
from zhnlp.data.clue import TaskSpec, iter_split
from zhnlp.data.lccc import DialogueCleaner, iter_dialogues, iter_raw_dialogues
from zhnlp.data.rows import BadInputError, RowPolicy

BUDGET_S = 0.010
TNEWS = TaskSpec.from_params("tnews", {"text_a": "sentence", "labels": [100, 101]})
CSL = TaskSpec.from_params("csl", {"text_a": "keyword", "text_b": "abst", "list_fields": ["keyword"], "labels": [0, 1]})
WSC = TaskSpec.from_params("cluewsc", {"text_a": "text", "spans": "target", "labels": ["true", "false"]})


@dataclass(frozen=True)
class Case:
    reader: str  # clue | ape210k | lccc_json | lccc_txt
    name: str
    data: bytes  # the whole file
    expect: str  # "kept", "dropped: <reason>", "bad: <reason>" or "fatal: <reason>" (reason prefixes)
    spec: TaskSpec | None = None

    @property
    def suffix(self) -> str:
        return {"clue": ".json", "ape210k": ".ape.json", "lccc_json": ".json", "lccc_txt": ".txt"}[self.reader]


def _j(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def _ape(equation: str, ans: str = "1", text: str = "问题") -> bytes:
    return _j({"id": "1", "original_text": text, "equation": equation, "ans": ans})


def cases() -> list[Case]:
    digits, deep = "1" * 100_000, "[" * 100_000
    big_line = b'{"sentence": "' + b"9" * (2 << 20) + b'", "label": 100}\n'
    return [
        # CLUE
        Case("clue", "2 MB line", big_line, "bad: line too long", TNEWS),
        Case("clue", "70k-char field", _j({"sentence": "长" * 70_000, "label": 100}), "bad: too_long: sentence", TNEWS),
        Case("clue", "deep JSON nesting", b'{"sentence": ' + deep.encode() + b"}\n", "bad: malformed json: nested too deeply", TNEWS),
        Case("clue", "100k-digit label", b'{"sentence": "a", "label": ' + digits.encode() + b"}\n", "bad: malformed json", TNEWS),
        Case("clue", "100k-char label", _j({"sentence": "a", "label": "1" * 100_000}), "bad: too_long: label", TNEWS),
        Case("clue", "list in a text field", _j({"sentence": ["a", "b"], "label": 100}), "bad: mistyped field: sentence", TNEWS),
        Case("clue", "20k keywords", _j({"keyword": ["abcd"] * 20_000, "abst": "x", "label": 1}), "bad: too_long: keyword", CSL),
        Case("clue", "15k-key object", _j({f"k{i}": i for i in range(15_000)} | {"sentence": "a", "label": 100}), "kept", TNEWS),
        Case("clue", "huge span index", _j({"text": "小明说他", "label": "true", "target": {
            "span1_text": "小明", "span1_index": 10**18, "span2_text": "他", "span2_index": 3}}), "bad: span mismatch", WSC),
        Case("clue", "UTF-8 BOM", b"\xef\xbb\xbf" + _j({"sentence": "好", "label": 100}), "kept", TNEWS),
        Case("clue", "GBK file", _j({"sentence": "新闻", "label": 100}).decode().encode("gbk"), "bad: invalid utf-8", TNEWS),
        # Ape210K
        Case("ape210k", "100k-digit equation", _ape("x=" + digits + "("), "bad: too_long: equation"),
        Case("ape210k", "1000-digit run before '('", _ape("x=" + "1" * 1000 + "("), "dropped: equation_error"),
        Case("ape210k", "1000-char answer of digits, '.' and '%'", _ape("x=1", "1." * 499 + "1%"), "dropped: answer_error"),
        Case("ape210k", "500 '%'", _ape("x=" + "1%" * 500), "dropped: equation_error"),
        Case("ape210k", "145 mixed numbers", _ape("x=" + "+".join(["1(1/2)"] * 145)), "dropped: equation_error"),
        Case("ape210k", "500 nested brackets", _ape("x=" + "(" * 500 + "1" + ")" * 500), "dropped: equation_error"),
        Case("ape210k", "99 bracket pairs (over MAX_BRACKET_WORK)", _ape("x=" + "(1)+" * 99 + "1", "100"), "bad: too_long: equation"),
        Case("ape210k", "70 bracket pairs (just under)", _ape("x=" + "(1)+" * 70 + "1", "71"), "kept"),
        Case("ape210k", "5000-char question", _ape("x=1", text="问" * 5000), "bad: too_long: original_text"),
        Case("ape210k", "4000-digit runs in the question", _ape("x=1", text="1(" + "1" * 2000 + "/" + "1" * 2000), "kept"),
        Case("ape210k", "2 MB line", _ape("x=1", text="问" * (1 << 20)), "bad: line too long"),
        Case("ape210k", "deep JSON nesting", b'{"id": ' + deep.encode() + b"}\n", "bad: malformed json: nested too deeply"),
        Case("ape210k", "100k-digit id", b'{"id": ' + digits.encode() + b"}\n", "bad: malformed json"),
        Case("ape210k", "UTF-8 BOM", b"\xef\xbb\xbf" + _ape("x=1+1", "2"), "kept"),
        # LCCC JSON (a top-level list of dialogues)
        Case("lccc_json", "50k turns", _j([[""] * 50_000]), "bad: too_long"),
        Case("lccc_json", "200k-char turn", _j([["a " * 100_000, "b"]]), "bad: too_long"),
        Case("lccc_json", "1000 empty turns", _j([[" "] * 1000]), "dropped: too_few_turns"),
        Case("lccc_json", "1 MB element", _j([["a"] * 200_000]), "fatal: json element longer than"),
        Case("lccc_json", "deep JSON nesting", b"[" + deep.encode() + b"\n", "fatal: malformed json: nested too deeply"),
        Case("lccc_json", "100k-digit number", b"[[" + digits.encode() + b"]]\n", "fatal: malformed json"),
        Case("lccc_json", "UTF-8 BOM", b"\xef\xbb\xbf" + _j([["你 好", "在"]]), "kept"),
        # LCCC text
        Case("lccc_txt", "2 MB line", b"a\t" * (1 << 20) + b"\n", "bad: line too long"),
        Case("lccc_txt", "100k turns", b"a\t" * 100_000 + b"\n", "bad: too_long"),
        Case("lccc_txt", "100k-char turn", b"a " * 50_000 + b"\tb\n", "bad: too_long"),
        Case("lccc_txt", "UTF-8 BOM", b"\xef\xbb\xbf" + "你 好\t在\n".encode(), "kept"),
        Case("lccc_txt", "GBK file", "你 好\t在\n".encode("gbk"), "bad: invalid utf-8"),
    ]


def read_case(case: Case, path: Path) -> tuple[str, list]:
    """Read ``path`` as ``case.reader`` under skip; the outcome as in ``Case.expect``, and the rows kept."""
    policy = RowPolicy("skip")
    try:
        if case.reader == "clue":
            rows = list(iter_split(path, case.spec, "train", policy))
        elif case.reader == "ape210k":
            rows = list(iter_problems(path, policy))
        else:
            rows = list(iter_dialogues(path, policy, DialogueCleaner()))
    except BadInputError as err:
        return f"fatal: {err.reason}", []
    if rows:
        return "kept", rows
    kind = "bad" if policy.bad else "dropped" if policy.dropped else ""
    return (f"{kind}: {policy.last_reason[kind]}" if kind else "nothing"), rows


def time_case(case: Case, tmp: Path, repeat: int) -> tuple[float, str]:
    path = tmp / f"{case.reader}-{abs(hash(case.name))}{case.suffix}"
    path.write_bytes(case.data)
    best, outcome = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        outcome, _ = read_case(case, path)
        best = min(best, time.perf_counter() - t0)
    path.unlink()
    return best, outcome


def scanner_vs_ijson(tmp: Path, repeat: int, scale: int = 10) -> dict | None:
    """Ours against ijson (C backend if present) on toy_data.json repeated ``scale`` times per split."""
    src = SHARED_DATA / "lccc" / "toy_data.json"
    try:
        import ijson
    except ImportError:
        return None
    if not src.is_file():
        return None
    data = json.loads(src.read_text(encoding="utf-8"))
    path = tmp / "toy_x10.json"
    with path.open("w", encoding="utf-8") as fh:  # one dialogue a line, as the real files are
        fh.write("{")
        for i, (split, dialogues) in enumerate(data.items()):
            fh.write(("," if i else "") + f"\n{json.dumps(split)}: [\n")
            fh.write(",\n".join(json.dumps(d, ensure_ascii=False) for _ in range(scale) for d in dialogues))
            fh.write("\n]")
        fh.write("}\n")

    def ours():
        return sum(1 for _ in iter_raw_dialogues(path, RowPolicy(), key="train"))

    def theirs():
        with path.open("rb") as fh:
            return sum(1 for _ in ijson.items(fh, "train.item"))

    out = {"file_mib": path.stat().st_size / 2**20, "ijson_backend": ijson.backend}
    for name, fn in (("ours", ours), ("ijson", theirs)):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            n = fn()
            best = min(best, time.perf_counter() - t0)
        tracemalloc.start()
        fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out[name] = {"dialogues": n, "seconds": best, "mib_per_s": out["file_mib"] / best, "peak_traced_mib": peak / 2**20}
    out["ijson_speed_vs_ours"] = out["ours"]["seconds"] / out["ijson"]["seconds"]
    out["ijson_peak_vs_ours"] = out["ijson"]["peak_traced_mib"] / out["ours"]["peak_traced_mib"]
    return out


def run(repeat: int, tmp: Path) -> dict:
    results = []
    for case in cases():
        seconds, outcome = time_case(case, tmp, max(repeat, 5))
        results.append({"reader": case.reader, "case": case.name, "seconds": seconds, "outcome": outcome,
                        "expected": outcome.startswith(case.expect), "under_budget": seconds < BUDGET_S})
    slowest = {}
    for r in results:
        if r["seconds"] > slowest.get(r["reader"], {"seconds": -1})["seconds"]:
            slowest[r["reader"]] = r
    return {"budget_s": BUDGET_S, "cases": results, "slowest": slowest,
            "all_pass": all(r["expected"] and r["under_budget"] for r in results),
            "scanner_vs_ijson": scanner_vs_ijson(tmp, repeat)}


def summary(r: dict) -> str:
    rows = [[c["reader"], c["case"], c["seconds"] * 1000, c["outcome"][:48], c["expected"], c["under_budget"]] for c in r["cases"]]
    text = format_table(["reader", "hostile row", "ms", "outcome", "expected", "< 10 ms"], rows)
    slow = ", ".join(f"{k} {v['seconds'] * 1000:.2f} ms ({v['case']})" for k, v in r["slowest"].items())
    text += f"\n{len(r['cases'])} cases, all pass: {r['all_pass']}; slowest per reader: {slow}"
    s = r.get("scanner_vs_ijson")
    if s:
        text += (f"\nLCCC JSON {s['file_mib']:.1f} MiB: ours {s['ours']['mib_per_s']:.1f} MiB/s, peak {s['ours']['peak_traced_mib']:.2f} MiB;"
                 f" ijson ({s['ijson_backend']}) {s['ijson']['mib_per_s']:.1f} MiB/s, peak {s['ijson']['peak_traced_mib']:.2f} MiB;"
                 f" ijson speed {s['ijson_speed_vs_ours']:.2f}x ours, peak {s['ijson_peak_vs_ours']:.2f}x ours")
    return text
