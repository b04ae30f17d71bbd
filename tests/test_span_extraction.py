"""zhnlp.tasks.span_extraction: passage windows and their labels (char and word mode), span decoding
across windows, training a tiny backbone on a learnable synthetic set and on the CMRC2018 trial sample."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from shared_data import shared_data_dir
from zhnlp.metrics import cmrc2018_scores
from zhnlp.tasks.classification import ClassifierTraining
from zhnlp.tasks.span_extraction import SpanExtractionHead, best_span, context_tokens
from zhnlp.text.char_offsets import Window
from tiny_backbone import build_tiny_backbone

TINY = dict(per_device_train_batch_size=16, learning_rate=5e-3, warmup_ratio=0.0, seed=7, early_stopping_patience=0)


# ---------------------------------------------------------------------------------------------
# a learnable synthetic set: "<country>的首都是<capital>。" among filler sentences

POOL = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥金木水火土山川江河湖海风云雷电松竹梅兰菊桃李杏"
FILLERS = ["今天天气很好。", "他们去公园散步。", "图书馆里很安静。", "我们一起吃晚饭吧。", "小猫在窗台上睡觉。", "这条路通向远方。"]


def capital_rows(n: int, seed: int, fillers: int = 2) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        country = "".join(rng.choices(POOL, k=2))
        capital = "".join(rng.choices(POOL, k=rng.choice([2, 3])))
        before = "".join(rng.choices(FILLERS, k=rng.randint(0, fillers)))
        after = "".join(rng.choices(FILLERS, k=rng.randint(0, fillers)))
        fact = f"{country}的首都是{capital}。"
        context = before + fact + after
        start = len(before) + len(fact) - len(capital) - 1
        assert context[start : start + len(capital)] == capital
        rows.append(dict(id=f"q{seed}-{i}", context=context, question=f"{country}的首都是哪里？", answers=[capital], answer_starts=[start]))
    return rows


def exact_match(rows, predictions) -> dict[str, float]:
    return {"em": float(np.mean([p in r["answers"] for r, p in zip(rows, predictions)]))}


def texts_of(rows) -> list[str]:
    return [t for r in rows for t in (r["context"], r["question"])]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    texts = texts_of(capital_rows(200, seed=99)) + [POOL, "".join(FILLERS), "哪里？"]
    return build_tiny_backbone(tmp_path_factory.mktemp("span") / "char", texts, layers=2, vocab_size=6000)


# ---------------------------------------------------------------------------------------------
# windows and labels


def _check_windows(head: SpanExtractionHead, rows: list[dict]) -> dict[str, int]:
    """Every non-null label maps back to the gold text; every row's answer is in some window."""
    windows, features = head.encode(rows)
    assert len(windows) == len(features)
    found, null = set(), 0
    for window, item in zip(windows, features):
        row = rows[window.example]
        s, e = item["start_positions"], item["end_positions"]
        assert len(item["input_ids"]) <= head.max_len and set(item["token_type_ids"]) == {0}
        if (s, e) == (0, 0):
            null += 1
            ctx = context_tokens(window)  # a null window really lacks the whole answer
            a0, a1 = row["answer_starts"][0], row["answer_starts"][0] + len(row["answers"][0])
            assert window.offsets[ctx[0]][0] > a0 or window.offsets[ctx[-1]][1] < a1
            continue
        assert window.sequence_ids[s] == 1 and window.sequence_ids[e] == 1 and s <= e
        assert row["context"][window.offsets[s][0] : window.offsets[e][1]] == row["answers"][0]
        found.add(window.example)
    assert found == set(range(len(rows)))
    return {"windows": len(windows), "null": null}


