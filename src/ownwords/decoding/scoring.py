"""Teacher-forced scoring: the probability a model gives each token of a trace, batched and KV-cached."""

from __future__ import annotations

import torch

from .slots import SlotCache


@torch.inference_mode()
def score_tokens(
    model, vocab: int, pad_id: int, prompts: list[list[int]], traces: list[list[int]], chunk: int = 512
) -> list[list[float]]:
    """Teacher-forced probability of every trace token given the prompt and the tokens before it:
    softmax over the first `vocab` logit columns (temperature 1), as the RSD acceptance score is.
    All rows of one call form one batch, each in its own slot; long traces go in chunks of `chunk`."""
    cache = SlotCache(model, len(prompts), max(len(p) + len(t) for p, t in zip(prompts, traces, strict=True)), pad_id)
    slots = list(range(len(prompts)))
    last = cache.append(slots, prompts)[:, -1, :vocab]  # [B, V]: predicts each trace's first token
    probs: list[list[float]] = [[] for _ in traces]
    for start in range(0, max(len(t) for t in traces), chunk):
        pieces = [t[start : start + chunk] for t in traces]
        active = [i for i, piece in enumerate(pieces) if piece]
        width = max(len(pieces[i]) for i in active)
        logits = cache.append(active, [pieces[i] for i in active], keep=width)[..., :vocab]  # [A, W, V]; right-aligned
        for j, i in enumerate(active):
            piece = pieces[i]
            before = torch.cat([last[i : i + 1], logits[j, width - len(piece) : width - 1]])  # [L, V]
            ids = torch.tensor(piece, device=before.device)[:, None]
            probs[i] += before.log_softmax(-1).gather(-1, ids).squeeze(-1).exp().tolist()
            last[i] = logits[j, width - 1]
    return probs
