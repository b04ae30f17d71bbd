"""zhnlp.tasks.floors: the non-neural floors on hand-made rows, then on the real CLUE samples (../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared_data import shared_data_dir

from zhnlp.metrics import accuracy, cmrc2018_scores, entity_scores
from zhnlp.tasks.floors import GazetteerNerFloor, OverlapSpanFloor, TfidfChoiceFloor, blank_context

# --------------------------------------------------------------------------- span extraction


def test_overlap_span_picks_clause_then_new_characters():
    context = "尤金袋鼠是一种袋鼠。它的体重约8公斤，主要分布在澳洲南部。"
    # question chars (punctuation dropped): 尤金袋鼠主要分布在哪里. Distinct 1-3-gram overlap per clause:
    #   尤金袋鼠是一种袋鼠。  4 unigrams + 3 bigrams (尤金 金袋 袋鼠) + 2 trigrams = 9
    #   它的体重约8公斤，     0
    #   主要分布在澳洲南部。  5 unigrams + 4 bigrams + 3 trigrams (主要分 要分布 分布在) = 12  <- chosen
    # its longest run of characters absent from the question: 澳洲南部
    assert OverlapSpanFloor().fit([]).predict([{"context": context, "question": "尤金袋鼠主要分布在哪里？"}]) == ["澳洲南部"]
    # the 体重 clause wins for a weight question (overlap 体,重,体重 = 3); runs 它的 / 约8公斤 -> the longer
    assert OverlapSpanFloor.predict_one(context, "它体重多少？") == "约8公斤"


def test_overlap_span_fallbacks():
    # a clause made only of question characters is returned whole, trimmed of punctuation
    assert OverlapSpanFloor.predict_one("“北京”。", "北京在哪？") == "北京"
    # ties go to the earlier clause: both clauses share only 甲 with the question
    assert OverlapSpanFloor.predict_one("甲乙，甲丙丙。", "甲？") == "乙"
    assert OverlapSpanFloor.predict_one("", "问题？") == ""


# --------------------------------------------------------------------------- multiple choice / idiom cloze


def test_tfidf_multiple_choice():
    row = {
        "passage": "男：我们明天去公园吧。\n女：好啊。",
        "question": "他们明天去哪里?",
        "choices": ["学校", "公园", "医院"],
        "label_id": 1,
    }
    # 公园 is the only choice sharing a character with passage + question; the others have cosine 0
    floor = TfidfChoiceFloor().fit([row])
    sims = floor.similarities([row])[0]
    assert sims[0] == 0 and sims[2] == 0 and sims[1] > 0
    assert floor.predict([row]) == [1]
    with pytest.raises(ValueError, match="call fit"):
        TfidfChoiceFloor().predict([row])
    with pytest.raises(ValueError, match="at least one train row"):
        TfidfChoiceFloor().fit([])


def idiom_rows(candidates):
    # one passage 春花秋[A]。。。。。。春暖花开[B] with two blanks, one row per blank
    return [
        {"id": "a", "text": "春花秋#idiom#。。。。。。春暖花开#other#", "candidates": candidates, "label_id": 1, "group": "p"},
        {"id": "b", "text": "春花秋#other#。。。。。。春暖花开#idiom#", "candidates": candidates, "label_id": 0, "group": "p"},
    ]


def test_blank_context_window():
    a, b = idiom_rows([])
    assert blank_context(a["text"], 4) == "春花秋。。。。"  # 3 chars before (text start), 4 after
    assert blank_context(b["text"], 4) == "春暖花开"  # #other# removed first, nothing after the blank
    with pytest.raises(ValueError, match="no #idiom# blank"):
        blank_context("没有空格", 4)


def test_tfidf_idiom_group_assignment():
    cands = ["春暖花开", "秋高气爽", "七上八下"]
    rows = idiom_rows(cands)
    floor = TfidfChoiceFloor(window=4).fit(rows)
    sims = floor.similarities(rows)
    # blank b's context IS candidate 0 (cosine 1); blank a's context 春花秋。。。。 shares 春,花 with cand 0,
    # 秋 with cand 1, nothing with cand 2. Alone, both blanks pick cand 0:
    assert sims[1][0] == pytest.approx(1.0) and sims[0][1] > 0 and sims[0][2] == 0 and sims[1][1] == 0
    assert [int(s.argmax()) for s in sims] == [0, 0]
    # one-to-one: (a,b) = (1,0) totals s_a1 + 1; every other pair either leaves b without cand 0 (total
    # <= s_a0 + s_b1 = s_a0 < 1) or gives a cand 2 (0 + 1); so the assignment is [1, 0]
    assert floor.predict(rows) == [1, 0]
    # rows in separate groups keep the argmax
    solo = [dict(r, group=r["id"]) for r in rows]
    assert floor.predict(solo) == [0, 0]


def test_tfidf_idiom_more_blanks_than_candidates_falls_back():
    rows = idiom_rows(["春暖花开"])
    assert TfidfChoiceFloor(kind="idiom_cloze", window=4).fit(rows).predict(rows) == [0, 0]
    with pytest.raises(ValueError, match="kind"):
        TfidfChoiceFloor(kind="ner")


# --------------------------------------------------------------------------- NER


def ent(type_, start, text):
    return {"type": type_, "start": start, "end": start + len(text) - 1, "text": text}


def test_gazetteer_longest_match_and_majority_type():
    train = [
        {"text": "", "entities": [ent("address", 0, "北京"), ent("address", 5, "北京"), ent("organization", 9, "北京")]},
        {"text": "", "entities": [ent("organization", 0, "北京大学")]},
        {"text": "", "entities": [ent("organization", 0, "华为"), ent("company", 4, "华为")]},  # tie -> company
    ]
    floor = GazetteerNerFloor().fit(train)
    assert floor.types == {"北京": "address", "北京大学": "organization", "华为": "company"}
    # 他0 在1 北2 京3 大4 学5 见6 到7 华8 为9 的10 人11 ，12 北13 京14 很15 美16
    # at 2 the longest entry is 北京大学 (not 北京); 华为 at 8; 北京 at 13
    assert floor.predict([{"text": "他在北京大学见到华为的人，北京很美"}]) == [
        [
            {"type": "organization", "start": 2, "end": 5, "text": "北京大学"},
            {"type": "company", "start": 8, "end": 9, "text": "华为"},
            {"type": "address", "start": 13, "end": 14, "text": "北京"},
        ]
    ]
    assert floor.predict([{"text": ""}, {"text": "北"}]) == [[], []]


# --------------------------------------------------------------------------- the real samples (plain JSON parsing)


def clue_dir(name: str) -> Path:
    path = shared_data_dir() / "clue" / name
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


def cmrc_rows(path: Path) -> list[dict]:
    rows = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = [a["text"] for a in qa["answers"]]
                rows.append({"id": qa["id"], "context": para["context"], "question": qa["question"], "answers": answers})
    return rows


def c3_rows(path: Path) -> list[dict]:
    rows = []
    for lines, questions, pid in json.loads(path.read_text(encoding="utf-8")):
        for i, q in enumerate(questions):
            rows.append(
                {
                    "id": f"{pid}-{i}",
                    "passage": "\n".join(lines),
                    "question": q["question"],
                    "choices": q["choice"],
                    "label_id": q["choice"].index(q["answer"]),
                }
            )
    return rows


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def chid_rows(path: Path) -> list[dict]:
    return [
        {"id": str(r["id"]), "text": r["content"], "candidates": r["candidates"], "label_id": r["answer"], "group": str(r["id"])}
        for r in json_lines(path)
    ]


def cluener_rows(path: Path) -> list[dict]:
    rows = []
    for r in json_lines(path):
        ents = [
            {"type": t, "start": s, "end": e, "text": text}
            for t, by_text in r["label"].items()
            for text, spans in by_text.items()
            for s, e in spans
        ]
        rows.append({"text": r["text"], "entities": sorted(ents, key=lambda e: (e["start"], e["end"], e["type"]))})
    return rows


def test_real_cmrc2018_trial_overlap_floor():
    rows = cmrc_rows(clue_dir("cmrc2018") / "trial.json")
    pred = OverlapSpanFloor().fit([]).predict(rows)
    scores = cmrc2018_scores({r["id"]: p for r, p in zip(rows, pred)}, {r["id"]: r["answers"] for r in rows})
    print(f"\nCMRC2018 trial ({len(rows)} questions) OverlapSpanFloor: EM {scores['em']:.4f} F1 {scores['f1']:.4f}")
    assert len(rows) == 1002
    # no chance level for spans; measured EM 0.045, F1 0.229: a clause pick that finds answers at all
    assert scores["em"] > 0.02 and scores["f1"] > 0.15


def test_real_c3_tfidf_floor_beats_chance():
    d = clue_dir("c3")
    train, dev = c3_rows(d / "c3-d-train.json"), c3_rows(d / "c3-d-dev.json")
    acc = accuracy([r["label_id"] for r in dev], TfidfChoiceFloor().fit(train).predict(dev))
    chance = sum(1 / len(r["choices"]) for r in dev) / len(dev)
    print(f"\nC3 dialogue dev ({len(dev)} questions) TfidfChoiceFloor: accuracy {acc:.4f} (chance {chance:.4f})")
    assert len(dev) == 1825
    assert acc > chance + 0.05


def test_real_chid_tfidf_floor_beats_chance():
    d = clue_dir("chid")
    train, test = chid_rows(d / "train_few_all.json"), chid_rows(d / "test_public.json")
    acc = accuracy([r["label_id"] for r in test], TfidfChoiceFloor().fit(train).predict(test))
    print(f"\nCHID test_public ({len(test)} blanks) TfidfChoiceFloor: accuracy {acc:.4f} (chance {1 / 7:.4f})")
    assert len(test) == 2002
    assert acc > 1 / 7 + 0.03


def test_real_cluener_gazetteer_floor():
    d = clue_dir("cluener")
    train, dev = cluener_rows(d / "train.json"), cluener_rows(d / "dev.json")
    scores = entity_scores(GazetteerNerFloor().fit(train).predict(dev), [r["entities"] for r in dev])
    print(
        f"\nCLUENER dev ({len(dev)} rows) GazetteerNerFloor: P {scores['precision']:.4f} R {scores['recall']:.4f} "
        f"F1 {scores['f1']:.4f}; per type F1 " + ", ".join(f"{t} {v['f1']:.3f}" for t, v in scores["per_type"].items())
    )
    assert len(dev) == 1343
    assert set(scores["per_type"]) == {
        "address", "book", "company", "game", "government", "movie", "name", "organization", "position", "scene"
    }
    # no chance level for NER; measured F1 0.556: a gazetteer finds most repeated names
    assert scores["f1"] > 0.4
