"""Encoding prepared corpora into token-id shards: streaming, windows, held-out split, schema. Real parts, no mocks."""

from __future__ import annotations

import json
import random
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zhnlp.text.encoding import (
    Document,
    DocumentEncoder,
    EncodeConfig,
    cut_windows,
    encode_documents,
    heldout_fraction,
    is_heldout,
    iter_documents,
    iter_text_documents,
    iter_texts,
)
from zhnlp.data.rows import BadInputError
from zhnlp.text.tokenization import load_tokenizer
from zhnlp.text.tokenizer_training import build_tokenizer

CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def sentence(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(CHARS) for _ in range(n))


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    texts = [CHARS, "研究生命的起源", "今天天气很好，我们去打球吧！你好呀", "我们在公园里playing football。"] * 2
    build_tokenizer({"mode": "char", "vocab_size": 2000, "min_frequency": 1, "lowercase": True}, texts, out)
    return load_tokenizer(out)


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    out = tmp_path_factory.mktemp("wtok")
    texts = ["研究生命的起源", "今天天气很好，我们去打球吧！", "我们研究天气", "天气很好", "公和园"] * 3
    build_tokenizer(
        {"mode": "word", "vocab_size": 500, "min_frequency": 1, "lowercase": True, "words": 50, "min_word_frequency": 2}, texts, out
    )
    return load_tokenizer(out)


def write_prepared(root, n_clue: int, seed: int = 0) -> None:
    """A prepared/ tree in the stage's schemas (only the columns the encoder reads, plus a label)."""
    rng = random.Random(seed)
    (root / "clue" / "t1").mkdir(parents=True)
    (root / "ape210k").mkdir()
    (root / "lccc").mkdir()
    writer = pq.ParquetWriter(root / "clue" / "t1" / "train.parquet", pa.schema([("text_a", pa.string()), ("text_b", pa.string()), ("label", pa.string())]))
    for start in range(0, n_clue, 5000):
        rows = [{"text_a": sentence(rng, 30), "text_b": sentence(rng, 20) if i % 2 else None, "label": "1"} for i in range(start, min(n_clue, start + 5000))]
        writer.write_table(pa.Table.from_pylist(rows, schema=writer.schema))
    writer.close()
    pq.write_table(pa.table({"question": ["甲乙两车同时出发", "王老师买了5支钢笔"], "equation": ["1+1", "5*6"]}), root / "ape210k" / "train.parquet")
    pq.write_table(pa.table({"turns": [["你好", "你好呀", "今天天气很好"], ["在吗"]]}), root / "lccc" / "train.parquet")


def all_documents(prepared):
    for corpus in ("clue", "ape210k", "lccc"):
        yield from iter_documents(prepared, corpus, "train")


def read_split(out, split):
    return pa.concat_tables([pq.read_table(p) for p in sorted(out.glob(f"{split}-*.parquet"))])


def test_reads_every_corpus_and_writes_the_schema(tmp_path, char_tok):
    prepared = tmp_path / "prepared"
    write_prepared(prepared, 10)
    docs = list(all_documents(prepared))
    assert [d.source for d in docs].count("clue") == 15  # text_a of 10 rows, text_b of 5
    assert docs[-2] == Document(("你好", "你好呀", "今天天气很好"), "lccc")
    assert list(iter_texts(prepared, "lccc", "train")) == ["你好", "你好呀", "今天天气很好", "在吗"]

    stats = encode_documents(char_tok, docs, tmp_path / "out", EncodeConfig(max_seq_len=64, shard_rows=100, heldout_ratio=0.2))
    train = read_split(tmp_path / "out", "train")
    assert train.schema == pa.schema(
        [pa.field("input_ids", pa.list_(pa.int32()), False), pa.field("word_ids", pa.list_(pa.int32()), False), pa.field("source", pa.string(), False)]
    )
    rows = train.to_pylist() + read_split(tmp_path / "out", "heldout").to_pylist()
    assert len(rows) == 19 == stats["splits"]["train"]["rows"] + stats["splits"]["heldout"]["rows"]
    assert stats["input_documents"] == {"ape210k": 2, "clue": 15, "lccc": 2}
    for r in rows:
        assert r["input_ids"][0] == char_tok.cls_id and r["input_ids"][-1] == char_tok.sep_id
        assert len(r["word_ids"]) == len(r["input_ids"]) and r["word_ids"][0] == r["word_ids"][-1] == -1
    # a dialogue: turns joined by [SEP], which has word id -1; word ids keep counting across turns
    dialogue = next(r for r in rows if r["source"] == "lccc" and len(r["input_ids"]) > 5)
    tokens = char_tok.hf.convert_ids_to_tokens(dialogue["input_ids"])
    assert tokens == ["[CLS]", "你", "好", "[SEP]", "你", "好", "呀", "[SEP]", *"今天天气很好", "[SEP]"]
    assert dialogue["word_ids"] == [-1, 0, 0, -1, 1, 1, 2, -1, 3, 3, 3, 3, 4, 5, -1]  # 你好 / 你好 呀 / 今天天气 很 好
    on_disk = json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))
    assert on_disk["splits"]["train"]["tokens"] == sum(len(x) for x in train.column("input_ids").to_pylist())


