"""What decoding, scoring and training need to know of a loaded model: its end-of-sequence ids, the
id to pad with, and the width of its logits (embeddings are often padded past the tokenizer)."""

from __future__ import annotations

from ..errors import UserError


def stop_token_ids(model, tokenizer) -> set[int]:
    """Every EOS id the tokenizer and the generation config name."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if source is not None:
            ids.update([source] if isinstance(source, int) else source)
    if not ids:
        raise UserError(
            f"{model.name_or_path}: neither the tokenizer nor the generation config names an EOS token"
        )
    return ids


def padding_id(model, tokenizer) -> int:
    """The id to fill padding positions with (they are masked, so any real token would do): the
    tokenizer's pad token, else its EOS token, else the generation config's first EOS id."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return min(stop_token_ids(model, tokenizer))


def logits_width(model) -> int:
    return model.get_output_embeddings().weight.shape[0]
