"""Model stage: architecture config, the transformer, tokenizer, KV-cache sampling, checkpoints, HF export."""
