"""Text to token ids: tokenizers (char, WoBERT word, pretrained), their training, and token-id shards."""
