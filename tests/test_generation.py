"""zhnlp.models: the UniLM / causal BERT heads and their masks, our search, and transformers' generate() on the heads."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from zhnlp.tasks.generation import Collator, Example, bert_lm_loss
from zhnlp.models.decoding import BertDecoder, Prompt, load_model, transformers_generate
from zhnlp.models.search import beam_search, filter_logits, greedy, sample
from zhnlp.models.unilm import HEADS, BertCausalLM, BertUniLM, additive_mask, causal_mask, unilm_mask

EOS = 3


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def tiny_bert(seed: int = 0, vocab: int = 40, init: float = 0.5, cls=None):
    """A random BertForMaskedLM (or head ``cls``) whose outputs depend visibly on what each position sees (large init)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, initializer_range=init, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return (cls or BertForMaskedLM)(config).eval()


PROMPTS = [Prompt([2, 10, 11, 12, EOS]), Prompt([2, 20, EOS]), Prompt([2, 30, 31, 32, 33, 34, EOS])]


# ------------------------------------------------------------------ masks


def test_unilm_mask_values():
    # [CLS] a b [SEP] | x y [SEP] | [PAD]
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0]])
    got = unilm_mask(types, valid)[0].int().tolist()
    source = [1, 1, 1, 1, 0, 0, 0, 0]
    assert got[:4] == [source] * 4  # the source sees the whole source and no target
    assert got[4] == [1, 1, 1, 1, 1, 0, 0, 0]  # a target sees the source and itself...
    assert got[5] == [1, 1, 1, 1, 1, 1, 0, 0]  # ...and the targets before it
    assert got[6] == [1, 1, 1, 1, 1, 1, 1, 0]
    assert all(row[7] == 0 for row in got)  # padding is never seen


def test_causal_mask_values():
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    got = causal_mask(valid).int().tolist()
    assert got[0] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    assert got[1] == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]


def test_additive_mask_shape_dtype_values():
    allowed = torch.tensor([[[True, False], [True, True]]])
    out = additive_mask(allowed, torch.bfloat16)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.bfloat16
    assert out[0, 0, 0, 0] == 0 and out[0, 0, 0, 1] == torch.finfo(torch.bfloat16).min


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bert_honours_the_4d_masks(attn):
    """transformers' BertModel must apply our 4-D mask: what a position cannot see cannot change it."""
    model = tiny_bert()
    model.config._attn_implementation = attn
    ids = torch.tensor([[2, 10, 11, EOS, 20, 21, EOS]])
    types = torch.tensor([[0, 0, 0, 0, 1, 1, 1]])
    valid = torch.ones_like(ids)

    def hidden(x, mask):
        return model.bert(input_ids=x, token_type_ids=types, attention_mask=additive_mask(mask, torch.float32)).last_hidden_state

    changed = ids.clone()
    changed[0, 5] = 30  # a later target token
    uni = unilm_mask(types, valid)
    a, b = hidden(ids, uni), hidden(changed, uni)
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-6)  # source and earlier targets unaffected
    assert not torch.allclose(a[0, 5:], b[0, 5:])
    changed_src = ids.clone()
    changed_src[0, 2] = 30  # a source token: every position sees it
    c = hidden(changed_src, uni)
    assert not torch.allclose(a[0, 1], c[0, 1]) and not torch.allclose(a[0, 4], c[0, 4])
    cau = causal_mask(valid)
    d, e = hidden(ids, cau), hidden(changed_src, cau)
    assert torch.allclose(d[0, :2], e[0, :2], atol=1e-6) and not torch.allclose(d[0, 2:], e[0, 2:])


def test_masks_of_the_last_queries_are_the_last_rows():
    types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    valid = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    for q in (1, 2, 6):
        assert torch.equal(unilm_mask(types, valid, queries=q), unilm_mask(types, valid)[:, -q:])
        assert torch.equal(causal_mask(valid, queries=q), causal_mask(valid)[:, -q:])


def test_loss_on_selected_positions_equals_full_forward():
    model = tiny_bert()
    batch = Collator(pad_id=0)([
        Example([2, 10, 11, EOS, 20, 21, EOS], [0, 0, 0, 0, 1, 1, 1], [-100, -100, -100, -100, 20, 21, EOS]),
        Example([2, 12, EOS, 22, EOS], [0, 0, 0, 1, 1], [-100, -100, -100, 22, EOS]),
    ])
    fast = bert_lm_loss(model, batch, "unilm", selected_only=True)
    full = bert_lm_loss(model, batch, "unilm", selected_only=False)
    assert int(fast[1]) == int(full[1]) == 5
    assert torch.allclose(fast[0], full[0], atol=1e-4)