def test_without_word_boundaries_the_column_is_absent(tmp_path, char_tok):
    docs = [Document(("研究生命的起源",), "clue")]
    encode_documents(char_tok, docs, tmp_path, EncodeConfig(max_seq_len=16, shard_rows=10, heldout_ratio=0.0, word_boundaries=False))
    table = read_split(tmp_path, "train")
    assert table.column_names == ["input_ids", "source"]
    assert pq.read_table(tmp_path / "heldout-00000.parquet").num_rows == 0  # every split has a shard, maybe empty


def test_long_texts_are_cut_into_windows(tmp_path, char_tok):
    text = sentence(random.Random(1), 300)
    stats = encode_documents(char_tok, [Document((text,), "clue")], tmp_path, EncodeConfig(max_seq_len=64, shard_rows=100, heldout_ratio=0.0))
    rows = read_split(tmp_path, "train").to_pylist()
    assert stats["windowed_documents"] == 1 and stats["splits"]["train"]["documents"] == 1
    assert len(rows) >= 5 and all(len(r["input_ids"]) <= 64 for r in rows)
    content = [i for r in rows for i in r["input_ids"][1:-1]]
    assert content == char_tok.encode_batch([text], add_special_tokens=False)[0]
    for r in rows:  # word ids restart at 0 in each window
        assert r["word_ids"][1] == 0


