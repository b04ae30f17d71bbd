"""LCCC dialogue reading and cleaning, on small files written here and the real samples."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import tracemalloc
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shared_data import shared_data_dir
from zhnlp.data.lccc import LCCC_SCHEMA, DialogueCleaner, DialogueLimits, DigestStore, iter_dialogues, iter_raw_dialogues, rejoin
from zhnlp.data.rows import BadInputError, ParquetSink, RowPolicy

CJK_SPACED = re.compile(r"[\u4e00-\u9fff] [\u4e00-\u9fff]")


def _read_quarantine(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- rejoin


@pytest.mark.parametrize(
    "spaced, joined",
    [
        ("i love you", "i love you"),
        ("h a p p y", "happy"),
        ("1 2 8 g", "128g"),
        ("2 4 小 时", "24小时"),
        ("S E E D . 2 4 小 时", "SEED.24小时"),
        ("你 好 ！", "你好！"),
        ("h e l l o world", "hello world"),
        ("  你  好 ", "你好"),
        ("   ", ""),
    ],
)
def test_rejoin(spaced: str, joined: str) -> None:
    assert rejoin(spaced) == joined


# ---------------------------------------------------------------- formats

SPLITS = {
    "train": [["你 好", "h i ！"], ["在 吗", "在", "干 嘛"]],
    "valid": [["早", "早 上 好"]],
    "test": [],
}


def test_json_object_selects_split_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(SPLITS, ensure_ascii=False, indent=1), encoding="utf-8")
    rows = list(iter_raw_dialogues(path, RowPolicy(), key="train"))
    assert [turns for _, turns in rows] == SPLITS["train"]
    lines = path.read_text(encoding="utf-8").splitlines()
    for line, turns in rows:  # each dialogue opens with "[" on its line; its first turn follows
        assert lines[line - 1].strip() == "[" and turns[0] in lines[line]
    assert [t for _, t in iter_raw_dialogues(path, RowPolicy(), key="valid")] == SPLITS["valid"]
    assert list(iter_raw_dialogues(path, RowPolicy(), key="test")) == []


def test_json_any_chunk_size_matches_json_load(tmp_path: Path) -> None:
    path = tmp_path / "mini.json"  # no line breaks, escapes, multi-byte characters cut anywhere
    data = {"a": [["x \\u4f60", {"n": [1, 2.5e3]}]], "train": SPLITS["train"] + [["\u4f60 \"q\"", "\\\\"]]}
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    for chunk in range(1, 24):
        got = [t for _, t in iter_raw_dialogues(path, RowPolicy(), key="train", chunk_bytes=chunk)]
        assert got == data["train"], chunk


def test_json_top_level_list(tmp_path: Path) -> None:
    path = tmp_path / "LCCC-base_train.json"
    path.write_text(json.dumps(SPLITS["train"], ensure_ascii=False), encoding="utf-8")
    assert [t for _, t in iter_raw_dialogues(path, RowPolicy())] == SPLITS["train"]
    with pytest.raises(BadInputError, match="no split 'train'"):
        list(iter_raw_dialogues(path, RowPolicy(), key="train"))
    # one line, so dialogue ids get a per-line index
    ids = [d["dialogue_id"] for d in iter_dialogues(path, RowPolicy(), DialogueCleaner())]
    assert ids == ["LCCC-base_train:1", "LCCC-base_train:1.1"]


def test_text_format(tmp_path: Path) -> None:
    path = tmp_path / "toy_train.txt"
    path.write_text("你 好\th i ！\n\n在 吗\t在\t干 嘛\n", encoding="utf-8")
    assert list(iter_raw_dialogues(path, RowPolicy())) == [(1, ["你 好", "h i ！"]), (3, ["在 吗", "在", "干 嘛"])]
    rows = list(iter_dialogues(path, RowPolicy(), DialogueCleaner()))
    assert rows[1] == {"dialogue_id": "toy_train:3", "turns": ["在吗", "在", "干嘛"], "n_turns": 3, "line": 3}


def test_rows_fit_parquet_schema(tmp_path: Path) -> None:
    src, out = tmp_path / "d.txt", tmp_path / "d.parquet"
    src.write_text("你 好\th i\n在 吗\t在\t干 嘛\n", encoding="utf-8")
    with ParquetSink(out, LCCC_SCHEMA) as sink:
        for row in iter_dialogues(src, RowPolicy(), DialogueCleaner()):
            sink.write(row)
    table = pq.read_table(out)
    assert table.schema.equals(LCCC_SCHEMA)
    assert table.column("turns").to_pylist() == [["你好", "hi"], ["在吗", "在", "干嘛"]]


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "dialogues.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown LCCC format"):
        list(iter_raw_dialogues(path, RowPolicy()))


# ---------------------------------------------------------------- bad rows

# line 7 holds the dialogue with a non-string turn; line 10 one that is not a list
BAD_ROWS = """{
"train": [
[
"你 好",
"h i"
],
["在 吗", 3],
[
"早", "好"],
{"turns": []},
["嗯", "哦"]
]
}
"""


def test_bad_dialogue_is_fatal_by_default(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(BAD_ROWS, encoding="utf-8")
    with pytest.raises(BadInputError, match=r"bad\.json:7: bad_turn: dialogue #1 turn 1 is int"):
        list(iter_raw_dialogues(path, RowPolicy(), key="train"))


def test_skip_policy_quarantines_and_counts(tmp_path: Path) -> None:
    path, quarantine = tmp_path / "bad.json", tmp_path / "q" / "lccc.jsonl"
    path.write_text(BAD_ROWS, encoding="utf-8")
    with RowPolicy("skip", quarantine) as policy:
        rows = list(iter_raw_dialogues(path, policy, key="train"))
    assert [line for line, _ in rows] == [3, 8, 11]
    assert policy.metrics() == {"bad_rows": 2, "dropped_rows": 0, "bad_rows.bad_dialogue": 1, "bad_rows.bad_turn": 1}
    recs = _read_quarantine(quarantine)
    assert [(r["kind"], r["line"], r["raw"]) for r in recs] == [
        ("bad_row", 7, ["在 吗", 3]),
        ("bad_row", 10, {"turns": []}),
    ]
    assert recs[0]["file"] == str(path)


@pytest.mark.parametrize(
    "text, line",
    [
        ('{"train": [\n["a", "b"]\n["c", "d"]\n]}', 3),  # missing comma between dialogues
        ('{"train": [\n["a", "b"],\n["c" "d"]\n]}', 3),  # missing comma inside a dialogue
        ('{"train": [\n["a", "b"],\n]}', 3),  # trailing comma
        ('{"train": [\n["a", "b"],\n["c",', 3),  # file cut short
        ('{"train": [\n["a", "b"]\n]}\nxyz', 4),  # data after the top-level value
        ('{"valid": [\n["a", \n"b"\n}', 4),  # broken split that is only skipped
        ("\n\n", 3),  # empty file
    ],
)
def test_malformed_json_structure_is_always_fatal(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "broken.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError, match="malformed json") as err:
        list(iter_raw_dialogues(path, RowPolicy("skip"), key="train"))
    assert err.value.path == str(path) and err.value.line == line
    assert f"broken.json:{line}:" in str(err.value)


def test_missing_split_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(SPLITS), encoding="utf-8")
    with pytest.raises(BadInputError, match=r"toy\.json:1: .*no split 'dev'; keys found: \['train', 'valid', 'test'\]"):
        list(iter_raw_dialogues(path, RowPolicy(), key="dev"))
    with pytest.raises(BadInputError, match=r"pass key=<split>; keys found: \['train', 'valid', 'test'\]"):
        list(iter_raw_dialogues(path, RowPolicy()))


def test_invalid_utf8_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes('[\n["你 好", "a"],\n["b", "'.encode() + b"\xff\xfe" + b'"]\n]')
    got = []
    with pytest.raises(BadInputError, match=r"bad\.json:3: invalid utf-8: byte 0xff"):
        for row in iter_raw_dialogues(path, RowPolicy("skip")):
            got.append(row)
    assert got == [(2, ["你 好", "a"])]  # everything before the bad bytes was read


def test_invalid_utf8_text_is_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes("你 好\t嗯\n".encode() + b"\xff\tb\n" + "在 吗\t在\n".encode())
    with pytest.raises(BadInputError, match=r"bad\.txt:2: invalid utf-8"):
        list(iter_raw_dialogues(path, RowPolicy()))
    policy = RowPolicy("skip")
    assert [line for line, _ in iter_raw_dialogues(path, policy)] == [1, 3]
    assert policy.bad["invalid_utf-8"] == 1


# ---------------------------------------------------------------- cleaning


def test_cleaner_limits_and_counters(tmp_path: Path) -> None:
    path, quarantine = tmp_path / "d.txt", tmp_path / "q.jsonl"
    long_turn = " ".join("长" * 11)
    path.write_text(
        "\n".join(
            [
                "你 好\t \th i",  # 1: empty turn removed, kept
                f"一\t二\t{long_turn}\t四",  # 2: truncated before the long turn
                "一\t二\t三\t四\t五",  # 3: truncated to max_turns=4
                f"{long_turn}\t二",  # 4: nothing left before the long turn -> too few
                "只 有 一 句",  # 5: too few
                "你 好\th i",  # 6: duplicate of 1 after cleaning
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    cleaner = DialogueCleaner(DialogueLimits(min_turns=2, max_turns=4, max_turn_chars=10))
    with RowPolicy("skip", quarantine) as policy:
        rows = list(iter_dialogues(path, policy, cleaner))
    assert [(r["line"], r["turns"]) for r in rows] == [
        (1, ["你好", "hi"]),
        (2, ["一", "二"]),
        (3, ["一", "二", "三", "四"]),
    ]
    assert cleaner.empty_turns_removed == 1 and cleaner.truncated_dialogues == 3
    assert cleaner.stats()["dialogues_seen"] == 6 and cleaner.stats()["dialogues_kept"] == 3
    assert policy.dropped == {"too_few_turns": 2, "duplicate": 1}
    recs = _read_quarantine(quarantine)
    assert [(r["kind"], r["line"], r["reason"].split(":")[0]) for r in recs] == [
        ("dropped", 4, "too_few_turns"),
        ("dropped", 5, "too_few_turns"),
        ("dropped", 6, "duplicate"),
    ]
    assert recs[2]["raw"] == ["你 好", "h i"]  # the raw turns, as read


def test_dedupe_spans_files_and_can_be_off(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.json"
    a.write_text("你 好\t嗯\n", encoding="utf-8")
    b.write_text(json.dumps({"train": [["你好", "嗯"], ["你 好", "嗯 嗯"]]}, ensure_ascii=False), encoding="utf-8")
    policy, cleaner = RowPolicy(), DialogueCleaner()
    kept = [d["turns"] for p, k in ((a, None), (b, "train")) for d in iter_dialogues(p, policy, cleaner, key=k)]
    assert kept == [["你好", "嗯"], ["你好", "嗯嗯"]] and policy.dropped["duplicate"] == 1
    no_dedupe = DialogueCleaner(DialogueLimits(dedupe=False))
    assert len([d for p, k in ((a, None), (b, "train")) for d in iter_dialogues(p, RowPolicy(), no_dedupe, key=k)]) == 3


# ---------------------------------------------------------------- streaming


def test_json_reading_is_streaming(tmp_path: Path) -> None:
    n, bound = 200_000, 4 << 20
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as fh:  # written one dialogue at a time
        fh.write('{"valid": [["跳 过"]],\n"train": [\n')
        for i in range(n):
            fh.write(f'{"," if i else ""}["你 好 {i}", "h i ， 在 吗"]\n')
        fh.write("]}\n")
    assert path.stat().st_size > bound  # json.load holds several times the file size as objects
    cleaner = DialogueCleaner(DialogueLimits(dedupe=False))
    start = time.perf_counter()
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_dialogues(path, RowPolicy(), cleaner, key="train"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"streaming: {count} dialogues, tracemalloc peak {peak / 2**20:.2f} MiB, "
          f"{time.perf_counter() - start:.1f} s (traced)")
    assert count == n
    assert peak < bound, f"peak {peak / 2**20:.1f} MiB"


# ---------------------------------------------------------------- real data


def _real_counts(paths_keys: list[tuple[Path, str | None]]) -> tuple[list[int], RowPolicy, DialogueCleaner]:
    policy, cleaner = RowPolicy(), DialogueCleaner()
    raw_counts = []
    for path, key in paths_keys:
        raw_counts.append(sum(1 for _ in iter_raw_dialogues(path, RowPolicy(), key=key)))
        for d in iter_dialogues(path, policy, cleaner, key=key):
            assert 2 <= d["n_turns"] <= 32 and all(0 < len(t) <= 256 for t in d["turns"])
            assert not any(CJK_SPACED.search(t) for t in d["turns"]), d
    assert cleaner.kept + sum(policy.dropped.values()) == sum(raw_counts) and not policy.bad
    return raw_counts, policy, cleaner


def test_real_toy_data_json() -> None:
    path = shared_data_dir() / "lccc" / "toy_data.json"
    raw, policy, cleaner = _real_counts([(path, "train"), (path, "valid"), (path, "test")])
    assert raw == [1000, 200, 200]
    print("toy_data.json", cleaner.stats(), policy.metrics())


def test_real_toy_text() -> None:
    folder = shared_data_dir() / "lccc"
    raw, policy, cleaner = _real_counts([(folder / "toy_train.txt", None), (folder / "toy_valid.txt", None)])
    assert raw == [10000, 2000]
    print("toy_train/valid.txt", cleaner.stats(), policy.metrics())


# ---------------------------------------------------------------- constant-memory dedupe vs the set


class ReferenceCleaner(DialogueCleaner):
    """Reference: the cleaner before DigestStore, its dedupe a Python set of int digests (~70 bytes each)."""

    def __init__(self, limits: DialogueLimits | None = None):
        super().__init__(limits, digests=set())
        self._digests: set[int] = set()

    def clean(self, path, line, turns, policy):
        lim = self.limits
        self.seen += 1
        out: list[str] = []
        for turn in turns:
            text = rejoin(turn)
            if not text:
                self.empty_turns_removed += 1
            elif len(text) > lim.max_turn_chars or len(out) == lim.max_turns:
                self.truncated_dialogues += 1
                break
            else:
                out.append(text)
        if len(out) < lim.min_turns:
            policy.drop(path, line, f"too_few_turns: {len(out)} after cleaning, need {lim.min_turns}", turns)
            return None
        if lim.dedupe:
            h = hashlib.blake2b("\n".join(out).encode("utf-8"), digest_size=8).digest()
            digest = int.from_bytes(h, "little")
            if digest in self._digests:
                policy.drop(path, line, "duplicate: same turns as an earlier dialogue", turns)
                return None
            self._digests.add(digest)
        self.kept += 1
        return out


# small stores reach every path on small inputs: a saturated bitmap, many flushes, lookups in SQLite
STORES = {
    "default": {},
    "tiny": {"filter_bits": 8, "batch": 7, "cache_kib": 64},
    "small": {"filter_bits": 12, "batch": 100, "cache_kib": 64},
}


def _run_both(sources: list[tuple[Path, str | None]], tmp_path: Path, store: dict) -> None:
    """The same files through the reference and the new cleaner: same rows, order, counts, quarantine."""
    results = []
    for name, cleaner in (("ref", ReferenceCleaner()), ("new", DialogueCleaner(digests=DigestStore(**store)))):
        with cleaner, RowPolicy("skip", tmp_path / f"{name}.jsonl") as policy:
            rows = [d for path, key in sources for d in iter_dialogues(path, policy, cleaner, key=key)]
        results.append((rows, policy.metrics(), cleaner.stats(), (tmp_path / f"{name}.jsonl").read_bytes()))
    (ref_rows, *ref_rest), (new_rows, *new_rest) = results
    assert len(new_rows) == len(ref_rows) and new_rows == ref_rows
    assert new_rest == ref_rest


@pytest.mark.parametrize("store", sorted(STORES))
def test_dedupe_matches_reference_on_real_data(tmp_path: Path, store: str) -> None:
    folder = shared_data_dir() / "lccc"
    json_path = folder / "toy_data.json"
    sources = [(json_path, "train"), (json_path, "valid"), (json_path, "test"),
               (folder / "toy_train.txt", None), (folder / "toy_valid.txt", None)]
    sources += sources[::-1]  # read again: every dialogue is now a duplicate, in every split
    _run_both(sources, tmp_path, STORES[store])


@pytest.mark.parametrize("store", sorted(STORES))
def test_dedupe_matches_reference_on_synthetic_splits(tmp_path: Path, store: str) -> None:
    rnd = random.Random(13)
    pool = [[" ".join(rnd.choice("你好在吗早上嗯哦ab") for _ in range(rnd.randint(1, 4))) for _ in range(rnd.randint(1, 4))]
            for _ in range(3000)]  # many equal after cleaning; some too short
    sources = []
    for split in ("train", "valid", "test"):
        path = tmp_path / f"{split}.txt"
        with path.open("w", encoding="utf-8") as fh:
            for _ in range(4000):  # near repeats, far repeats, repeats of other splits
                fh.write("\t".join(rnd.choice(pool[:50] if rnd.random() < 0.2 else pool)) + "\n")
        sources.append((path, None))
    _run_both(sources, tmp_path, STORES[store])


def _digest(n: int, low_bits: int = 0) -> bytes:
    """An 8-byte digest; with ``low_bits`` set, all share their low 16 bits (one bit of the bitmap)."""
    d = hashlib.blake2b(str(n).encode(), digest_size=8).digest()
    return (low_bits.to_bytes(2, "little") + d[2:]) if low_bits else d


@pytest.mark.parametrize("low_bits", [0, 0xBEEF])
def test_digest_store_is_an_exact_set(low_bits: int) -> None:
    rnd, reference = random.Random(5), set()
    with DigestStore(filter_bits=16, batch=500, cache_kib=64) as store:
        for step in range(20_000):
            n = rnd.randrange(step + 1) if rnd.random() < 0.3 else 10**6 + step  # ~30% repeats, near and far
            d = _digest(n, low_bits)
            assert store.add(d) == (d not in reference), step
            reference.add(d)
        assert len(store) == len(reference)
        assert store._cur is not None and store._pending  # went through the table and the buffer
    assert len(store) == 0 and store._db is None and store._bits is None


def _sqlite_temp_files() -> list[str]:
    fds = Path("/proc/self/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return [link for link in links if "etilqs_" in link]  # SQLite's temporary file names


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_digest_store_file_is_scratch_and_closed() -> None:
    before = _sqlite_temp_files()
    store = DigestStore(cache_kib=64, batch=1000)
    for n in range(200_000):  # ~3 MiB of table: past the 64 KiB cache, so SQLite writes its file
        store.add(_digest(n))
    opened = [f for f in _sqlite_temp_files() if f not in before]
    assert opened and all(f.endswith(" (deleted)") for f in opened), opened  # unlinked while in use
    store.close()
    assert _sqlite_temp_files() == before


def test_no_store_without_dedupe(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("你 好\t嗯\n你 好\t嗯\n", encoding="utf-8")
    with DialogueCleaner(DialogueLimits(dedupe=False)) as cleaner:
        assert len(list(iter_dialogues(path, RowPolicy(), cleaner))) == 2
        assert cleaner.digests._bits is None and cleaner.digests._db is None  # nothing allocated


def test_digest_store_wants_8_byte_digests() -> None:
    with DigestStore(batch=2) as store:
        store.add(b"short")
        with pytest.raises(ValueError, match="every digest must be 8 bytes"):
            store.add(_digest(1))
