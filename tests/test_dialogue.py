"""zhnlp.tasks.dialogue: left truncation, token types, loss masks, BLEU / distinct, the chat session."""

from __future__ import annotations

import math

import pytest

from zhnlp.tasks.dialogue import (
    ChatSession,
    DialogueSettings,
    SamplingSettings,
    corpus_bleu,
    dialogue_example,
    distinct_n,
    load_backbone,
    reply_prompt,
    truncate_left,
)
from zhnlp.tasks.generation import IGNORE, save_random_backbone

CLS, SEP = 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# ------------------------------------------------------------------ truncation and layout


def test_truncate_left_keeps_the_latest_whole_turns():
    turns = [[10, 11, 12], [20, 21], [30, 31, 32, 33], [40]]
    assert truncate_left(turns, 100) == (turns, 0)
    assert truncate_left(turns, 7) == ([[30, 31, 32, 33], [40]], 2)  # 5 + 2 tokens with their [SEP]s
    assert truncate_left(turns, 9) == ([[30, 31, 32, 33], [40]], 2)  # [20, 21] + [SEP] would make 10
    assert truncate_left(turns, 10) == ([[20, 21], [30, 31, 32, 33], [40]], 1)


def test_truncate_left_cuts_inside_a_last_turn_that_cannot_fit():
    assert truncate_left([[1, 2], [5, 6, 7, 8, 9]], 4) == ([[7, 8, 9]], 1)


def test_example_layout_types_and_loss_masks():
    turns = [[10, 11], [20], [30, 31, 32]]
    every = dialogue_example(turns, cls_id=CLS, sep_id=SEP, max_len=64, loss_on="all_turns")
    assert every.input_ids == [CLS, 10, 11, SEP, 20, SEP, 30, 31, 32, SEP]
    assert every.token_type_ids == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert every.labels == [IGNORE, 10, 11, SEP, 20, SEP, 30, 31, 32, SEP]  # every turn, [CLS] excluded
    last = dialogue_example(turns, cls_id=CLS, sep_id=SEP, max_len=64, loss_on="last_response")
    assert last.input_ids == every.input_ids
    assert last.labels == [IGNORE] * 6 + [30, 31, 32, SEP]  # the last response and its [SEP] only


def test_truncated_example_keeps_speaker_types_and_the_end():
    turns = [[10, 11], [20], [30, 31, 32], [40, 41]]
    ex = dialogue_example(turns, cls_id=CLS, sep_id=SEP, max_len=8, loss_on="all_turns")
    assert ex.input_ids == [CLS, 30, 31, 32, SEP, 40, 41, SEP]  # turns 2 and 3 kept
    assert ex.token_type_ids == [0, 0, 0, 0, 0, 1, 1, 1]  # turn i keeps type i % 2
    assert len(ex.input_ids) <= 8


def test_reply_prompt_gives_the_next_speaker_type():
    p = reply_prompt([[10], [20, 21], [30]], cls_id=CLS, sep_id=SEP, budget=64)
    assert p.ids == [CLS, 10, SEP, 20, 21, SEP, 30, SEP] and p.next_segment == 1
    p = reply_prompt([[10], [20, 21]], cls_id=CLS, sep_id=SEP, budget=64)
    assert p.next_segment == 0
    p = reply_prompt([[10], [20, 21], [30]], cls_id=CLS, sep_id=SEP, budget=3)
    assert p.ids == [CLS, 30, SEP] and p.segments == [0, 0, 0]


# ------------------------------------------------------------------ metrics


def test_bleu_on_hand_examples():
    assert corpus_bleu([list("今天天气很好")], [list("今天天气很好")]) == pytest.approx(100.0)
    # p1 = 3/4, p2 = 2/3, equal lengths (no brevity penalty): BLEU-2 = sqrt(1/2)
    assert corpus_bleu([list("abcf")], [list("abcd")], max_n=2) == pytest.approx(100 * math.sqrt(0.5))
    # brevity penalty: hyp "ab" against "abcd": p1 = p2 = 1, BP = exp(1 - 4/2)
    assert corpus_bleu([list("ab")], [list("abcd")], max_n=2) == pytest.approx(100 * math.exp(-1))
    # no 4-gram match: method1 smoothing counts 0.1 matches instead of zeroing the score
    score = corpus_bleu([list("abcxe")], [list("abcde")], max_n=4)
    assert score == pytest.approx(100 * (4 / 5 * 2 / 4 * 1 / 3 * 0.1 / 2) ** 0.25)
    # corpus level: counts are summed before dividing, clipped by the reference counts
    assert corpus_bleu([list("aa"), list("b")], [list("ab"), list("b")], max_n=1) == pytest.approx(100 * 2 / 3)
    assert corpus_bleu([[]], [list("abc")]) == 0.0


def test_distinct_on_hand_examples():
    replies = [list("好的好的"), list("好的")]
    assert distinct_n(replies, 1) == pytest.approx(2 / 6)
    assert distinct_n(replies, 2) == pytest.approx(2 / 4)  # 好的, 的好
    assert distinct_n([[]], 2) == 0.0


def test_settings_validate_loss_on():
    with pytest.raises(ValueError, match="loss_on"):
        DialogueSettings(loss_on="everything")


# ------------------------------------------------------------------ chat session


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    texts = ["你好，今天天气怎么样", "挺好的，出去走走吧", "好啊，几点见面？", "下午三点在公园见"] * 5
    return save_random_backbone(tmp_path_factory.mktemp("dlg") / "bb", texts, hidden_size=32)


def test_chat_session_is_reproducible_and_keeps_history(backbone):
    model, codec = load_backbone(backbone, seed=0, device="cpu")
    settings = DialogueSettings(max_seq_len=48, sampling=SamplingSettings(top_k=5, max_new_tokens=6))

    def talk(seed):
        chat = ChatSession(model, codec, settings, seed=seed)
        out = [chat.reply("你好"), chat.reply("几点见面？")]
        assert len(chat.history) == 4 and chat.history[0] == "你好"
        return out

    assert talk(0) == talk(0)
    chat = ChatSession(model, codec, settings, seed=0)
    first = chat.reply("你好")
    chat.reset()
    assert chat.history == [] and chat.reply("你好") == first
    with pytest.raises(ValueError, match="empty"):
        chat.reply("   ")
