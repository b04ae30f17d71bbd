"""zhnlp.tasks.seq2seq: Ape210K UniLM sequences, the equation-only loss, decoding and the safe_eval correctness check."""

from __future__ import annotations

import pytest

from zhnlp.data.ape210k import iter_problems
from demo import write_demo_corpora
from zhnlp.tasks.generation import IGNORE, TextCodec, save_random_backbone
from zhnlp.data.rows import RowPolicy
from zhnlp.tasks.seq2seq import ApeSettings, check_prediction, decode_equations, encode_problems, load_backbone


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo Ape210K problems (normalised as prepare_ape210k does) and a tiny random backbone trained on their text."""
    root = tmp_path_factory.mktemp("ape")
    write_demo_corpora(root / "demo", seed=0, scale=0.3)
    with RowPolicy("skip") as policy:
        rows = list(iter_problems(root / "demo" / "ape210k" / "train.ape.json", policy))
    texts = [r["question"] for r in rows]  # questions only: "*" never occurs there
    return rows, save_random_backbone(root / "backbone", texts, hidden_size=32)


def test_sequence_layout_and_equation_only_loss(demo):
    rows, backbone = demo
    _, codec = load_backbone(backbone, seed=0, device="cpu")
    settings = ApeSettings(max_source_len=64, max_target_len=32)
    examples, stats = encode_problems(codec, rows[:20], settings)
    assert stats.encoded == 20 and stats.dropped_long_equations == 0
    for row, ex in zip(rows, examples):
        q = codec.encode_many([row["question"]])[0]
        e = codec.encode_many([row["equation"]])[0]
        assert ex.input_ids == [codec.cls_id, *q, codec.sep_id, *e, codec.sep_id]
        assert ex.token_type_ids == [0] * (len(q) + 2) + [1] * (len(e) + 1)
        # labels: exactly the equation tokens and the final [SEP], i.e. the segment-1 positions
        assert [l != IGNORE for l in ex.labels] == [t == 1 for t in ex.token_type_ids]
        assert [l for l in ex.labels if l != IGNORE] == [*e, codec.sep_id]
        assert codec.decode(e) == row["equation"]


def test_long_equations_are_left_out_and_questions_cut(demo):
    rows, backbone = demo
    _, codec = load_backbone(backbone, seed=0, device="cpu")
    examples, stats = encode_problems(codec, rows[:10], ApeSettings(max_source_len=8, max_target_len=4))
    assert stats.dropped_long_equations + stats.encoded == 10 and stats.dropped_long_equations > 0
    assert stats.truncated_questions == stats.encoded
    assert all(len(e.input_ids) <= 8 + 4 and e.input_ids[7] == codec.sep_id for e in examples)


def test_missing_equation_symbols_are_added_to_the_vocab(demo):
    _, backbone = demo
    plain = TextCodec.load(backbone)
    assert plain.zh.unk_id in plain.encode_many(["*"])[0]  # the questions never contain "*"
    model, codec = load_backbone(backbone, seed=0, device="cpu")
    assert codec.zh.unk_id not in codec.encode_many(["(3+4)*5.5/2"])[0]
    assert model.get_input_embeddings().num_embeddings == len(codec) > len(plain)
    assert model.cls.predictions.decoder.weight.shape[0] == len(codec)
    assert codec.decode(codec.encode_many(["(3+4)*5.5/2"])[0]) == "(3+4)*5.5/2"


@pytest.mark.parametrize(
    ("pred", "answer", "correct", "valid"),
    [
        ("(60+97)*5", 785.0, True, True),
        ("1-1/7-1/9", 47 / 63, True, True),
        ("1/3", 0.333333333, True, True),  # equal after rounding both to 6 decimals
        ("0.3333", 1 / 3, False, True),
        ("2**3", 8.0, True, True),
        ("60+97*5", 785.0, False, True),
        ("1/0", 1.0, False, False),  # division by zero: an error counts as wrong
        ("(1+2", 3.0, False, False),
        ("", 0.0, False, False),
        ("__import__('os').system('x')", 0.0, False, False),  # never evaluated as Python
        ("9" * 40, 1.0, False, False),  # out of safe_eval's bounds
    ],
)
def test_check_prediction_uses_safe_eval(pred, answer, correct, valid):
    assert check_prediction(pred, answer) == (correct, valid)


def test_decoding_with_and_without_cache_agree(demo):
    rows, backbone = demo
    model, codec = load_backbone(backbone, seed=0, device="cpu")
    settings = ApeSettings(max_source_len=64, max_target_len=12, eval_batch_size=4)
    questions = [r["question"] for r in rows[:6]]
    fast, _ = decode_equations(model, codec, questions, num_beams=2, settings=settings)
    slow, _ = decode_equations(model, codec, questions, num_beams=2, settings=settings, use_cache=False)
    assert fast == slow and len(fast) == 6