def test_long_contexts_become_windows_whose_labels_map_back_to_the_gold_text(backbone):
    head = SpanExtractionHead.from_pretrained(backbone, max_seq_len=48)
    head.doc_stride = 12
    rows = capital_rows(30, seed=1, fillers=12)  # contexts of up to ~200 characters
    counts = _check_windows(head, rows)
    per_row = [sum(w.example == i for w in head.windows(rows)) for i in range(len(rows))]
    assert max(per_row) >= 3 and counts["null"] > 0
    # consecutive windows of one row overlap by the stride: their passage tokens share 12 characters here
    first, second = [w for w in head.windows(rows) if w.example == per_row.index(max(per_row))][:2]
    shared = {first.offsets[i] for i in context_tokens(first)} & {second.offsets[i] for i in context_tokens(second)}
    assert len(shared) == 12
    # the default stride is max_seq_len // 4; a question too long for the window is capped, not an error
    head.doc_stride = None
    assert head.stride == 12
    long_q = dict(rows[0], question="很" * 200)
    assert len(head.windows([long_q])) > 1


def test_word_mode_offsets_cover_whole_words(tmp_path):
    words = ("中国", "首都", "北京", "公园", "散步")
    context = "他们去公园散步。" * 6 + "中国的首都是北京。" + "他们去公园散步。" * 6
    rows = [dict(id="w", context=context, question="中国的首都是哪里？", answers=["北京"], answer_starts=[context.index("北京")])]
    backbone = build_tiny_backbone(tmp_path / "word", [context, rows[0]["question"]], mode="word", words=words, vocab_size=6000)
    head = SpanExtractionHead.from_pretrained(backbone, max_seq_len=32)
    assert head.tokenizer.mode == "word"
    counts = _check_windows(head, rows)
    assert counts["windows"] > 2 and counts["null"] > 0
    windows, features = head.encode(rows)
    (item,) = [f for f in features if f["start_positions"] != 0]
    s, e = item["start_positions"], item["end_positions"]
    assert s == e  # "北京" is one word-mode token spanning two characters
    window = windows[features.index(item)]
    assert window.offsets[s][1] - window.offsets[s][0] == 2


# ---------------------------------------------------------------------------------------------
# decoding


def _window(example: int, context_span: range) -> Window:
    """[CLS] q [SEP] <one token per character of context_span> [SEP]."""
    offsets = [None, (0, 1), None] + [(c, c + 1) for c in context_span] + [None]
    seq = [None, 0, None] + [1] * len(context_span) + [None]
    n = len(offsets)
    return Window(example, list(range(n)), [1] * n, [0] * n, offsets, seq)


def test_decoding_takes_the_best_valid_span_over_windows():
    context = "甲乙丙丁戊己庚辛"
    first, second = _window(0, range(0, 5)), _window(0, range(3, 8))  # tokens 3..7: 甲..戊 and 丁..辛
    s1, e1, s2, e2 = (np.full(9, -10.0) for _ in range(4))
    s1[0] = e1[0] = 50.0  # the null span ([CLS]) never wins
    s1[1] = e1[1] = 40.0  # nor a question token
    s1[7], e1[3] = 9.0, 9.0  # 戊 .. 甲: end before start, invalid
    s1[4], e1[5] = 3.0, 3.0  # 乙丙: valid, score 6
    s2[4], e2[5] = 4.0, 4.0  # 戊己 in the second window: score 8, the best
    span = best_span([first, second], [s1, s2], [e1, e2])
    assert context[span[0] : span[1]] == "戊己"
    assert best_span([first], [s1], [e1]) == (1, 3)  # 乙丙
    # padding beyond a window's tokens is ignored; a span longer than max_answer_tokens tokens is invalid
    padded = [np.concatenate([x, [99.0] * 4]) for x in (s2, e2)]
    assert best_span([second], [padded[0]], [padded[1]]) == (4, 6)
    s3, e3 = np.full(9, -10.0), np.full(9, -10.0)
    s3[3], e3[7] = 10.0, 10.0  # 丁 .. 辛, 5 tokens
    assert best_span([second], [s3], [e3], max_answer_tokens=4) != (3, 8)
    assert best_span([second], [s3], [e3], max_answer_tokens=5) == (3, 8)
    assert best_span([second], [s3], [e3], top_k=1) == (3, 8)
    # no passage token at all: no answer
    empty = Window(0, [0, 1, 2], [1] * 3, [0] * 3, [None, (0, 1), None], [None, 0, None])
    assert best_span([empty], [np.ones(3)], [np.ones(3)]) is None