@pytest.mark.parametrize("kind", ["unilm", "causal"])
def test_head_forward_builds_its_mask_and_loss(kind):
    """The heads' forward() with a 2-D padding mask = the masked next-token loss of the training code."""
    model = tiny_bert(cls=HEADS[kind])
    batch = Collator(pad_id=0)([
        Example([2, 10, 11, EOS, 20, 21, EOS], [0, 0, 0, 0, 1, 1, 1], [-100, -100, -100, -100, 20, 21, EOS]),
        Example([2, 12, EOS, 22, EOS], [0, 0, 0, 1, 1], [-100, -100, -100, 22, EOS]),
    ])
    with torch.no_grad():
        total, count = bert_lm_loss(model, batch, kind)
        out = model(**batch)
        explicit = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                         attention_mask=additive_mask(unilm_mask(batch["token_type_ids"], batch["attention_mask"]) if kind == "unilm"
                                                      else causal_mask(batch["attention_mask"]), torch.float32))
    assert float(out.loss) == pytest.approx(float(total / count), abs=1e-5)
    assert torch.allclose(out.logits, explicit.logits, atol=1e-5)


# ------------------------------------------------------------------ search on a hand-made table


class TableDecoder:
    """A fake model: the next-token distribution depends on (prompt id, tokens so far) through a table."""

    def __init__(self, table, vocab):
        self.table, self.vocab = table, vocab

    def _logits(self):
        rows = []
        for key, seq in zip(self.keys, self.seqs):
            probs = self.table.get((key, tuple(seq)), {EOS: 1.0})
            row = torch.full((self.vocab,), -1e9)
            for tok, p in probs.items():
                row[tok] = math.log(p)
            rows.append(row)
        return torch.stack(rows)

    def start(self, prompts):
        self.keys = [p.ids[0] for p in prompts]
        self.seqs = [[] for _ in prompts]
        return self._logits()

    def step(self, tokens):
        self.seqs = [s + [int(t)] for s, t in zip(self.seqs, tokens)]
        return self._logits()

    def select(self, rows):
        self.keys = [self.keys[int(r)] for r in rows]
        self.seqs = [list(self.seqs[int(r)]) for r in rows]


A, B, C = 4, 5, 6
# Prompt 0: greedy takes A (0.6) but every continuation of A is poor; B then EOS is the best sequence (0.4 * 0.9).
# Prompt 1: an early EOS (0.4) is finished first, but the best sequence is longer: C C EOS (0.55 * 0.9 * 0.95).
TABLE = {
    (0, ()): {A: 0.6, B: 0.4},
    (0, (A,)): {EOS: 0.3, A: 0.35, B: 0.35},
    (0, (A, A)): {EOS: 0.5, B: 0.5},
    (0, (A, B)): {EOS: 0.5, A: 0.5},
    (0, (B,)): {EOS: 0.9, A: 0.1},
    (1, ()): {EOS: 0.4, C: 0.55, A: 0.05},
    (1, (C,)): {C: 0.9, EOS: 0.1},
    (1, (C, C)): {EOS: 0.95, A: 0.05},
}


