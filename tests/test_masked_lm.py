"""Masked-only MLM scoring (zhnlp.models.masked_lm): same loss, same gradients, a standard checkpoint."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

from zhnlp.models.masked_lm import MaskedOnlyBertForMaskedLM
from zhnlp.train.mlm import argmax_logits, masked_lm_loss

CONFIG = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=32,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # dropout would differ between the two passes


def _pair():
    torch.manual_seed(0)
    dense = BertForMaskedLM(BertConfig(**CONFIG))
    sparse = MaskedOnlyBertForMaskedLM(BertConfig(**CONFIG))
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, CONFIG["vocab_size"], (4, 24), generator=g)
    attention = torch.ones_like(ids)
    attention[2, 18:] = 0
    labels = torch.full_like(ids, -100)
    picked = torch.rand(ids.shape, generator=g) < 0.15
    picked[0, 3] = True
    labels[picked & attention.bool()] = ids[picked & attention.bool()]
    return ids, attention, labels


def test_masked_only_loss_and_gradients_equal_the_full_projection():
    dense, sparse = _pair()
    ids, attention, labels = _batch()
    n_items = int((labels != -100).sum())
    loss_dense = masked_lm_loss(dense(input_ids=ids, attention_mask=attention), labels, n_items)
    out = sparse(input_ids=ids, attention_mask=attention, mlm_positions=labels != -100)
    assert out.logits.shape == (n_items, CONFIG["vocab_size"])
    loss_sparse = masked_lm_loss(out, labels, n_items)
    torch.testing.assert_close(loss_sparse, loss_dense, rtol=1e-6, atol=1e-6)
    loss_dense.backward()
    loss_sparse.backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)
    # given labels, the model's own loss is BertForMaskedLM's mean cross-entropy
    torch.testing.assert_close(sparse(input_ids=ids, attention_mask=attention, labels=labels).loss,
                               dense(input_ids=ids, attention_mask=attention, labels=labels).loss, rtol=1e-6, atol=1e-6)


def test_without_positions_it_scores_every_position_and_predictions_keep_the_label_layout():
    dense, sparse = _pair()
    ids, attention, labels = _batch()
    full = sparse(input_ids=ids, attention_mask=attention).logits
    torch.testing.assert_close(full, dense(input_ids=ids, attention_mask=attention).logits)
    picked = sparse(input_ids=ids, attention_mask=attention, mlm_positions=labels != -100).logits
    predicted = argmax_logits(picked, labels)
    assert predicted.shape == labels.shape
    assert (predicted[labels == -100] == -100).all()
    assert torch.equal(predicted[labels != -100], full.argmax(-1)[labels != -100])


def test_it_saves_a_standard_bert_for_masked_lm_checkpoint(tmp_path):
    _, sparse = _pair()
    sparse.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path, use_safetensors=True, trust_remote_code=False)
    assert type(loaded) is BertForMaskedLM
    for (name, a), (_, b) in zip(sparse.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