# ---------------------------------------------------------------------------------------------
# training


def _cfg(**overrides) -> ClassifierTraining:
    return ClassifierTraining.from_params(TINY | dict(max_seq_len=48, num_train_epochs=15) | overrides)


def test_training_learns_the_synthetic_task_and_survives_save_and_reload(backbone, tmp_path, one_thread):
    train, dev = capital_rows(80, seed=2), capital_rows(24, seed=3)
    cfg = _cfg()
    head = SpanExtractionHead.from_pretrained(backbone, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    untrained = exact_match(dev, head.predict(dev))["em"]
    logged = []
    summary = head.fit(train, dev, cfg, score_fn=exact_match, metric="em", log_fn=lambda m, e: logged.append((e, m)))
    predictions = head.predict(dev)
    trained = exact_match(dev, predictions)["em"]
    print(f"synthetic dev EM: untrained {untrained:.3f}, trained {trained:.3f} (best epoch {summary.best_epoch}/{summary.epochs_run})")
    assert trained >= untrained + 0.4
    assert trained == summary.best_dev_score  # the best epoch's weights are the ones kept
    assert summary.metric == "em" and logged and "epoch.dev.em" in logged[-1][1]
    assert all(p in r["context"] for r, p in zip(dev, predictions))

    saved = head.save(tmp_path / "finetuned")
    assert (saved / "model.safetensors").is_file() and (saved / "zhnlp_tokenizer.json").is_file()
    again = SpanExtractionHead.from_pretrained(saved, seed=123, max_seq_len=cfg.max_seq_len)
    assert again.predict(dev) == predictions
    assert again.predict([]) == []


# ---------------------------------------------------------------------------------------------
# the real CMRC2018 trial sample


def trial_rows(path: Path) -> list[tuple[str, dict]]:
    """(passage id, row) for every question of a SQuAD-style CMRC2018 file (plain json; the reader is zhnlp.data.cmrc2018)."""
    out = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                starts = [int(a["answer_start"]) for a in qa["answers"]]
                if para["context"][starts[0] : starts[0] + len(answers[0])] != answers[0]:
                    continue  # an off offset (the reader repairs these; the test just skips them)
                out.append((para["id"], dict(id=qa["id"], context=para["context"], question=qa["question"], answers=answers, answer_starts=starts)))
    return out


def _scores(rows, predictions) -> dict[str, float]:
    return cmrc2018_scores({r["id"]: p for r, p in zip(rows, predictions)}, {r["id"]: r["answers"] for r in rows})


@pytest.mark.slow
def test_training_on_the_cmrc2018_trial_sample_beats_the_untrained_head(tmp_path, one_thread):
    path = shared_data_dir() / "clue" / "cmrc2018" / "trial.json"
    pairs = trial_rows(path)
    passages = sorted({p for p, _ in pairs})
    random.Random(0).shuffle(passages)
    dev_passages = set(passages[: len(passages) // 5])  # split by passage, 80/20: no passage in both
    train = [r for p, r in pairs if p not in dev_passages]
    dev = [r for p, r in pairs if p in dev_passages]
    assert len(pairs) > 900 and 150 < len(dev) < 300
    backbone = build_tiny_backbone(tmp_path / "trial", texts_of(train + dev), layers=2, hidden=64, positions=256, vocab_size=6000)
    cfg = ClassifierTraining.from_params(TINY | dict(max_seq_len=256, num_train_epochs=3, learning_rate=2e-3))  # stride 64
    head = SpanExtractionHead.from_pretrained(backbone, seed=cfg.seed, max_seq_len=cfg.max_seq_len)
    untrained = _scores(dev, head.predict(dev))
    summary = head.fit(train, dev, cfg, score_fn=_scores, metric="f1")
    trained = _scores(dev, head.predict(dev))
    print(f"CMRC2018 trial dev ({len(dev)} questions): untrained {untrained}, trained {trained} (best epoch {summary.best_epoch})")
    assert trained["f1"] > untrained["f1"] + 0.02