def test_windows_prefer_word_starts():
    ids = list(range(10))
    wids = [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    windows = cut_windows(ids, wids, 6)
    assert [w for w, _ in windows] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # not inside word 2 (positions 5-6)
    assert cut_windows(ids, None, 4) == [([0, 1, 2, 3], None), ([4, 5, 6, 7], None), ([8, 9], None)]
    assert cut_windows(ids, [0] * 10, 4)[0][0] == [0, 1, 2, 3]  # one long word: cut anyway


def test_heldout_split_is_deterministic_and_order_free(tmp_path, char_tok):
    rng = random.Random(2)
    docs = [Document((sentence(rng, 12),), "clue") for _ in range(400)]
    cfg = EncodeConfig(max_seq_len=32, shard_rows=1000, heldout_ratio=0.1)
    encode_documents(char_tok, docs, tmp_path / "a", cfg)
    encode_documents(char_tok, list(reversed(docs)), tmp_path / "b", cfg)
    held_a = sorted(map(tuple, read_split(tmp_path / "a", "heldout").column("input_ids").to_pylist()))
    held_b = sorted(map(tuple, read_split(tmp_path / "b", "heldout").column("input_ids").to_pylist()))
    assert held_a == held_b and 20 <= len(held_a) <= 65  # about 10% of 400
    expected = sum(is_heldout(d.segments[0], 0.1) for d in docs)
    assert len(held_a) == expected
    assert heldout_fraction("今天天气很好") == heldout_fraction("今天天气很好")  # a hash, no RNG state
    encode_documents(char_tok, docs, tmp_path / "c", cfg)
    for name in ("train-00000.parquet", "heldout-00000.parquet"):
        assert pq.read_table(tmp_path / "a" / name).equals(pq.read_table(tmp_path / "c" / name))


def test_shards_hold_shard_rows_rows(tmp_path, char_tok):
    docs = [Document((f"我们{i}",), "clue") for i in range(250)]
    stats = encode_documents(char_tok, docs, tmp_path, EncodeConfig(max_seq_len=16, shard_rows=100, heldout_ratio=0.0, flush_rows=64))
    assert stats["splits"]["train"]["shards"] == ["train-00000.parquet", "train-00001.parquet", "train-00002.parquet"]
    assert [pq.read_metadata(tmp_path / s).num_rows for s in stats["splits"]["train"]["shards"]] == [100, 100, 50]
    with pytest.raises(FileExistsError):
        encode_documents(char_tok, docs, tmp_path, EncodeConfig(max_seq_len=16, shard_rows=100))


def test_word_mode_rows_match_the_tokenizer(tmp_path, word_tok):
    enc = DocumentEncoder(word_tok, max_seq_len=32, word_boundaries=True)
    (row,) = enc.encode([Document(("研究公园的起源",), "clue")])  # 公园: a jieba word outside the word vocab
    assert word_tok.hf.convert_ids_to_tokens(row.input_ids) == ["[CLS]", "研究", "公", "园", "的", "起源", "[SEP]"]
    assert row.word_ids == [-1, 0, 1, 1, 2, 3, -1]


def test_unlabeled_text_is_read_with_the_row_policy_and_encoded_as_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zhnlp.data.rows import RowPolicy
    from zhnlp.data.unlabeled_text import TEXT_SCHEMA, iter_unlabeled

    path = tmp_path / "tnews" / "unlabeled.json"
    path.parent.mkdir()
    path.write_text('{"sentence": "今天天气很好"}\n{"sentence": " "}\n{"sentence": "研究"}\n', encoding="utf-8")
    policy = RowPolicy("fail")
    rows = list(iter_unlabeled(path, "sentence", policy))
    assert rows == [{"line": 1, "text": "今天天气很好"}, {"line": 3, "text": "研究"}] and policy.metrics()["dropped_rows"] == 1
    out = tmp_path / "prepared" / "text" / "tn" / "text.parquet"
    out.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=TEXT_SCHEMA), out)
    docs = list(iter_text_documents(tmp_path / "prepared", ["tn"]))
    assert docs == [Document(("今天天气很好",), "text:tn"), Document(("研究",), "text:tn")]
    path.write_text('{"sentence": "好"}\n{"text": "x"}\n{"sentence": 3}\n', encoding="utf-8")
    with pytest.raises(BadInputError, match=r"unlabeled.json:2: missing field: sentence"):
        list(iter_unlabeled(path, "sentence", RowPolicy("fail")))
    skip = RowPolicy("skip")
    assert [r["text"] for r in iter_unlabeled(path, "sentence", skip)] == ["好"]
    assert skip.metrics()["bad_rows.missing_field"] == 1 and skip.metrics()["bad_rows.mistyped_field"] == 1
    with pytest.raises(FileNotFoundError, match=r"run `dvc repro prepare_text@nope`"):
        list(iter_text_documents(tmp_path / "prepared", ["nope"]))


def _peak_bytes(tmp_path, tok, n: int) -> int:
    prepared = tmp_path / f"prepared-{n}"
    write_prepared(prepared, n, seed=n)
    cfg = EncodeConfig(max_seq_len=32, shard_rows=2000, heldout_ratio=0.05, word_boundaries=False, batch_docs=128, flush_rows=256)
    tracemalloc.start()
    try:
        stats = encode_documents(tok, all_documents(prepared), tmp_path / f"out-{n}", cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["input_documents"]["clue"] == n + n // 2
    return peak


def test_memory_does_not_grow_with_the_corpus(tmp_path, char_tok):
    # both inputs exceed one Parquet read batch (2,048 rows), so every buffer is at its full size in both
    small = _peak_bytes(tmp_path, char_tok, 2500)
    large = _peak_bytes(tmp_path, char_tok, 12500)  # 5x the rows, about 10 shards instead of 3
    assert large < 1.2 * small + 128 * 1024, (small, large)
