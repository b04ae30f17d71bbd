"""Training infrastructure shared by pretraining and every head.

- :mod:`zhnlp.train.arguments`: the Trainer keys every params section shares
  (:class:`~zhnlp.train.arguments.TrainingSettings`, strict) and the one params -> ``TrainingArguments`` path.
- :mod:`zhnlp.train.checkpoints`: ``checkpoint-N`` folders: which are complete and intact, and
  loading a finished one.
- :mod:`zhnlp.train.resume`: the run signature, the resume-or-restart decision, and
  :func:`~zhnlp.train.resume.resume_or_train`.
- :mod:`zhnlp.train.callbacks`: throughput, the training log, the loss curve.
- :mod:`zhnlp.train.mlm`: masked-LM data (encoded shards, shard-window sampler, whole-word masking), loss, accuracy.
- :mod:`zhnlp.train.distributed`: torchrun rank and world size; workers that die with their launcher.
- :mod:`zhnlp.train.heads`: fine-tuning a BERT generation head (UniLM / causal) with all of the above.
- :mod:`zhnlp.train.epochs`: finetuning by epochs, the best dev epoch kept (every CLUE head).
"""
