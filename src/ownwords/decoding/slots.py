"""Each row's KV cache in a slot of its own, allocated once and written in place (DESIGN §3).

For S slots with room for L tokens each, every attention layer of a model holds keys and values
[S, H_kv, L, D]: one allocation per model, whose size is known (and checked against the device's
free memory) before any work. A forward appends a block of tokens to some slots: the new keys and
values are written at each row's next positions (one index_put per layer: no concatenation), and
each row's queries attend to its own prefix only -- views of its slot; contiguous slots of similar
length share one attention call, the rest of the group's width masked. A finished row frees its
slot for the next request, a rolled-back draft moves its row's length back: nothing is ever copied
between slots, and a row sees exactly the context, at exactly the positions, it would see alone.

The models run their own layers; only their attention is ours (registered with transformers'
AttentionInterface and switched on for the forwards made here), so any causal LM whose attention
goes through that interface works, with full attention in every layer.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from ..errors import UserError

ATTENTION = "ownwords_slots"
SLACK = 1.25  # a group's padded key positions stay under this many times its live ones


@dataclass
class Group:
    """Rows [r0, r1) of a block, in slots [s0, s0 + r1 - r0): their keys are keys[s0:s1, :, :length],
    their queries the block's last `width` columns (their longest row's)."""

    r0: int
    r1: int
    s0: int
    length: int
    width: int
    mask: torch.Tensor | None  # [g, 1, width, length] bool (True: attend); None: all keys, or causal
    causal: bool = False  # fresh slots, equal rows: plain causal attention (no mask, no wasted square)


@dataclass
class Plan:
    """One forward's layout, the same for every layer: where each real token of the block is written
    (slot, position) and read from (row, column), and the attention groups."""

    slot: torch.Tensor  # [N] for the N real tokens of the block
    position: torch.Tensor  # [N]
    row: torch.Tensor  # [N]
    column: torch.Tensor  # [N]
    groups: list[Group]


def kv_bytes_per_token(model) -> int:
    """Bytes of keys and values one token takes in every layer of `model`."""
    config = model.config.get_text_config()
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * torch.finfo(model.dtype).bits // 8


FREE_SHARE = 0.9  # of the device's free memory a KV layout may take (activations need the rest)


def free_memory(device: torch.device) -> int:
    """Bytes the device can still give: CUDA's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(needs: dict[str, int], rows: int, capacity: int, device: torch.device) -> None:
    """Refuse, naming the numbers, a KV layout the device cannot hold (FREE_SHARE of its free memory)."""
    total, free = sum(needs.values()), free_memory(device)
    if total > FREE_SHARE * free:
        parts = " + ".join(f"{name} {b / 2**30:.2f} GiB" for name, b in needs.items())
        raise UserError(
            f"the KV cache needs {total / 2**30:.2f} GiB ({parts}: {rows} rows x {capacity} tokens) but {device} has "
            f"{free / 2**30:.2f} GiB free; lower batch_size or max_length"
        )


