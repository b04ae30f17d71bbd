"""zhnlp.tasks.token_classification: BIO alignment and decoding, training a tiny backbone on CLUENER-like rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from shared_data import shared_data_dir
from zhnlp.tasks.classification import ClassifierTraining
from zhnlp.tasks.token_classification import NerHead, bio_tags, decode_tags, drop_overlaps, token_tags, types_of
from tiny_backbone import build_tiny_backbone

TYPES = ["address", "book", "company", "game", "name"]


def ent(kind: str, text: str, start: int) -> dict:
    return {"type": kind, "start": start, "end": start + len(text) - 1, "text": text}


def row(text: str, *entities: dict, id: str = "0") -> dict:
    for e in entities:
        assert text[e["start"] : e["end"] + 1] == e["text"], e
    return {"id": id, "text": text, "entities": sorted(entities, key=lambda e: (e["start"], e["end"], e["type"]))}


def span_f1(rows, predictions) -> dict[str, float]:
    """Exact (type, start, end) micro F1 (the test's own scorer)."""
    gold = {(i, e["type"], e["start"], e["end"]) for i, r in enumerate(rows) for e in r["entities"]}
    pred = {(i, e["type"], e["start"], e["end"]) for i, p in enumerate(predictions) for e in p}
    tp = len(gold & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(gold) if gold else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


ROUND_TRIP = [
    row("生生不息CSOL生化狂潮让你填弹狂扫", ent("game", "CSOL", 4)),
    row("浙商银行企业信贷部叶老桂博士则从另一个角度", ent("company", "浙商银行", 0), ent("name", "叶老桂", 9)),
    row("我在读Harry Potter 7，很好看", ent("book", "Harry Potter 7", 3)),
    row("NBA2K19是一款游戏，华为P30是手机", ent("game", "NBA2K19", 0), ent("company", "华为P30", 13)),
    row("北京上海都很大", ent("address", "北京", 0), ent("address", "上海", 2)),  # adjacent, same type
    row("沪深股市，他来自广州市", ent("address", "沪", 0), ent("address", "广州市", 8)),  # one char; at the end
    row("第3届进口博览会在上海", ent("book", "第3届进口博览会", 0), ent("address", "上海", 9)),
    row("今天没有实体。"),
]


@pytest.fixture(scope="module")
def char_backbone(tmp_path_factory) -> Path:
    texts = [r["text"] for r in ROUND_TRIP] + [_POOL] + [r["text"] for r in synthetic_rows(random.Random(0), NAMES[0], 40)]
    return build_tiny_backbone(tmp_path_factory.mktemp("ner") / "char", texts)


# ---------------------------------------------------------------------------------------------
# tags, alignment, decoding


def test_bio_tags_and_types():
    assert bio_tags(["address", "book"]) == ["O", "B-address", "I-address", "B-book", "I-book"]
    assert types_of(bio_tags(TYPES)) == TYPES
    with pytest.raises(ValueError, match="distinct"):
        bio_tags(["a", "a"])


def test_gold_entities_round_trip_through_tags(char_backbone):
    head = NerHead.from_pretrained(char_backbone, labels=TYPES, max_seq_len=64)
    features, windows = head.encode(ROUND_TRIP)
    assert head.dropped_overlaps == 0
    assert any(span and span[1] - span[0] > 1 for span in windows[2].offsets)  # Latin words: multi-character tokens
    for item, window, r in zip(features, windows, ROUND_TRIP):
        labels = item["labels"]
        assert len(labels) == len(item["input_ids"]) and labels[0] == labels[-1] == -100  # [CLS] / [SEP]
        tags = [None if i == -100 else head.tags[i] for i in labels]
        assert decode_tags(tags, window.offsets, r["text"]) == r["entities"], r["text"]
    # the Latin/digit entity: one B then I tags over its word pieces, "O" after it
    offsets, labels = windows[2].offsets, features[2]["labels"]
    inside = [head.tags[lab] for span, lab in zip(offsets, labels) if span and 3 <= span[0] <= 16]
    assert inside[0] == "B-book" and set(inside[1:]) == {"I-book"} and len(inside) >= 3


def test_overlapping_gold_entities_keep_the_first_longest(char_backbone):
    text = "浙商银行企业信贷部"
    ents = [ent("address", "浙商", 0), ent("company", "浙商银行", 0), ent("name", "银行企业", 2), ent("game", "信贷", 6)]
    kept, dropped = drop_overlaps(ents)
    assert [(e["type"], e["start"]) for e in kept] == [("company", 0), ("game", 6)] and dropped == 2
    head = NerHead.from_pretrained(char_backbone, labels=TYPES, max_seq_len=64)
    features, windows = head.encode([{"id": "x", "text": text, "entities": ents}, row("北京上海", ent("address", "北京", 0))])
    assert head.dropped_overlaps == 2
    tags = [None if i == -100 else head.tags[i] for i in features[0]["labels"]]
    assert decode_tags(tags, windows[0].offsets, text) == [ent("company", "浙商银行", 0), ent("game", "信贷", 6)]
    with pytest.raises(ValueError, match="'movie' is not one of"):
        head.encode([row("看电影", ent("movie", "电影", 1))])


def test_decoding_edge_cases():
    text = "abcdefgh"
    chars = [None] + [(i, i + 1) for i in range(6)] + [None]  # [CLS] a..f [SEP]

    def dec(*tags):
        return [(e["type"], e["start"], e["end"], e["text"]) for e in decode_tags([None, *tags, None], chars, text)]

    assert dec("O", "I-a", "I-a", "O", "O", "O") == [("a", 1, 2, "bc")]  # I- after O opens an entity
    assert dec("I-a", "O", "O", "O", "O", "O") == [("a", 0, 0, "a")]  # I- at the start
    assert dec("B-a", "I-a", "I-b", "I-b", "O", "O") == [("a", 0, 1, "ab"), ("b", 2, 3, "cd")]  # type change
    assert dec("B-a", "I-b", "O", "O", "O", "O") == [("a", 0, 0, "a"), ("b", 1, 1, "b")]
    assert dec("B-a", "B-a", "I-a", "O", "O", "O") == [("a", 0, 0, "a"), ("a", 1, 2, "bc")]  # B- splits
    assert dec("O", "O", "O", "O", "B-a", "I-a") == [("a", 4, 5, "ef")]  # entity at the end, before [SEP]
    assert dec("O", "O", "O", "O", "O", "B-a") == [("a", 5, 5, "f")]
    assert dec("O", "O", "O", "O", "O", "O") == []
    # multi-character tokens: the span runs from the first token's start to the last token's end
    words = [None, (0, 1), (1, 5), (6, 8), None]
    assert decode_tags([None, "B-a", "I-a", "I-a", None], words, text) == [{"type": "a", "start": 0, "end": 7, "text": "abcdefgh"}]
    # a special token's tag is ignored
    assert decode_tags(["B-a", "O", None], [None, (0, 1), None], text) == []


def test_word_mode_labels_by_the_first_character(char_backbone, tmp_path):
    words = ("北京", "天气", "京天")
    backbone = build_tiny_backbone(tmp_path / "word", ["今天北京天气很好", "北京的天气如何"], mode="word", words=words)
    head = NerHead.from_pretrained(backbone, labels=["address", "name"], max_seq_len=32)
    assert head.tokenizer.mode == "word"
    text = "今天北京天气很好"
    r = row(text, ent("address", "北京", 2))
    features, windows = head.encode([r])
    tokens = head.tokenizer.hf.convert_ids_to_tokens(features[0]["input_ids"])
    assert tokens == ["[CLS]", "今", "天", "北京", "天气", "很", "好", "[SEP]"]
    assert windows[0].offsets[3:5] == [(2, 4), (4, 6)]
    tags = [None if i == -100 else head.tags[i] for i in features[0]["labels"]]
    assert tags == [None, "O", "O", "B-address", "O", "O", "O", None]
    assert decode_tags(tags, windows[0].offsets, text) == r["entities"]
    # "京天" straddles two words: "北京" starts outside it (O), "天气" inside it (I-name), so the
    # entity comes back as the word "天气" (the documented first-character rule)
    features, windows = head.encode([row(text, ent("name", "京天", 3))])
    tags = [None if i == -100 else head.tags[i] for i in features[0]["labels"]]
    assert tags[3:5] == ["O", "I-name"]
    assert decode_tags(tags, windows[0].offsets, text) == [ent("name", "天气", 4)]


# ---------------------------------------------------------------------------------------------
# training on a learnable synthetic set


_POOL = "东南西北江河湖海山林石金木水火土光明华安平云天星月春秋青红白黄长宁泰和嘉兴盛"
_rng = random.Random(1)
_ALL = sorted({"".join(_rng.sample(_POOL, _rng.choice((2, 3)))) for _ in range(400)})
_rng.shuffle(_ALL)
NAMES = (_ALL[:160], _ALL[160:220])  # entity strings: train / dev, disjoint

TEMPLATES = [
    "我住在{a}。",
    "{c}公司发布了新产品",
    "他住在{a}，在{c}公司上班。",
    "昨天{c}公司的人住在{a}",
    "今天天气很好。",
]


def synthetic_rows(rng: random.Random, names: list[str], n: int) -> list[dict]:
    """Sentences with "住在<address>" and "<company>公司", the entity strings drawn from ``names``."""
    rows = []
    for i in range(n):
        template = rng.choice(TEMPLATES)
        a, c = rng.choice(names), rng.choice(names)
        text = template.format(a=a, c=c)
        ents = []
        if "{a}" in template:
            ents.append(ent("address", a, template.format(a="\0", c=c).index("\0")))
        if "{c}" in template:
            ents.append(ent("company", c, template.format(a=a, c="\0").index("\0")))
        rows.append(row(text, *ents, id=str(i)))
    return rows


@pytest.fixture(scope="module")
def trained(char_backbone) -> dict:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: more threads only spin on a shared CPU
    try:
        return _train(char_backbone)
    finally:
        torch.set_num_threads(threads)


def _train(char_backbone: Path) -> dict:
    train = synthetic_rows(random.Random(2), NAMES[0], 320)
    dev = synthetic_rows(random.Random(3), NAMES[1], 60)
    cfg = ClassifierTraining.from_params(
        dict(per_device_train_batch_size=16, learning_rate=5e-3, warmup_ratio=0.0, max_seq_len=32, seed=7, num_train_epochs=15, early_stopping_patience=0)
    )
    untrained = NerHead.from_pretrained(char_backbone, labels=["address", "company"], seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    before = span_f1(dev, untrained.predict(dev))
    head = NerHead.from_pretrained(char_backbone, labels=["address", "company"], seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    logged = []
    summary = head.fit(train, dev, cfg, score_fn=span_f1, metric="f1", log_fn=lambda m, e: logged.append((e, m)))
    return {"head": head, "dev": dev, "before": before, "summary": summary, "logged": logged}


def test_training_learns_held_out_entities(trained):
    summary, dev, head = trained["summary"], trained["dev"], trained["head"]
    after = span_f1(dev, head.predict(dev))
    print(f"synthetic dev entity F1: untrained {trained['before']['f1']:.3f} -> trained {after['f1']:.3f} (history {[round(h['dev.f1'], 3) for h in summary.history]})")
    assert after["f1"] == pytest.approx(summary.best_dev_score)  # the best epoch's weights are the ones kept
    assert summary.metric == "f1" and summary.best_dev_score == max(h["dev.f1"] for h in summary.history)
    assert after["f1"] >= 0.8 and after["f1"] > trained["before"]["f1"] + 0.5
    assert {e for e, _ in trained["logged"]} == set(range(1, summary.epochs_run + 1))
    assert all("epoch.dev.f1" in m and "epoch.train.loss" in m for _, m in trained["logged"])
    for r, pred in zip(dev, head.predict(dev)):  # spans are valid and their text is the text's
        assert all(r["text"][e["start"] : e["end"] + 1] == e["text"] and e["type"] in ("address", "company") for e in pred)


def test_long_text_is_truncated_not_crashed(trained):
    head = trained["head"]
    text = "我住在" + "东南" * 60 + "，在华安公司上班。"  # far longer than the 32-token window
    (pred,) = head.predict([{"id": "long", "text": text, "entities": None}])
    assert all(e["end"] < 30 for e in pred)  # nothing beyond the window: the tail is "no entity"
    assert head.predict([]) == [] and head.predict([{"id": "e", "text": "", "entities": []}]) == [[]]


def test_save_and_reload_predict_the_same(trained, tmp_path):
    from transformers import AutoConfig

    head, dev = trained["head"], trained["dev"]
    saved = head.save(tmp_path / "ner")
    assert (saved / "model.safetensors").is_file() and (saved / "zhnlp_tokenizer.json").is_file()
    assert AutoConfig.from_pretrained(str(saved)).id2label == dict(enumerate(bio_tags(["address", "company"])))
    expected = head.predict(dev)
    again = NerHead.from_pretrained(saved, max_seq_len=head.max_seq_len)  # tags from the saved config
    assert again.labels == ["address", "company"] and again.predict(dev) == expected
    named = NerHead.from_pretrained(saved, labels=["address", "company"], max_seq_len=head.max_seq_len)
    assert named.predict(dev) == expected
    with pytest.raises(ValueError, match="no NER tags"):
        NerHead.from_pretrained(build_tiny_backbone(tmp_path / "plain", ["今天天气很好"]))  # a backbone without a NER head


# ---------------------------------------------------------------------------------------------
# real CLUENER (../shared/data)


def cluener_rows(path: Path, limit: int | None = None) -> list[dict]:
    """CLUENER JSON lines -> rows (entities sorted, end inclusive), parsed with plain json."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and len(rows) >= limit:
                break
            obj = json.loads(line)
            ents = [
                {"type": kind, "start": s, "end": e, "text": text}
                for kind, by_text in (obj.get("label") or {}).items()
                for text, spans in by_text.items()
                for s, e in spans
            ]
            rows.append(row(obj["text"], *ents, id=f"{path.stem}-{i}"))
    return rows


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_cluener_subset_trains(tmp_path, one_thread):
    folder = shared_data_dir() / "clue" / "cluener"
    train, dev = cluener_rows(folder / "train.json", 3000), cluener_rows(folder / "dev.json", 400)
    types = sorted({e["type"] for r in train for e in r["entities"]})
    assert len(types) == 10
    backbone = build_tiny_backbone(tmp_path / "bb", [r["text"] for r in train + dev], hidden=64, layers=2)
    cfg = ClassifierTraining.from_params(
        dict(per_device_train_batch_size=32, learning_rate=3e-3, warmup_ratio=0.1, max_seq_len=64, seed=7, num_train_epochs=4, early_stopping_patience=0)
    )
    before = span_f1(dev, NerHead.from_pretrained(backbone, labels=types, seed=cfg.seed, max_seq_len=64).predict(dev))
    head = NerHead.from_pretrained(backbone, labels=types, seed=cfg.seed, max_seq_len=64)
    summary = head.fit(train, dev, cfg, score_fn=span_f1, metric="f1")
    print(
        f"CLUENER dev entity F1 ({len(train)} train / {len(dev)} dev rows, hidden 64, 2 layers, {summary.epochs_run} epochs): "
        f"untrained {before['f1']:.3f} -> trained {summary.best_dev_score:.3f}; dropped overlaps {head.dropped_overlaps}"
    )
    assert summary.best_dev_score > before["f1"] + 0.1
