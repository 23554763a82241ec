"""Teacher-forced scoring: the probability a model gives each token of a trace, batched and KV-cached."""

from __future__ import annotations

import torch

from .cache import CachedBatch


@torch.inference_mode()
def score_tokens(
    model, vocab: int, pad_id: int, prompts: list[list[int]], traces: list[list[int]], chunk: int = 512
) -> list[list[float]]:
    """Teacher-forced probability of every trace token given the prompt and the tokens before it:
    softmax over the first `vocab` logit columns (temperature 1), as the RSD acceptance score is.
    All rows of one call form one batch; long traces go in KV-cached chunks of `chunk` tokens."""
    state = CachedBatch(model, pad_id)
    last = state.append(prompts)[:, -1, :vocab]  # [B, V]: predicts each trace's first token
    probs: list[list[float]] = [[] for _ in traces]
    for start in range(0, max(len(t) for t in traces), chunk):
        pieces = [t[start : start + chunk] for t in traces]
        width = max(len(p) for p in pieces)
        logits = state.append(pieces, keep=width)[..., :vocab]  # [B, W, V]; pieces right-aligned
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            before = torch.cat([last[i : i + 1], logits[i, width - len(piece) : width - 1]])  # [L, V]
            ids = torch.tensor(piece, device=before.device)[:, None]
            probs[i] += before.log_softmax(-1).gather(-1, ids).squeeze(-1).exp().tolist()
            last[i] = logits[i, width - 1]
    return probs
