"""The shape of a tiny model (torch-free, so that configs can name one without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TinySpec:
    """Architecture and size of one tiny model."""

    model_type: str  # any transformers causal-LM model type: "qwen3", "llama", ...
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    logit_scale: float = 3.0  # std of the random logits: peaked enough that some tokens pass p_th


# ~25M parameters and ~1M parameters: the standard pair of the benchmarks (defined here, once).
TEACHER = TinySpec("qwen3", 512, 7, 8, 4, 1664)
STUDENT = TinySpec("llama", 128, 4, 4, 2, 384)
