"""BERT masked-LM pretraining that scores the vocabulary only where a token is masked.

``BertForMaskedLM`` projects every position to the vocabulary (hidden → V, then the softmax in
the loss), although only ~15% of the positions carry a label. On small models that projection is
most of the step (a 21,128-word vocabulary against a hidden size of 64-256). This model runs the
same encoder, then the same prediction head on the masked positions only, which is the same loss
and the same gradients, in a fraction of the time (``python -m benchmarks bench_pretrain``:
tokens/s against HF ``BertForMaskedLM`` on the same config and batches).

It *is* a ``BertForMaskedLM``: same modules, same weights, same checkpoint layout. Its
``save_pretrained`` records ``BertForMaskedLM`` as the architecture, so what it saves loads
anywhere a standard checkpoint does. Without ``mlm_positions`` (or ``labels``) its forward is the
standard one: inference and fill-mask pipelines see every position.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import BertForMaskedLM
from transformers.modeling_outputs import MaskedLMOutput


class MaskedOnlyBertForMaskedLM(BertForMaskedLM):
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """With ``mlm_positions`` (bool, like ``input_ids``) or ``labels``: logits ``(n_masked, V)`` for
        the positions in row-major order (``labels[mlm_positions]`` lines up with them); the loss, when
        ``labels`` are given, is their mean cross-entropy, as ``BertForMaskedLM`` computes it."""
        if mlm_positions is None and labels is not None:
            mlm_positions = labels != -100
        if mlm_positions is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   position_ids=position_ids, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, position_ids=position_ids,
                           return_dict=True).last_hidden_state
        logits = self.cls(hidden[mlm_positions])
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[mlm_positions].to(logits.device))
        return MaskedLMOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        config = Path(save_directory) / "config.json"
        if config.is_file():  # a standard checkpoint: load it as BertForMaskedLM, with no code of ours
            data = json.loads(config.read_text(encoding="utf-8"))
            data["architectures"] = ["BertForMaskedLM"]
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
