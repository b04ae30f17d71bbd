"""Multiple choice (C3) and idiom cloze (CHID) with a transformer encoder: one logit per option, softmax over options.

Both kinds score each (context, option) pair from the [CLS] vector with
``transformers.AutoModelForMultipleChoice`` and take the softmax over the row's options, as the
published CLUE baselines do (techniques §5). :class:`MultipleChoiceHead` is one class for both;
the kind is fixed at construction:

- ``multiple_choice`` (C3 rows: passage, question, choices, label_id): each choice is encoded as
  ``[CLS] question choice [SEP] passage [SEP]``; the passage is the part truncated (from its end),
  so the question and choice always stay whole (they keep at least half the length).
- ``idiom_cloze`` (CHID rows: text with this blank as ``#idiom#`` and the passage's other blanks
  as ``#other#``, candidates, group): ``[CLS] idiom [SEP] context [SEP]``, where the target blank
  is one marker token (``[unused1]``, added as a special token with a new embedding row when the
  vocab lacks it) and every other blank is 4 mask tokens. The context is a window of tokens
  centred on the blank, so the blank is never truncated away. The markers are put in as token
  ids, never as text: the tokenizer encodes a literal ``[MASK]`` in data as characters.

Rows with fewer options than the batch's widest row get dummy options (:class:`ChoiceCollator`)
whose logits are set to -1e4 before the softmax and the loss, so a 2-choice question stays a
2-way decision. Prediction is the argmax; for idiom cloze the blanks of one passage (rows sharing
``group``) get distinct candidates by :func:`assign_blanks` (the Hungarian assignment on summed
log-probabilities, ``scipy.optimize.linear_sum_assignment``; credited with about +6% on CHID).

Training is :func:`zhnlp.train.epochs.fit_by_epoch` with the dev score computed from
:meth:`MultipleChoiceHead.predict` (so the assignment counts when picking the epoch).
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import copy
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zhnlp.tasks.floors import IDIOM_BLANK, OTHER_BLANK
from zhnlp.train.epochs import FitSummary

KINDS = ("multiple_choice", "idiom_cloze")
BLANK_TOKEN = "[unused1]"  # the target blank (CLUE CHID baseline); added as a special token when the vocab lacks it
OTHER_MASKS = 4  # mask tokens for each other blank of the passage
MASKED_LOGIT = -1e4  # the logit of a dummy option (representable in bf16)
_BLANKS = re.compile(f"({re.escape(IDIOM_BLANK)}|{re.escape(OTHER_BLANK)})")


# ---------------------------------------------------------------------------------------------
# the one-to-one assignment (no torch)


def assign_blanks(
    probs: Sequence[np.ndarray], groups: Sequence[str | None], candidates: Sequence[Sequence[str]] | None = None
) -> list[int]:
    """Per row, the chosen option: the argmax, except that rows sharing a group (the blanks of one
    passage) get distinct candidates maximising the summed log-probabilities.

    A group with more blanks than candidates, or whose rows have different option counts (or, when
    ``candidates`` is given, different candidate lists), keeps the per-row argmax.
    """
    from scipy.optimize import linear_sum_assignment

    pred = [int(np.argmax(p)) if len(p) else -1 for p in probs]
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        if group is not None:
            members[str(group)].append(i)
    for rows in members.values():
        width = len(probs[rows[0]])
        if len(rows) < 2 or len(rows) > width or any(len(probs[i]) != width for i in rows):
            continue
        if candidates is not None and any(list(candidates[i]) != list(candidates[rows[0]]) for i in rows):
            continue
        log_p = np.log(np.clip(np.vstack([np.asarray(probs[i], dtype=np.float64) for i in rows]), 1e-300, None))
        blanks, chosen = linear_sum_assignment(log_p, maximize=True)
        for b, c in zip(blanks, chosen):
            pred[rows[b]] = int(c)
    return pred


# ---------------------------------------------------------------------------------------------
# batching


class ChoiceCollator:
    """Pads a list of features (``input_ids`` etc.: one list of token ids per option) to the batch's
    most options and longest sequence; adds ``choice_mask`` (1 = a real option) and int ``labels``.

    A dummy option is one pad token with attention on it (a fully masked sequence can give NaN in
    attention); its logit is masked anyway.
    """

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict:
        import torch

        n_choices = max(len(f["input_ids"]) for f in features)
        length = max(len(ids) for f in features for ids in f["input_ids"])
        shape = (len(features), n_choices, length)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        attention = torch.zeros(shape, dtype=torch.long)
        attention[:, :, 0] = 1
        choice_mask = torch.zeros(shape[:2], dtype=torch.long)
        for b, f in enumerate(features):
            for c, seq in enumerate(f["input_ids"]):
                ids[b, c, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                attention[b, c, : len(seq)] = 1
            choice_mask[b, : len(f["input_ids"])] = 1
        out = {"input_ids": ids, "attention_mask": attention, "choice_mask": choice_mask}
        if all("token_type_ids" in f for f in features):
            out["token_type_ids"] = torch.zeros(shape, dtype=torch.long)  # segment ids all 0 (CLUE baselines)
        if all(f.get("labels") is not None for f in features):
            out["labels"] = torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)
        return out


def _masked(model):
    """``model`` (an AutoModelForMultipleChoice) behind a module that masks dummy options' logits
    before the cross-entropy, for the Trainer (which calls ``forward(**batch)``)."""
    import torch
    from transformers.modeling_outputs import MultipleChoiceModelOutput

    class MaskedChoiceModel(torch.nn.Module):
        main_input_name = "input_ids"

        def __init__(self, inner):
            super().__init__()
            self.model = inner
            self.config = inner.config

        def forward(self, input_ids, attention_mask=None, token_type_ids=None, choice_mask=None, labels=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            if choice_mask is not None:
                logits = logits.masked_fill(choice_mask == 0, MASKED_LOGIT)
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits.float(), labels)
            return MultipleChoiceModelOutput(loss=loss, logits=logits)

    return MaskedChoiceModel(model)


# ---------------------------------------------------------------------------------------------
# the head


class MultipleChoiceHead:
    """C3 or CHID over a local backbone directory. Build with :meth:`from_pretrained`."""

    def __init__(self, model, tokenizer, kind: str = "multiple_choice", max_seq_len: int = 128):
        if kind not in KINDS:
            raise ValueError(f"MultipleChoiceHead kind must be one of {', '.join(KINDS)}; got {kind!r}")
        self.model = model
        self.tokenizer = tokenizer  # a zhnlp.text.tokenization.ZhTokenizer
        self.kind = kind
        self.max_seq_len = max_seq_len
        self.source_dir: Path | None = None
        self._template = self._pair_template()

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        *,
        kind: str = "multiple_choice",
        labels: Sequence[str] = (),
        seed: int = 42,
        max_seq_len: int = 128,
    ) -> "MultipleChoiceHead":
        """Any local BERT-style checkpoint with a new one-logit choice head (``labels`` is unused).

        The folder is resolved by :func:`zhnlp.models.checkpoint.inspect_checkpoint`; the seed is set
        first, so the new head is reproducible. For ``idiom_cloze`` the blank marker is added to the
        vocab (and the embeddings grown) when missing.
        """
        from transformers import AutoModelForMultipleChoice, set_seed

        from zhnlp.models.checkpoint import inspect_checkpoint

        if kind not in KINDS:
            raise ValueError(f"MultipleChoiceHead kind must be one of {', '.join(KINDS)}; got {kind!r}")
        model_dir = Path(model_dir)
        checkpoint = inspect_checkpoint(model_dir)
        tokenizer = checkpoint.load_tokenizer()
        set_seed(seed)
        config = copy.deepcopy(checkpoint.config)
        config.num_labels = 1
        model = AutoModelForMultipleChoice.from_pretrained(
            str(model_dir), config=config, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        head = cls(model, tokenizer, kind=kind, max_seq_len=max_seq_len)
        if kind == "idiom_cloze":
            head.add_blank_token()
        head.source_dir = model_dir
        return head

    # -- encoding

    def add_blank_token(self) -> bool:
        """Make :data:`BLANK_TOKEN` one vocab token: add it as a special token (so a literal
        ``[unused1]`` in text stays characters) and grow the embeddings. True if it was added."""
        from tokenizers import AddedToken

        hf = self.tokenizer.hf
        if BLANK_TOKEN in hf.get_vocab():
            return False
        hf.add_tokens([AddedToken(BLANK_TOKEN, special=True, normalized=False)])
        self.model.resize_token_embeddings(len(hf))
        return True

    def _pair_template(self) -> tuple[list[int], list[int], list[int]]:
        """The special ids before, between and after the two texts of a pair (BERT: [CLS], [SEP], [SEP])."""
        enc = self.tokenizer.backend.encode("a", "b", add_special_tokens=True)
        seq = enc.sequence_ids
        first = [i for i, s in enumerate(seq) if s == 0]
        second = [i for i, s in enumerate(seq) if s == 1]
        ids = list(enc.ids)
        return ids[: first[0]], ids[first[-1] + 1 : second[0]], ids[second[-1] + 1 :]

    @property
    def limit(self) -> int:
        """Tokens per (context, option) sequence: ``max_seq_len``, capped by the model's positions."""
        return min(self.max_seq_len, getattr(self.model.config, "max_position_embeddings", None) or self.max_seq_len)

    def _pair(self, a: list[int], b: list[int]) -> list[int]:
        pre, mid, post = self._template
        return pre + a + mid + b + post

    def _budget(self) -> int:
        return self.limit - sum(map(len, self._template))

    def _encode_c3(self, row: Mapping[str, Any]) -> list[list[int]]:
        choices = [str(c) for c in row["choices"]]
        texts = [f"{row['question']} {c}" for c in choices]
        *firsts, passage = self.tokenizer.encode_batch([*texts, str(row["passage"])], add_special_tokens=False)
        budget = self._budget()
        out = []
        for a in firsts:
            a = a[: max(budget // 2, budget - len(passage))]  # the question and choice keep at least half
            out.append(self._pair(a, passage[: max(budget - len(a), 0)]))
        return out

    def _context_ids(self, row: Mapping[str, Any]) -> tuple[list[int], int]:
        """The context token ids with the blank marker (and 4 masks per other blank), and the marker's position."""
        parts = _BLANKS.split(str(row["text"]))
        if parts.count(IDIOM_BLANK) != 1:
            raise ValueError(f"idiom_cloze row {row.get('id')!r}: the text must hold exactly one {IDIOM_BLANK}; found {parts.count(IDIOM_BLANK)}")
        texts = [p for p in parts if p and p not in (IDIOM_BLANK, OTHER_BLANK)]
        encoded = iter(self.tokenizer.encode_batch(texts, add_special_tokens=False))
        blank_id = self.tokenizer.hf.convert_tokens_to_ids(BLANK_TOKEN)
        mask_id = self.tokenizer.mask_id if self.tokenizer.mask_id is not None else self.tokenizer.unk_id
        ids: list[int] = []
        at = -1
        for part in parts:
            if part == IDIOM_BLANK:
                at = len(ids)
                ids.append(blank_id)
            elif part == OTHER_BLANK:
                ids.extend([mask_id] * OTHER_MASKS)
            elif part:
                ids.extend(next(encoded))
        return ids, at

    def _encode_chid(self, row: Mapping[str, Any]) -> list[list[int]]:
        context, at = self._context_ids(row)
        idioms = self.tokenizer.encode_batch([str(c) for c in row["candidates"]], add_special_tokens=False)
        budget = self._budget()
        out = []
        for idiom in idioms:
            idiom = idiom[: max(budget // 4, 1)]
            room = max(budget - len(idiom), 1)
            start = max(0, min(at - room // 2, len(context) - room))  # a window centred on the blank
            out.append(self._pair(idiom, context[start : start + room]))
        return out

    def encode(self, rows: Sequence[Mapping[str, Any]], with_labels: bool = True) -> list[dict]:
        """Per row: ``input_ids`` (one token list per option), ``token_type_ids`` (all 0) and ``labels``."""
        segments = "token_type_ids" in getattr(self.tokenizer.hf, "model_input_names", ())
        items: list[dict] = []
        for row in rows:
            ids = self._encode_c3(row) if self.kind == "multiple_choice" else self._encode_chid(row)
            if not ids:
                raise ValueError(f"{self.kind} row {row.get('id')!r}: no options")
            item: dict[str, Any] = {"input_ids": ids}
            if segments:
                item["token_type_ids"] = [[0] * len(s) for s in ids]
            if with_labels and row.get("label_id") is not None:
                item["labels"] = int(row["label_id"])
            items.append(item)
        return items

    def collator(self) -> ChoiceCollator:
        return ChoiceCollator(self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0)

    # -- training

    def fit(
        self,
        train_rows: Sequence[Mapping[str, Any]],
        dev_rows: Sequence[Mapping[str, Any]],
        cfg,
        *,
        score_fn: Callable[[Sequence[Mapping[str, Any]], list[int]], Mapping[str, float]],
        metric: str = "accuracy",
        log_fn: Callable[[dict[str, float], int], None] | None = None,
        work_dir: str | Path | None = None,
    ) -> FitSummary:
        """Train on ``train_rows``, score :meth:`predict` on ``dev_rows`` with ``score_fn`` each epoch,
        keep the epoch with the best ``metric``. ``cfg``: a :class:`zhnlp.tasks.classification.ClassifierTraining`."""
        from zhnlp.train.epochs import fit_by_epoch

        unlabelled = [r.get("id") for r in train_rows if r.get("label_id") is None]
        if unlabelled:
            raise ValueError(f"{self.kind} training rows need label_id; {len(unlabelled)} have none (first: {unlabelled[0]!r})")
        self.max_seq_len = cfg.max_seq_len
        wrapped, summary = fit_by_epoch(
            _masked(self.model),
            train_dataset=self.encode(train_rows),
            collator=self.collator(),
            tokenizer=self.tokenizer.hf,
            cfg=cfg,
            metric=metric,
            evaluate_fn=lambda model: score_fn(dev_rows, self.predict(dev_rows)),
            early_stopping_patience=cfg.early_stopping_patience,
            full_determinism=cfg.full_determinism,
            log_fn=log_fn,
            work_dir=work_dir,
        )
        self.model = wrapped.model
        return summary

    # -- inference

    def predict_proba(self, rows: Sequence[Mapping[str, Any]], batch_size: int = 32) -> list[np.ndarray]:
        """Per row, the float64 probabilities of its options (softmax over its own options only)."""
        import torch

        features = self.encode(rows, with_labels=False)
        collate = self.collator()
        model = _masked(self.model)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(features), batch_size):
                chunk = features[start : start + batch_size]
                batch = {k: v.to(device) for k, v in collate(chunk).items()}
                probs = torch.softmax(model(**batch).logits.double(), dim=-1).cpu().numpy()
                out.extend(p[: len(f["input_ids"])] for p, f in zip(probs, chunk))
        self.model.train(was_training)
        return out

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Per row, the chosen option's index (idiom cloze: one-to-one within each ``group``)."""
        probs = self.predict_proba(rows)
        if self.kind == "idiom_cloze":
            return assign_blanks(probs, [r.get("group") for r in rows], [r["candidates"] for r in rows])
        return [int(np.argmax(p)) for p in probs]

    def save(self, out_dir: str | Path) -> Path:
        """``save_pretrained`` (safetensors) of the model, and the tokenizer (with any added blank marker)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save(out)
        return out
