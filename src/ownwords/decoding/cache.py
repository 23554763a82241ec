"""One causal LM's KV cache / attention mask / positions for a batch of rows.

Nothing above this module touches a cache. A row's tokens sit left-padded in a shared [B, L] layout;
appended tokens are right-aligned within each appended block, so a row that gets fewer tokens than
the block (ragged appends, rolled-back drafts) simply has holes: mask 0, no position consumed. Every
real token therefore sees exactly the context it would see alone, at the positions it would have
alone, whatever its batch-mates do.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..errors import UserError


class CachedBatch:
    """One causal LM's running state for B rows: KV cache, mask [B, L] (1 = real token), next positions [B]."""

    def __init__(self, model, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.device = model.device
        self.cache = DynamicCache(config=model.config)
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)  # [B, L]
        self.next_pos = torch.zeros(0, dtype=torch.long, device=self.device)  # [B]
        self.compactions = 0

    def __len__(self) -> int:
        return self.mask.shape[0]

    @torch.inference_mode()
    def append(self, rows: list[list[int]], keep: int = 1) -> torch.Tensor:
        """Append each row's tokens (a fresh batch: its prompts). Returns float32 logits [B, keep, V] at
        the last `keep` positions of the block (a row's own last tokens, as blocks are right-aligned)."""
        fresh = len(self) == 0
        if fresh:
            self.mask = self.mask.new_zeros(len(rows), 0)
            self.next_pos = self.next_pos.new_zeros(len(rows))
        width = max(len(r) for r in rows)
        # [B, width] each row's tokens right-aligned, and 1 where a real token sits
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        block = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (self.next_pos[:, None] + block.cumsum(-1) - 1).clamp(min=0)  # [B, width]
        self.mask = torch.cat([self.mask, block], dim=1)
        out = self.model(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=keep,
            **{cache_argument(self.model): self.cache},
        )
        if fresh:
            self._check_cache()
        self.next_pos = self.next_pos + block.sum(-1)
        return out.logits[:, -keep:].float()

    @torch.inference_mode()
    def select(self, index: torch.Tensor) -> None:
        """Keep only rows `index` [B'] (finished rows free their slot), then drop all-padding columns."""
        index = index.to(self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.next_pos = self.mask[index], self.next_pos[index]
        self._trim_left()

    @torch.inference_mode()
    def extend(self, other: CachedBatch) -> None:
        """Add `other`'s rows after ours (refilling freed slots); the shorter side is left-padded."""
        if len(self) == 0:
            self.cache, self.mask, self.next_pos = other.cache, other.mask, other.next_pos
            return
        length = max(self.mask.shape[1], other.mask.shape[1])
        for a, b in zip(self.cache.layers, other.cache.layers, strict=True):
            a.keys = torch.cat([_left_pad(a.keys, length), _left_pad(b.keys, length)])
            a.values = torch.cat([_left_pad(a.values, length), _left_pad(b.values, length)])
        self.mask = torch.cat([_left_pad(self.mask, length), _left_pad(other.mask, length)])
        self.next_pos = torch.cat([self.next_pos, other.next_pos])

    @torch.inference_mode()
    def rollback(self, counts: list[int]) -> None:
        """Turn each row's last `counts[i]` real tokens into holes (rejected drafts): they stay in the
        cache but are masked out, and the row's next position steps back over them."""
        for i, count in enumerate(counts):
            if count:
                real = self.mask[i].nonzero().squeeze(-1)[-count:]
                self.mask[i, real] = 0
        self.next_pos = self.next_pos - torch.tensor(counts, device=self.device)
        used = self.mask.any(0).nonzero()
        end = int(used[-1]) + 1 if len(used) else 0
        if end < self.mask.shape[1]:  # columns no row uses any more, at the right end
            self.cache.crop(end - self.mask.shape[1])
            self.mask = self.mask[:, :end]
        longest = int(self.mask.sum(1).max())
        if self.mask.shape[1] > longest + max(32, longest // 2):  # over a third of the columns are holes
            self._compact()

    def _compact(self) -> None:
        """Drop the holes: gather each row's real tokens into a fresh left-padded layout."""
        lengths = self.mask.sum(1)  # [B]
        width = int(lengths.max())
        index = torch.zeros(len(self), width, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(index)
        for i, n in enumerate(lengths.tolist()):
            index[i, width - n :] = self.mask[i].nonzero().squeeze(-1)
            mask[i, width - n :] = 1
        for layer in self.cache.layers:
            gather = index[:, None, :, None].expand(-1, layer.keys.shape[1], -1, layer.keys.shape[3])
            layer.keys, layer.values = layer.keys.gather(2, gather), layer.values.gather(2, gather)
        self.mask = mask
        self.compactions += 1

    def _trim_left(self) -> None:
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        if start:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self.mask = self.mask[:, start:]

    def _check_cache(self) -> None:
        odd = {type(layer).__name__ for layer in self.cache.layers if type(layer) is not DynamicLayer}
        if odd:
            raise UserError(
                f"{self.model.name_or_path}: cache layers of type {sorted(odd)} (e.g. sliding-window attention) "
                "are not supported by the batched engine, which edits full-attention caches row by row"
            )


def cache_argument(model) -> str:
    """The forward's name for the KV cache: `cache` since transformers 5.24 (`past_key_values` is
    deprecated there, to be removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _left_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """Pad the sequence axis (dim 1 of a mask [B, L], dim 2 of keys [B, H, L, D]) on the left to `length`."""
    axis = 1 if x.dim() == 2 else 2
    missing = length - x.shape[axis]
    if missing == 0:
        return x
    pad = [0, 0] * (x.dim() - 1 - axis) + [missing, 0]
    return F.pad(x, pad)