def exhaustive_best(key, max_len, vocab=8):
    best = (-math.inf, None)
    for n in range(max_len + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            if EOS in seq:
                continue
            score, prefix = 0.0, ()
            for tok in (*seq, EOS):
                p = TABLE.get((key, prefix), {EOS: 1.0}).get(tok, 0.0)
                if p == 0:
                    score = -math.inf
                    break
                score += math.log(p)
                prefix = (*prefix, tok)
            best = max(best, (score, list(seq)), key=lambda x: x[0])
    return best


def test_beam_search_finds_the_best_sequence_greedy_misses():
    prompts = [Prompt([0]), Prompt([1])]
    beams = beam_search(TableDecoder(TABLE, 8), prompts, num_beams=3, max_new_tokens=4, eos_id=EOS)
    for key, got in zip((0, 1), beams):
        score, seq = exhaustive_best(key, 4)
        assert got.tokens == seq and got.finished
        assert got.score == pytest.approx(score)
    assert beams[0].tokens == [B] and beams[1].tokens == [C, C]
    greedy_out = greedy(TableDecoder(TABLE, 8), prompts, max_new_tokens=4, eos_id=EOS)
    assert greedy_out[0].tokens[0] == A and greedy_out[0].score < beams[0].score


def test_beam_search_length_penalty_prefers_longer():
    prompts = [Prompt([1])]
    plain = beam_search(TableDecoder(TABLE, 8), prompts, num_beams=2, max_new_tokens=4, eos_id=EOS)[0]
    # log(0.4) = -0.92 for [] (length 1 with EOS) vs log(0.47) = -0.75 for [C, C] (length 3); a negative
    # length penalty multiplies by the length and favours the short one.
    short = beam_search(TableDecoder(TABLE, 8), prompts, num_beams=2, max_new_tokens=4, eos_id=EOS, length_penalty=-1.0)[0]
    assert plain.tokens == [C, C] and short.tokens == []


def test_beam_search_stops_at_max_new_tokens():
    out = beam_search(TableDecoder({(0, ()): {A: 1.0}, (0, (A,)): {A: 1.0}, (0, (A, A)): {A: 1.0}}, 8), [Prompt([0])],
                      num_beams=2, max_new_tokens=3, eos_id=EOS)[0]
    assert out.tokens == [A, A, A] and not out.finished


# ------------------------------------------------------------------ BERT backbone


@pytest.mark.parametrize("kind", ["unilm", "causal"])
def test_beam1_equals_greedy_on_bert(kind):
    model = tiny_bert()
    g = greedy(BertDecoder(model, kind=kind), PROMPTS, max_new_tokens=10, eos_id=EOS)
    b = beam_search(BertDecoder(model, kind=kind), PROMPTS, num_beams=1, max_new_tokens=10, eos_id=EOS)
    assert [x.tokens for x in g] == [x.tokens for x in b]
    assert [x.score for x in g] == pytest.approx([x.score for x in b], abs=1e-4)


@pytest.mark.parametrize("kind", ["unilm", "causal"])
def test_kv_cache_equals_recomputation(kind):
    model = tiny_bert(seed=1)
    cached = BertDecoder(model, kind=kind, use_cache=True)
    plain = BertDecoder(model, kind=kind, use_cache=False)
    a = beam_search(cached, PROMPTS, num_beams=3, max_new_tokens=12, eos_id=EOS)
    b = beam_search(plain, PROMPTS, num_beams=3, max_new_tokens=12, eos_id=EOS)
    assert cached.cached and not plain.cached
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert [x.score for x in a] == pytest.approx([x.score for x in b], abs=1e-3)
    s1 = sample(cached, PROMPTS, max_new_tokens=12, eos_id=EOS, top_k=5, generator=torch.Generator().manual_seed(0))
    s2 = sample(plain, PROMPTS, max_new_tokens=12, eos_id=EOS, top_k=5, generator=torch.Generator().manual_seed(0))
    assert [x.tokens for x in s1] == [x.tokens for x in s2]


def test_unilm_and_causal_prefixes_differ():
    model = tiny_bert(seed=1)
    a = beam_search(BertDecoder(model, kind="unilm"), PROMPTS, num_beams=2, max_new_tokens=6, eos_id=EOS)
    b = beam_search(BertDecoder(model, kind="causal"), PROMPTS, num_beams=2, max_new_tokens=6, eos_id=EOS)
    assert [x.score for x in a] != pytest.approx([x.score for x in b])


def test_batched_beam_search_equals_one_prompt_at_a_time():
    model = tiny_bert(seed=2)
    batched = beam_search(BertDecoder(model, kind="unilm"), PROMPTS, num_beams=3, max_new_tokens=10, eos_id=EOS)
    single = [beam_search(BertDecoder(model, kind="unilm"), [p], num_beams=3, max_new_tokens=10, eos_id=EOS)[0] for p in PROMPTS]
    assert [x.tokens for x in batched] == [x.tokens for x in single]


def test_sampling_is_reproducible_with_a_seed():
    model = tiny_bert(seed=3)

    def run(seed, **kw):
        out = sample(BertDecoder(model, kind="causal"), PROMPTS, max_new_tokens=10, eos_id=EOS,
                     generator=torch.Generator().manual_seed(seed), **kw)
        return [x.tokens for x in out]

    assert run(0, top_k=8, temperature=1.2) == run(0, top_k=8, temperature=1.2)
    assert any(run(s, top_k=8, temperature=1.2) != run(0, top_k=8, temperature=1.2) for s in (1, 2, 3))
    greedy_tokens = [x.tokens for x in greedy(BertDecoder(model, kind="causal"), PROMPTS, max_new_tokens=10, eos_id=EOS)]
    assert run(5, top_k=1) == greedy_tokens  # top-1 sampling is argmax


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reaches 0.7
    assert torch.isfinite(filter_logits(logits, top_p=0.01))[0].tolist() == [True, False, False, False]


# ------------------------------------------------------------------ the heads and transformers' generate()


@pytest.mark.parametrize("kind", ["unilm", "causal"])
@pytest.mark.parametrize("seed", [0, 1])
def test_transformers_generate_gives_our_beam_search_and_greedy(kind, seed):
    """model.generate() on our heads (4-D mask per step, token types, positions, DynamicCache) = our search."""
    model = tiny_bert(seed=seed, cls=HEADS[kind])
    for k in (2, 3, 4):
        ours = beam_search(BertDecoder(model), PROMPTS, num_beams=k, max_new_tokens=12, eos_id=EOS)
        for cache in (True, False):
            ref = transformers_generate(model, PROMPTS, num_beams=k, max_new_tokens=12, eos_id=EOS, use_cache=cache)
            assert [x.tokens for x in ours] == [x.tokens for x in ref]
            assert [x.finished for x in ours] == [x.finished for x in ref]
            assert [x.score for x in ours] == pytest.approx([x.score for x in ref], abs=1e-3)
    ours = greedy(BertDecoder(model), PROMPTS, max_new_tokens=12, eos_id=EOS)
    ref = transformers_generate(model, PROMPTS, max_new_tokens=12, eos_id=EOS)
    assert [x.tokens for x in ours] == [x.tokens for x in ref]
    assert [x.score for x in ours] == pytest.approx([x.score for x in ref], abs=1e-3)


def test_transformers_generate_with_a_length_penalty_gives_ours():
    model = tiny_bert(seed=2, cls=BertUniLM)
    for penalty in (-1.0, 1.0, 2.0):
        ours = beam_search(BertDecoder(model), PROMPTS, num_beams=3, max_new_tokens=10, eos_id=EOS, length_penalty=penalty)
        ref = transformers_generate(model, PROMPTS, num_beams=3, max_new_tokens=10, eos_id=EOS, length_penalty=penalty)
        assert [x.tokens for x in ours] == [x.tokens for x in ref]
        assert [x.score for x in ours] == pytest.approx([x.score for x in ref], abs=1e-3)


def test_transformers_sampling_draws_like_ours_one_prompt_at_a_time():
    """Same temperature / top-k / top-p and the same seed: the same draws (batch 1; batched, generate() also draws for finished rows)."""
    model = tiny_bert(seed=3, cls=BertCausalLM)
    for prompt in PROMPTS:
        for seed in range(3):
            for kw in ({"top_k": 8, "top_p": 0.9, "temperature": 1.3}, {}):
                ours = sample(BertDecoder(model), [prompt], max_new_tokens=12, eos_id=EOS, generator=torch.Generator().manual_seed(seed), **kw)[0]
                ref = transformers_generate(model, [prompt], max_new_tokens=12, eos_id=EOS, do_sample=True, seed=seed, **kw)[0]
                assert ours.tokens == ref.tokens and ours.score == pytest.approx(ref.score, abs=1e-3)


def test_head_checkpoints_stay_standard_bert_mlm(tmp_path):
    """A head saves as a plain BERT MLM checkpoint (AutoModelForMaskedLM loads it); load_model picks the head class."""
    from transformers import AutoConfig, AutoModelForMaskedLM, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    model = tiny_bert(seed=4, cls=BertUniLM)
    model.save_pretrained(str(tmp_path / "head"))
    assert AutoConfig.from_pretrained(str(tmp_path / "head")).model_type == "bert"
    plain = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "head"), use_safetensors=True)
    assert type(plain) is BertForMaskedLM
    for a, b in zip(model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b)
    causal = load_model(tmp_path / "head", "cpu", head="causal")
    assert type(causal) is BertCausalLM and not causal.training
    ids = torch.tensor([[2, 10, 11, EOS]])
    assert torch.allclose(causal(input_ids=ids).logits, tiny_bert(seed=4, cls=BertCausalLM)(input_ids=ids).logits, atol=1e-5)
    with pytest.raises(ValueError, match="head must be one of"):
        load_model(tmp_path / "head", "cpu", head="gpt")
    GPT2LMHeadModel(GPT2Config(vocab_size=48, n_embd=32, n_layer=1, n_head=2, n_positions=64)).save_pretrained(str(tmp_path / "gpt2"))
    with pytest.raises(ValueError, match="'gpt2' checkpoint"):
        load_model(tmp_path / "gpt2", "cpu", head="unilm")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none", "cpu", head="unilm")
