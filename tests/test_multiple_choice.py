"""zhnlp.tasks.multiple_choice: C3 / CHID encoding, option masking, the blank assignment, training, save and reload."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pytest

from zhnlp.metrics import accuracy
from zhnlp.tasks.classification import ClassifierTraining
from zhnlp.tasks.multiple_choice import BLANK_TOKEN, OTHER_MASKS, ChoiceCollator, MultipleChoiceHead, assign_blanks
from tiny_backbone import SPECIAL, build_tiny_backbone

TINY = dict(per_device_train_batch_size=16, learning_rate=5e-3, warmup_ratio=0.0, max_seq_len=48, seed=7, early_stopping_patience=None)

# synthetic C3: the right choice is always a "good" word, the wrong ones "bad" words
GOOD = ["苹果", "香蕉", "西瓜", "葡萄", "橘子", "草莓"]
BAD = ["石头", "钢铁", "水泥", "玻璃", "塑料", "木板"]
# synthetic CHID: the right idiom is always one of RIGHT, the 6 others from WRONG (the sets are learnable
# from the options alone: they check that the head, the masking, the loss and the epoch loop train)
RIGHT = ["春暖花开", "秋高气爽", "雪中送炭"]
WRONG = ["画龙点睛", "守株待兔", "对牛弹琴", "亡羊补牢", "自相矛盾", "井底之蛙", "掩耳盗铃"]
IDIOMS = RIGHT + WRONG
FILLER = "今天我们在学校里读书写字大家都很高兴老师说要好好学习天天向上"


def c3_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = rng.choice([2, 3, 4])
        choices = rng.sample(BAD, k - 1)
        label = rng.randrange(k)
        choices.insert(label, rng.choice(GOOD))
        passage = FILLER[rng.randrange(10) :][:20] + "。"
        rows.append(dict(id=f"c{seed}-{i}", passage=passage, question="哪个可以吃？", choices=choices, label_id=label))
    return rows


def chid_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        candidates = rng.sample(WRONG, 6)
        label = rng.randrange(7)
        candidates.insert(label, rng.choice(RIGHT))
        left = FILLER[rng.randrange(12) :][: rng.randrange(4, 16)]
        right = FILLER[rng.randrange(12) :][: rng.randrange(4, 16)]
        text = f"{left}#other#{right[:2]}#idiom#{right}"
        rows.append(dict(id=f"h{seed}-{i}", text=text, candidates=candidates, label_id=label, group=f"h{seed}-{i}"))
    return rows


def score(rows, preds) -> dict[str, float]:
    return {"accuracy": accuracy([r["label_id"] for r in rows], preds)}


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    texts = [FILLER, "哪个可以吃？", *GOOD, *BAD, *IDIOMS] * 3
    return build_tiny_backbone(tmp_path_factory.mktemp("mc") / "backbone", texts, char_vocab=True)


# ---------------------------------------------------------------------------------------------
# encoding and masking


def test_c3_options_are_padded_and_masked(backbone):
    head = MultipleChoiceHead.from_pretrained(backbone, kind="multiple_choice", max_seq_len=32, seed=3)
    rows = [
        dict(id="a", passage="今天读书", question="哪个可以吃？", choices=["苹果", "石头"], label_id=0),
        dict(id="b", passage="老师说", question="哪个可以吃？", choices=["石头", "钢铁", "香蕉", "西瓜"], label_id=2),
    ]
    features = head.encode(rows)
    batch = head.collator()(features)
    assert tuple(batch["input_ids"].shape[:2]) == (2, 4) and batch["choice_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [0, 2] and int(batch["token_type_ids"].sum()) == 0
    tokens = head.tokenizer.hf.convert_ids_to_tokens(features[0]["input_ids"][1])
    assert tokens == ["[CLS]", "哪", "个", "可", "以", "吃", "？", "石", "头", "[SEP]", "今", "天", "读", "书", "[SEP]"]

    probs = head.predict_proba(rows)
    assert [len(p) for p in probs] == [2, 4] and all(np.isclose(p.sum(), 1.0) for p in probs)
    alone = head.predict_proba(rows[:1])[0]  # the dummy options do not change a 2-way decision
    np.testing.assert_allclose(probs[0], alone, rtol=1e-5)
    many = c3_rows(40, seed=11)
    preds = head.predict(many)
    assert all(0 <= p < len(r["choices"]) for p, r in zip(preds, many))


def test_c3_truncation_drops_the_passage_not_the_question(backbone):
    head = MultipleChoiceHead.from_pretrained(backbone, kind="multiple_choice", max_seq_len=20)
    row = dict(id="x", passage=FILLER * 3, question="哪个可以吃？", choices=["苹果", "石头"], label_id=0)
    for ids in head.encode([row])[0]["input_ids"]:
        tokens = head.tokenizer.hf.convert_ids_to_tokens(ids)
        assert len(ids) == 20 and tokens[1:7] == list("哪个可以吃？") and tokens[-1] == "[SEP]"
        assert tokens[10:12] == ["今", "天"]  # the passage, cut from its end


def test_chid_window_keeps_the_blank_and_masks_other_blanks(backbone):
    head = MultipleChoiceHead.from_pretrained(backbone, kind="idiom_cloze", max_seq_len=24)
    hf = head.tokenizer.hf
    assert BLANK_TOKEN not in SPECIAL and hf.convert_tokens_to_ids(BLANK_TOKEN) == len(hf) - 1  # added
    assert head.model.get_input_embeddings().num_embeddings == len(hf)
    blank = hf.convert_tokens_to_ids(BLANK_TOKEN)
    long = FILLER * 4
    candidates = IDIOMS[:7]
    for text in (f"#idiom#{long}#other#", f"{long}#other#读书#idiom#好{long}", f"{long}#idiom#", f"[unused1]{long}#idiom#"):
        (feature,) = head.encode([dict(id="t", text=text, candidates=candidates, label_id=0, group="g")])
        assert len(feature["input_ids"]) == 7
        for ids, idiom in zip(feature["input_ids"], candidates):
            assert len(ids) <= 24 and ids.count(blank) == 1
            assert hf.convert_ids_to_tokens(ids[1:6]) == [*idiom, "[SEP]"]
    (feature,) = head.encode([dict(id="m", text="读书#other#写字#idiom#高兴", candidates=candidates, label_id=0, group="m")])
    tokens = hf.convert_ids_to_tokens(feature["input_ids"][0])
    assert tokens[6:] == ["读", "书", *["[MASK]"] * OTHER_MASKS, "写", "字", BLANK_TOKEN, "高", "兴", "[SEP]"]
    with pytest.raises(ValueError, match="exactly one #idiom#"):
        head.encode([dict(id="bad", text="没有空", candidates=candidates, label_id=0, group="bad")])


def test_blank_marker_from_the_vocab_is_not_added(tmp_path):
    backbone = build_tiny_backbone(tmp_path / "unused", [FILLER, *IDIOMS], special=[*SPECIAL, BLANK_TOKEN], char_vocab=True)
    head = MultipleChoiceHead.from_pretrained(backbone, kind="idiom_cloze", max_seq_len=24)
    size = len(head.tokenizer.hf)
    assert head.add_blank_token() is False and len(head.tokenizer.hf) == size
    assert head.model.get_input_embeddings().num_embeddings == head.model.config.vocab_size == size


def test_collator_pads_choices_and_lengths():
    batch = ChoiceCollator(pad_id=0)([{"input_ids": [[5, 6, 7]], "labels": 0}, {"input_ids": [[5], [6, 7]], "labels": 1}])
    assert batch["input_ids"].tolist() == [[[5, 6, 7], [0, 0, 0]], [[5, 0, 0], [6, 7, 0]]]
    assert batch["attention_mask"].tolist() == [[[1, 1, 1], [1, 0, 0]], [[1, 0, 0], [1, 1, 0]]]
    assert batch["choice_mask"].tolist() == [[1, 0], [1, 1]] and batch["labels"].tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------
# the assignment


def test_assignment_gives_distinct_candidates_with_the_higher_total():
    probs = [np.array([0.6, 0.3, 0.1]), np.array([0.5, 0.1, 0.4]), np.array([0.2, 0.7, 0.1])]
    groups = ["p", "p", "q"]
    argmax = [int(np.argmax(p)) for p in probs]
    assert argmax[:2] == [0, 0]
    pred = assign_blanks(probs, groups)
    assert pred == [0, 2, 1] and pred[0] != pred[1]

    def total(choice):
        return sum(np.log(probs[i][c]) for i, c in enumerate(choice))

    best = max((c for c in itertools.permutations(range(3), 2)), key=total)
    assert tuple(pred[:2]) == best and total(pred[:2]) > total([0, 1]) and total(pred[:2]) > total([1, 0])
    # more blanks than candidates, or different candidate lists: the argmax stays
    two = [np.array([0.9, 0.1])] * 3
    assert assign_blanks(two, ["g"] * 3) == [0, 0, 0]
    assert assign_blanks(probs[:2], ["p", "p"], [["甲", "乙", "丙"], ["甲", "乙", "丁"]]) == [0, 0]
    assert assign_blanks(probs[:2], [None, None]) == [0, 0]


def test_idiom_cloze_predict_assigns_within_a_group(backbone):
    head = MultipleChoiceHead.from_pretrained(backbone, kind="idiom_cloze", max_seq_len=32)
    candidates = IDIOMS[:7]
    rows = [dict(id=str(i), text=f"读书#other#写字#idiom#{i}", candidates=candidates, label_id=0, group="same") for i in range(3)]
    probs = head.predict_proba(rows)
    preds = head.predict(rows)
    assert len(set(preds)) == 3 and preds == assign_blanks(probs, ["same"] * 3)


# ---------------------------------------------------------------------------------------------
# training, save and reload


@pytest.mark.parametrize("kind", ["multiple_choice", "idiom_cloze"])
def test_training_learns_and_reload_predicts_the_same(backbone, tmp_path, kind):
    make = c3_rows if kind == "multiple_choice" else chid_rows
    train, dev = make(64, seed=1), make(40, seed=2)
    head = MultipleChoiceHead.from_pretrained(backbone, kind=kind, max_seq_len=48, seed=7)
    before = score(dev, head.predict(dev))["accuracy"]
    logged = []
    cfg = ClassifierTraining(num_train_epochs=3, **TINY)
    summary = head.fit(train, dev, cfg, score_fn=score, metric="accuracy", log_fn=lambda m, e: logged.append((e, m)))
    after = score(dev, head.predict(dev))["accuracy"]
    assert summary.metric == "accuracy" and summary.epochs_run == 3 and len(logged) == 3
    assert after == pytest.approx(summary.best_dev_score) and after >= before + 0.3, (before, after)
    assert summary.history[-1]["train.loss"] < summary.history[0]["train.loss"]

    out = head.save(tmp_path / kind)
    assert (out / "model.safetensors").is_file()
    again = MultipleChoiceHead.from_pretrained(out, kind=kind, max_seq_len=48)
    assert again.predict(dev) == head.predict(dev)
    for a, b in zip(again.predict_proba(dev), head.predict_proba(dev)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# real samples (../shared/data), parsed with plain json here


def real_c3(path: Path, limit: int) -> list[dict]:
    rows = []
    for lines, questions, pid in json.loads(path.read_text(encoding="utf-8")):
        for i, q in enumerate(questions):
            rows.append(dict(id=f"{pid}-{i}", passage="\n".join(lines), question=q["question"], choices=q["choice"], label_id=q["choice"].index(q["answer"])))
    return rows[:limit]


def real_chid(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        rows.append(dict(id=str(obj["id"]), text=obj["content"], candidates=obj["candidates"], label_id=int(obj["answer"]), group=str(obj["id"])))
    return rows


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("kind", ["multiple_choice", "idiom_cloze"])
def test_real_samples_train(tmp_path, kind):
    """A tiny random backbone trained briefly on real C3 / CHID: the loss falls; accuracies are reported
    (a model this small, trained from scratch on a few hundred rows, is near chance on real text)."""
    from shared_data import shared_data_dir

    from zhnlp.tasks.floors import TfidfChoiceFloor

    clue = shared_data_dir() / "clue"
    if kind == "multiple_choice":
        train, dev = real_c3(clue / "c3" / "c3-d-train.json", 400), real_c3(clue / "c3" / "c3-d-dev.json", 300)
        texts = [r["passage"] + r["question"] + "".join(r["choices"]) for r in train + dev]
        chance = float(np.mean([1 / len(r["choices"]) for r in dev]))
        max_seq_len = 96
    else:
        train, dev = real_chid(clue / "chid" / "train_few_all.json"), real_chid(clue / "chid" / "dev_few_all.json")
        texts = [r["text"] + "".join(r["candidates"]) for r in train + dev]
        chance = 1 / 7
        max_seq_len = 64
    backbone = build_tiny_backbone(tmp_path / "backbone", texts, char_vocab=True)
    head = MultipleChoiceHead.from_pretrained(backbone, kind=kind, max_seq_len=max_seq_len, seed=7)
    before = score(dev, head.predict(dev))["accuracy"]
    cfg = ClassifierTraining(**(TINY | dict(num_train_epochs=5, max_seq_len=max_seq_len, learning_rate=1e-2)))
    summary = head.fit(train, dev, cfg, score_fn=score, metric="accuracy")
    after = score(dev, head.predict(dev))["accuracy"]
    floor = score(dev, TfidfChoiceFloor(kind).fit(train).predict(dev))["accuracy"]
    losses = [h["train.loss"] for h in summary.history]
    print(f"\n{kind}: train {len(train)} dev {len(dev)} chance {chance:.3f} tfidf floor {floor:.3f} "
          f"untrained {before:.3f} trained {after:.3f} (best epoch {summary.best_epoch}) losses {[round(x, 3) for x in losses]}")
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0
    assert after == pytest.approx(summary.best_dev_score)
    assert min(losses[1:]) < losses[0]
    if kind == "multiple_choice":  # measured: 0.237 untrained -> 0.293 (CHID from scratch stays near chance: 0.158 -> 0.163)
        assert after > before + 0.02
