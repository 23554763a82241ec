"""Data: question sets and chat prompts, the trace store (all SQL), answer checking, the benchmark registry."""
