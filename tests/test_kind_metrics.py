"""zhnlp.metrics: CMRC2018 EM/F1 (mixed segmentation, LCS, max over golds) and entity-level NER scores, worked by hand."""

from __future__ import annotations

import pytest

from zhnlp.metrics import cmrc2018_scores, cmrc_f1, cmrc_normalize, cmrc_segments, entity_scores


def test_mixed_segmentation_and_normalisation():
    # CJK chars one token each, ASCII runs one lower-cased token, punctuation and spaces dropped
    assert cmrc_segments("2018年NBA总决赛，Hello World!") == ["2018", "年", "nba", "总", "决", "赛", "hello", "world"]
    assert cmrc_segments("《红楼梦》") == ["红", "楼", "梦"]
    # the official list has "……" (removed per character) but not the dash "—": a dash run stays one token
    assert cmrc_segments("……") == []
    assert cmrc_segments("甲——乙") == ["甲", "——", "乙"]
    assert cmrc_normalize(" 《Red Mansions》。") == "redmansions"


def test_partial_overlap_prf():
    # pred 北京市 -> [北,京,市], gold 北京 -> [北,京]; LCS 2: P = 2/3, R = 2/2 = 1, F1 = 2·(2/3)·1/(2/3+1) = 0.8
    assert cmrc_f1("北京市", "北京") == pytest.approx(0.8)
    assert cmrc2018_scores({"q": "北京市"}, {"q": ["北京"]}) == pytest.approx({"em": 0.0, "f1": 0.8})


def test_punctuation_only_difference_is_exact():
    # 《红楼梦》 vs 红楼梦: identical after removing punctuation -> EM 1, F1 1; case and ASCII punctuation too
    assert cmrc2018_scores({"q": "《红楼梦》"}, {"q": ["红楼梦"]}) == pytest.approx({"em": 1.0, "f1": 1.0})
    assert cmrc2018_scores({"q": "Hello, World!"}, {"q": ["hello world"]}) == pytest.approx({"em": 1.0, "f1": 1.0})


def test_english_word_is_one_token():
    # NBA总决赛 -> [nba, 总, 决, 赛] (4 tokens), gold NBA -> [nba]; LCS 1: P 1/4, R 1, F1 = 2·(1/4)/(5/4) = 0.4
    # (were letters single tokens: [n,b,a,总,决,赛] vs [n,b,a]: P 1/2, R 1, F1 2/3 -- a different number)
    assert cmrc_f1("NBA总决赛", "NBA") == pytest.approx(0.4)
    # New York City -> [new, york, city], gold new york -> [new, york]: P 2/3, R 1, F1 0.8
    assert cmrc_f1("New York City", "new york") == pytest.approx(0.8)


def test_lcs_is_contiguous():
    # 北上京 vs 北京: the longest common SUBSTRING is 1 token (a subsequence would be 2): P 1/3, R 1/2, F1 = (1/3)/(5/6) = 0.4
    assert cmrc_f1("北上京", "北京") == pytest.approx(0.4)


def test_max_over_golds():
    # golds 上海 (F1 0, EM 0) and 北京 (F1 0.8, EM 0): the question scores F1 0.8, EM 0
    assert cmrc2018_scores({"q": "北京市"}, {"q": ["上海", "北京"]}) == pytest.approx({"em": 0.0, "f1": 0.8})
    # a second gold matching exactly lifts both to 1
    assert cmrc2018_scores({"q": "北京市"}, {"q": ["北京", "北京市。"]}) == pytest.approx({"em": 1.0, "f1": 1.0})


def test_mean_over_gold_questions_missing_prediction_scores_zero():
    golds = {"q1": ["北京"], "q2": ["上海"], "q3": ["广州"]}
    # q1 exact (1, 1); q2 F1 0.8, EM 0; q3 has no prediction (0, 0); q9 is not a gold question (ignored)
    preds = {"q1": "北京", "q2": "上海市", "q9": "广州"}
    scores = cmrc2018_scores(preds, golds)
    assert scores["em"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1 + 0.8 + 0) / 3)


def test_empty_prediction_and_errors():
    assert cmrc2018_scores({"q": ""}, {"q": ["北京"]}) == {"em": 0.0, "f1": 0.0}  # no division by zero
    assert cmrc2018_scores({"q": "。"}, {"q": ["北京"]}) == {"em": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="no gold questions"):
        cmrc2018_scores({}, {})
    with pytest.raises(ValueError, match="'q'"):
        cmrc2018_scores({"q": "a"}, {"q": []})


# --------------------------------------------------------------------------- NER

GOLD = [{("name", 0, 1), ("address", 3, 4)}, {("company", 0, 2), ("name", 5, 6)}]
PRED = [{("name", 0, 1), ("address", 3, 5)}, {("company", 0, 2)}]


def test_entity_micro_scores():
    # 3 predicted, 2 right (name 0-1, company 0-2); 4 gold: P 2/3, R 2/4; F1 = 2·(2/3)(1/2)/(2/3+1/2) = (2/3)/(7/6) = 4/7
    s = entity_scores(PRED, GOLD)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(1 / 2)
    assert s["f1"] == pytest.approx(4 / 7)
    # per type: name 1 predicted, 1 right, 2 gold -> P 1, R 1/2, F1 2/3; address 1 predicted, 0 right -> 0;
    # company 1/1/1 -> 1
    assert s["per_type"]["name"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_type"]["address"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert s["per_type"]["company"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_entity_dicts_duplicates_and_edge_cases():
    as_dicts = [[{"type": t, "start": a, "end": b, "text": "x"} for t, a, b in sorted(row)] for row in PRED]
    as_dicts[0].append(dict(as_dicts[0][0]))  # a duplicate counts once
    assert entity_scores(as_dicts, GOLD)["f1"] == pytest.approx(4 / 7)
    # a type only predicted: support 0, precision 0; nothing gold at all -> recall 0, F1 0
    s = entity_scores([[("game", 0, 1)]], [[]])
    assert s["per_type"]["game"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert entity_scores([[]], [[]])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 gold rows"):
        entity_scores([[]], GOLD)
