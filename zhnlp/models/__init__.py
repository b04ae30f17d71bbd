"""The generation heads and their decoding: ``unilm`` (BERT heads and masks), ``decoding`` (prompts, KV-cached decoder, loading), ``search`` (beam search, sampling)."""
