"""zhnlp.generation: masks, beam search, sampling, the KV cache, and the HF causal / seq2seq backbones."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from zhnlp.generation import (
    Collator,
    Example,
    Prompt,
    additive_mask,
    bert_lm_loss,
    beam_search,
    causal_mask,
    filter_logits,
    greedy,
    load_model,
    make_decoder,
    sample,
    unilm_mask,
)

EOS = 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: intra-op threads only add overhead, and spin badly on a shared, loaded CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_bert(seed: int = 0, vocab: int = 40, init: float = 0.5):
    """A random BertForMaskedLM whose outputs depend visibly on what each position sees (large init)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, initializer_range=init, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return BertForMaskedLM(config).eval()


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


@pytest.mark.parametrize("prefix", ["bidirectional", "causal"])
def test_beam1_equals_greedy_on_bert(prefix):
    model = tiny_bert()
    g = greedy(make_decoder(model, prefix=prefix), PROMPTS, max_new_tokens=10, eos_id=EOS)
    b = beam_search(make_decoder(model, prefix=prefix), PROMPTS, num_beams=1, max_new_tokens=10, eos_id=EOS)
    assert [x.tokens for x in g] == [x.tokens for x in b]
    assert [x.score for x in g] == pytest.approx([x.score for x in b], abs=1e-4)


@pytest.mark.parametrize("prefix", ["bidirectional", "causal"])
def test_kv_cache_equals_recomputation(prefix):
    model = tiny_bert(seed=1)
    cached = make_decoder(model, prefix=prefix, use_cache=True)
    plain = make_decoder(model, prefix=prefix, use_cache=False)
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
    a = beam_search(make_decoder(model, prefix="bidirectional"), PROMPTS, num_beams=2, max_new_tokens=6, eos_id=EOS)
    b = beam_search(make_decoder(model, prefix="causal"), PROMPTS, num_beams=2, max_new_tokens=6, eos_id=EOS)
    assert [x.score for x in a] != pytest.approx([x.score for x in b])


def test_batched_beam_search_equals_one_prompt_at_a_time():
    model = tiny_bert(seed=2)
    batched = beam_search(make_decoder(model), PROMPTS, num_beams=3, max_new_tokens=10, eos_id=EOS)
    single = [beam_search(make_decoder(model), [p], num_beams=3, max_new_tokens=10, eos_id=EOS)[0] for p in PROMPTS]
    assert [x.tokens for x in batched] == [x.tokens for x in single]


def test_sampling_is_reproducible_with_a_seed():
    model = tiny_bert(seed=3)

    def run(seed, **kw):
        out = sample(make_decoder(model, prefix="causal"), PROMPTS, max_new_tokens=10, eos_id=EOS,
                     generator=torch.Generator().manual_seed(seed), **kw)
        return [x.tokens for x in out]

    assert run(0, top_k=8, temperature=1.2) == run(0, top_k=8, temperature=1.2)
    assert any(run(s, top_k=8, temperature=1.2) != run(0, top_k=8, temperature=1.2) for s in (1, 2, 3))
    greedy_tokens = [x.tokens for x in greedy(make_decoder(model, prefix="causal"), PROMPTS, max_new_tokens=10, eos_id=EOS)]
    assert run(5, top_k=1) == greedy_tokens  # top-1 sampling is argmax


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    assert torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reaches 0.7
    assert torch.isfinite(filter_logits(logits, top_p=0.01))[0].tolist() == [True, False, False, False]


# ------------------------------------------------------------------ HF causal LM and encoder-decoder checkpoints


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    """Tiny random GPT-2, T5 and BART saved (safetensors) and loaded back from local paths."""
    from transformers import BartConfig, BartForConditionalGeneration, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    models = {
        "gpt2": GPT2LMHeadModel(GPT2Config(vocab_size=48, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                           bos_token_id=2, eos_token_id=EOS, pad_token_id=0, initializer_range=0.3)),
        "t5": T5ForConditionalGeneration(T5Config(vocab_size=48, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                                  decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS, initializer_factor=3.0)),
        "bart": BartForConditionalGeneration(BartConfig(vocab_size=48, d_model=32, encoder_layers=1, decoder_layers=1,
                                                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                                        decoder_ffn_dim=64, max_position_embeddings=64, pad_token_id=0,
                                                        bos_token_id=2, eos_token_id=EOS, decoder_start_token_id=EOS,
                                                        forced_eos_token_id=None, init_std=0.3)),
    }
    for name, model in models.items():
        model.save_pretrained(str(root / name))
    return {name: load_model(root / name, "cpu") for name in models}