class SlotCache:
    """One model's KV cache for `slots` rows of up to `capacity` tokens (see the module docstring)."""

    def __init__(self, model, slots: int, capacity: int, pad_id: int):
        self.model, self.slots, self.capacity, self.pad_id = model, slots, capacity, pad_id
        self.device = model.device
        config = model.config.get_text_config()
        _check_full_attention(model, config, capacity)
        self.layers = config.num_hidden_layers
        self.heads = config.num_key_value_heads or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.lengths = [0] * slots  # tokens written in each slot (host-side: no sync to know them)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.plan: Plan | None = None
        self.stats = dict(attended=0, live=0, forwards=0)  # key positions read (padding included), live ones
        self._argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    @property
    def nbytes(self) -> int:
        return self.slots * self.capacity * kv_bytes_per_token(self.model)

    def allocate(self) -> None:
        """The whole layout, once (zeros: a slot's unused tail is never read)."""
        if self.keys:
            return
        shape = (self.slots, self.heads, self.capacity, self.head_dim)
        for _ in range(self.layers):
            self.keys.append(torch.zeros(shape, dtype=self.model.dtype, device=self.device))
            self.values.append(torch.zeros(shape, dtype=self.model.dtype, device=self.device))

    def room(self, slot: int) -> int:
        return self.capacity - self.lengths[slot]

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0

    def rollback(self, slot: int, count: int) -> None:
        """Forget the slot's last `count` tokens (rejected drafts): they are overwritten next."""
        self.lengths[slot] -= count

    @torch.inference_mode()
    def append(self, slots: list[int], rows: list[list[int]], keep: int = 1) -> torch.Tensor:
        """Append rows[i] to slot slots[i] (at least one token each) and run the model over them.
        Returns float32 logits [B, keep, V] at each row's last `keep` positions (rows are right-aligned
        in a block as wide as the longest), in the order given."""
        self.allocate()
        order = sorted(range(len(slots)), key=slots.__getitem__)  # block rows by slot: groups are views
        slots, rows = [slots[i] for i in order], [rows[i] for i in order]
        if any(len(r) > self.room(s) for s, r in zip(slots, rows, strict=True)):
            raise ValueError("a row has no room left in its slot")  # the engine finishes rows before this
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        before = [self.lengths[s] for s in slots]
        positions = torch.tensor(
            [[0] * (width - len(r)) + list(range(b, b + len(r))) for r, b in zip(rows, before, strict=True)],
            device=self.device,
        )  # [B, width]
        self.plan = self._plan(slots, rows, before, width)
        with self._our_attention():
            out = self.model(
                input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=keep,
                ownwords_plan=self.plan, **{self._argument: self},
            )  # fmt: skip
        for s, r in zip(slots, rows, strict=True):
            self.lengths[s] += len(r)
        logits = out.logits[:, -keep:].float()
        back = torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=logits.device)
        return logits.index_select(0, back)

    @contextlib.contextmanager
    def _our_attention(self):
        config = self.model.config.get_text_config()
        saved = config._attn_implementation
        config._attn_implementation = ATTENTION
        try:
            yield
        finally:
            config._attn_implementation = saved

    def _plan(self, slots: list[int], rows: list[list[int]], before: list[int], width: int) -> Plan:
        """Where the block's real tokens go, and the attention groups (contiguous slots, similar lengths)."""
        slot, position, row, column = [], [], [], []
        for i, (s, r, b) in enumerate(zip(slots, rows, before, strict=True)):
            slot += [s] * len(r)
            position += range(b, b + len(r))
            row += [i] * len(r)
            column += range(width - len(r), width)
        counts = [len(r) for r in rows]
        groups = []
        for r0, r1 in _runs(slots, before, counts):
            cost, live, own, length, causal = _cost(before[r0:r1], counts[r0:r1])
            mask = None if causal else self._mask(rows[r0:r1], before[r0:r1], own, length)
            groups.append(Group(r0, r1, slots[r0], length, own, mask, causal))
            self.stats["attended"] += cost
            self.stats["live"] += live
        self.stats["forwards"] += 1
        as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=self.device)  # noqa: E731
        return Plan(as_tensor(slot), as_tensor(position), as_tensor(row), as_tensor(column), groups)

    def _mask(self, rows, before, width: int, length: int) -> torch.Tensor | None:
        """[g, 1, width, length]: row b's query at column j (its token j - (width - n_b)) sees its
        keys up to and including that token; a padding query sees its first key (its output is
        dropped; a row of all-masked keys would make NaN)."""
        counts = [len(r) for r in rows]
        if width == 1 and all(b + 1 == length for b in before):
            return None
        base = torch.tensor([b - (width - n) + 1 for b, n in zip(before, counts, strict=True)], device=self.device)
        limit = base[:, None] + torch.arange(width, device=self.device)  # [g, width] keys visible
        keys = torch.arange(length, device=self.device)
        visible = keys < limit[..., None]  # [g, width, length]
        padding = torch.arange(width, device=self.device)[None, :] < torch.tensor(
            [width - n for n in counts], device=self.device
        )[:, None]
        visible |= padding[..., None] & (keys == 0)
        return visible[:, None]

    # -- the model's side: transformers calls these ---------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """key_states, value_states [B, H_kv, width, D] -> the layer's whole storage [S, H_kv, L, D],
        the block's real tokens written into their slots first."""
        plan = self.plan
        self.keys[layer_idx][plan.slot, :, plan.position] = key_states[plan.row, :, plan.column]
        self.values[layer_idx][plan.slot, :, plan.position] = value_states[plan.row, :, plan.column]
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.lengths)


def _runs(slots: list[int], before: list[int], counts: list[int]) -> list[tuple[int, int]]:
    """Split block rows (sorted by slot) into groups of consecutive slots whose attention computes at
    most SLACK times their live key positions: (r0, r1) each."""
    groups, start = [], 0
    for i in range(1, len(slots) + 1):
        if i == len(slots) or slots[i] != slots[i - 1] + 1:
            groups.append((start, i))
            start = i
            continue
        cost, live, *_ = _cost(before[start : i + 1], counts[start : i + 1])
        if cost > SLACK * live:
            groups.append((start, i))
            start = i
    return groups


def _cost(before: list[int], counts: list[int]) -> tuple[int, int, int, int, bool]:
    """(key positions a group's attention computes, its live ones, its query width, its key length,
    whether it is plain causal attention) for rows with `before` cached tokens and `counts` new ones.
    Causal attention over fresh, equal rows computes the triangle; a masked one the whole square."""
    own = max(counts)
    length = max(b + n for b, n in zip(before, counts, strict=True))
    causal = own > 1 and all(b == 0 for b in before) and all(n == own for n in counts)
    cost = len(counts) * (own * length - (own * (own - 1) // 2 if causal else 0))
    live = sum((b + n) * n - n * (n - 1) // 2 for b, n in zip(before, counts, strict=True))
    return cost, live, own, length, causal


def slot_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Each group's rows attend to views of their own slots. query [B, Hq, width, D]; key, value: the
    layer's storage [S, Hkv, L, D]. Returns [B, width, Hq, D] as transformers' attention functions do."""
    plan: Plan = kwargs["ownwords_plan"]
    batch, heads, width, dim = query.shape
    out = query.new_zeros(batch, width, heads, dim)  # a row's padding columns stay 0: nothing reads them
    for g in plan.groups:
        s1 = g.s0 + g.r1 - g.r0
        attended = F.scaled_dot_product_attention(
            query[g.r0 : g.r1, :, width - g.width :], key[g.s0 : s1, :, : g.length], value[g.s0 : s1, :, : g.length],
            attn_mask=g.mask, is_causal=g.causal, scale=scaling, enable_gqa=key.shape[1] != heads,
        )  # fmt: skip  [g, Hq, g.width, D]
        out[g.r0 : g.r1, width - g.width :] = attended.transpose(1, 2)
    return out, None


def _check_full_attention(model, config, capacity: int) -> None:
    """Every layer attends to the whole context (a sliding window as long as the slots is the same)."""
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    windowed = kinds - {"full_attention"} or ("layer_types" not in config.to_dict() and window and window < capacity)
    if windowed:
        raise UserError(
            f"{model.name_or_path}: layers that attend to a window of the context ({sorted(kinds)}, sliding window "
            f"{window}) are not supported by the engine, which gives every row full attention over its own tokens"
        )


AttentionInterface.register(ATTENTION, slot_attention)
