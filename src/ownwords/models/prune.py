"""A student made from its teacher by removing decoder layers, as NVIDIA's Minitron students are made
before distillation: the same family, vocabulary and tokenizer (so RSD shares every token), weaker."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError


def layers_to_keep(total: int, spec: str) -> list[int]:
    """`spec`: a number n (n layers evenly spaced, the first and the last kept) or indices and ranges
    ("0-9,20,25-29")."""
    try:
        if spec.isdigit():
            n = int(spec)
            if not 1 <= n <= total:
                raise ValueError
            return sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(n)}) if n > 1 else [0]
        keep: set[int] = set()
        for part in spec.split(","):
            first, _, last = part.partition("-")
            keep.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise UserError(f"keep {spec!r}: expected a number of layers in [1, {total}], or indices like 0-9,20") from None
    if not keep or min(keep) < 0 or max(keep) >= total:
        raise UserError(f"keep {spec!r}: the model has layers 0 to {total - 1}")
    return sorted(keep)


@torch.no_grad()
def prune_layers(model: str, out: str, keep: str) -> Path:
    """Write to `out` the model `model` with only the decoder layers `keep` selects (layers_to_keep),
    renumbered in order, with its tokenizer and generation config. Returns `out`."""
    from .loading import load_model

    lm, tokenizer = load_model(model, "cpu", "float32")
    decoder = lm.get_decoder()
    kept = layers_to_keep(len(decoder.layers), keep)
    decoder.layers = torch.nn.ModuleList(decoder.layers[i] for i in kept)
    for position, layer in enumerate(decoder.layers):
        for module in layer.modules():  # attention finds its cache by its layer index
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
    config = lm.config.get_text_config()
    config.num_hidden_layers = len(kept)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    path = Path(out)
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