HF_PROMPTS = [Prompt([5, 6, 7, 8]), Prompt([9, 10]), Prompt([11, 12, 13])]


@pytest.mark.parametrize("name", ["gpt2", "t5", "bart"])
def test_hf_checkpoints_generate_through_every_search(name, hf_checkpoints):
    model = hf_checkpoints[name]
    cached = beam_search(make_decoder(model), HF_PROMPTS, num_beams=3, max_new_tokens=8, eos_id=EOS)
    plain = beam_search(make_decoder(model, use_cache=False), HF_PROMPTS, num_beams=3, max_new_tokens=8, eos_id=EOS)
    assert [x.tokens for x in cached] == [x.tokens for x in plain]
    assert all(len(x.tokens) <= 8 for x in cached)
    g = greedy(make_decoder(model), HF_PROMPTS, max_new_tokens=8, eos_id=EOS)
    b1 = beam_search(make_decoder(model), HF_PROMPTS, num_beams=1, max_new_tokens=8, eos_id=EOS)
    assert [x.tokens for x in g] == [x.tokens for x in b1]
    s = sample(make_decoder(model), HF_PROMPTS, max_new_tokens=8, eos_id=EOS, top_p=0.9, generator=torch.Generator().manual_seed(0))
    assert len(s) == 3


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_greedy_matches_transformers_generate(name, hf_checkpoints):
    model = hf_checkpoints[name]
    for prompt in HF_PROMPTS:
        ours = greedy(make_decoder(model), [prompt], max_new_tokens=8, eos_id=EOS)[0]
        ref = model.generate(torch.tensor([prompt.ids]), max_new_tokens=8, do_sample=False, num_beams=1, eos_token_id=EOS, pad_token_id=0)
        ref = ref[0, len(prompt.ids):] if name == "gpt2" else ref[0, 1:]
        ref = ref.tolist()
        expected = ref[: ref.index(EOS)] if EOS in ref else ref
        assert ours.tokens == expected


# ------------------------------------------------------------------ training: resume


def test_train_head_resumes_mid_run_and_recognises_a_finished_run(tmp_path):
    import copy
    import shutil

    from zhnlp.generation import TrainConfig, train_head

    torch.manual_seed(0)
    examples = []
    for _ in range(24):
        src = torch.randint(5, 40, (int(torch.randint(2, 6, ())),)).tolist()
        tgt = torch.randint(5, 40, (int(torch.randint(1, 4, ())),)).tolist() + [EOS]
        examples.append(Example([2, *src, EOS, *tgt], [0] * (len(src) + 2) + [1] * len(tgt), [-100] * (len(src) + 2) + tgt))
    base = tiny_bert(init=0.02)
    config = TrainConfig(per_device_train_batch_size=4, max_steps=8, save_steps=4, logging_steps=2, learning_rate=3e-3, seed=0)
    kwargs = dict(mask_kind="unilm", pad_id=0, config=config, checkpoints_dir=tmp_path / "ck", components={"run": 1})

    full_model = copy.deepcopy(base)
    full = train_head(full_model, examples, **kwargs)
    assert full.steps == 8 and full.resumed_from is None and [r["step"] for r in full.history] == [2, 4, 6, 8]

    shutil.rmtree(tmp_path / "ck" / "checkpoint-8")  # as if killed after step 4's checkpoint
    resumed_model = copy.deepcopy(base)
    resumed = train_head(resumed_model, examples, **kwargs)
    assert resumed.resumed_from.endswith("checkpoint-4") and resumed.steps == 8
    assert [r["loss"] for r in resumed.history] == pytest.approx([r["loss"] for r in full.history], rel=1e-4)
    for a, b in zip(full_model.parameters(), resumed_model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)

    done_model = copy.deepcopy(base)
    done = train_head(done_model, examples, **kwargs)  # checkpoint-8 is the end: nothing to train
    assert done.resumed_from.endswith("checkpoint-8") and done.steps == 8 and "complete" in done.resume_reason
    for a, b in zip(resumed_model.parameters(), done_model.parameters()):
        assert torch.allclose(a, b)

    fresh = train_head(copy.deepcopy(base), examples, **(kwargs | {"components": {"run": 2}}))
    assert fresh.resumed_from is None and fresh.resume_reason.startswith("fresh start")
