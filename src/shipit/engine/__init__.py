"""Embedded CPU engine: model, tokenizer, paged KV cache, scheduler, LoRA, executors."""
