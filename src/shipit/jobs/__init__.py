"""Async jobs: the durable store of files, batches and async requests, and its worker."""
