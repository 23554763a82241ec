"""Decoding: the batched lock-step engine, its KV-cache layer, per-token records, seeds, teacher-forced scoring and budget forcing. Requests in, traces out."""
