"""The batched generation engine: teacher and student step in lock-step over a batch of rows.

Each row is one sample with its own `torch.Generator` and its own slot in each model's KV cache
(`slots.py`: allocated once, written in place): a finished row frees its slot, which the next pending
request takes; a rejected draft moves its row's length back; nothing is ever copied between rows.
Without a teacher the engine samples the student alone (the single-model mode evaluation uses).
Token ids are the source of truth; text is decoded once, at the end.

The RSD math runs on each row's support (rsd/sampling.py), in the plain step and in the
speculative block alike: one production path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import NamedTuple

import torch

from ..models.facts import logits_width, padding_id, stop_token_ids
from ..rsd.sampling import (
    AcceptanceRule,
    RawScores,
    Support,
    rsd_explain,
    rsd_sample,
    rsd_target,
    speculative_verify_support,
    stack_supports,
    support_from_logits,
    uniforms_for,
)
from ..rsd.vocab import VocabAlignment
from .slots import SlotCache, check_fits, kv_bytes_per_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """How logits become the distributions T (teacher proposal) and S (student sampling).

    ``logprobs`` "none": the sampler's own distribution; T restricts the teacher to the shared tokens
    first and filters after (DESIGN §2). "raw" / "processed": what vLLM's top-k log-probabilities
    were; T filters the teacher's own distribution first and then keeps the shared tokens,
    renormalised, as the paper's authors did.
    """

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    logprobs: str = "none"

    def support(self, logits: torch.Tensor) -> Support:
        return support_from_logits(logits, self.temperature, self.top_k, self.top_p, self.logprobs)


def proposal_support(t_logits: torch.Tensor, sampling: Sampling, alignment: VocabAlignment) -> Support:
    """T [N, Kt] on each row's support, in student ids, from teacher logits [N, Vt_model] (padded columns
    never proposed). logprobs "none": restrict to the shared tokens, then temperature / top-k / top-p
    (DESIGN §2); "raw" / "processed": the teacher's own top-k list first, then the shared tokens of it,
    renormalised (a teacher-only token in the top 20 takes a place, it does not let a 21st in)."""
    if sampling.logprobs == "none":
        if alignment.shared_prefix:  # the shared tokens are the first columns on both sides
            return sampling.support(t_logits[:, : alignment.shared_prefix])
        return sampling.support(alignment.teacher_logits_to_student(t_logits))
    own = sampling.support(t_logits[:, : alignment.teacher_size])
    return Support(*alignment.teacher_support_to_student(own.probs, own.ids), own.keys)


@dataclass(frozen=True)
class RSD:
    rule: AcceptanceRule = AcceptanceRule()
    trials: int = 5  # N: proposals drawn from the teacher before falling back to the student
    # acceptance score a(x): "raw" = the student's softmax at temperature 1 over its tokenizer's tokens,
    # or "processed" = S(x). Padded logit columns (past the tokenizer's size) are excluded, by choice:
    # vLLM's softmax spans the model's whole output width, where untrained padded rows take a sliver
    # of mass; a token that cannot be decoded should not lower the score of those that can.
    score: str = "raw"


class Emitted(NamedTuple):
    """One emitted token and what RSD recorded for it."""

    token: int
    teacher_prob: float  # T(x); NaN without a teacher
    score: float  # a(x), the student's acceptance score
    fallback: bool  # no trial was accepted: the student drew it from S
    trials: int  # proposals tried at this position


@dataclass
class Request:
    question_id: str
    sample_index: int
    prompt_ids: list[int]  # student token ids, chat template and generation prefix included
    seed: int
    max_new_tokens: int | None = None  # this request's own cap (under the engine's)


@dataclass
class Trace:
    """One finished sample; per-token lists are aligned with `token_ids`."""

    request: Request
    token_ids: list[int] = field(default_factory=list)
    teacher_probs: list[float] = field(default_factory=list)  # T(x) of the emitted token (NaN without teacher)
    scores: list[float] = field(default_factory=list)  # a(x), the student's acceptance score
    fallbacks: list[bool] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)  # proposals tried at this position
    finish_reason: str = ""  # "eos" | "stop" | "length"
    wall_seconds: float = 0.0


@dataclass
class _Row:
    trace: Trace
    generator: torch.Generator
    budget: int  # new tokens this row may emit
    started: float
    slot: int
    pending: int = -1  # last emitted token, recorded but not yet fed to the models


class Engine:
    def __init__(
        self,
        student,
        student_tokenizer,
        teacher=None,
        alignment: VocabAlignment | None = None,
        sampling: Sampling = Sampling(),
        rsd: RSD = RSD(),
        max_new_tokens: int = 7168,
        max_length: int = 8192,
        stop_strings: tuple[str, ...] = (),
        batch_size: int = 16,
        speculate: int = 0,
        observer=None,
    ):
        if (teacher is None) != (alignment is None):
            raise ValueError("a teacher needs a vocabulary alignment, and an alignment needs a teacher")
        if speculate < 0 or (speculate and teacher is None):
            raise ValueError(f"speculate must be >= 0 and needs a teacher, got {speculate}")
        # A rule that can never accept emits S: the student alone, without paying for teacher passes.
        # Its records still say what RSD would: every token a fallback after `trials` rejections.
        self.fallback_only = teacher is not None and rsd.rule.never_accepts
        if self.fallback_only:
            teacher, speculate = None, 0
        self.speculate = speculate
        # forward passes, tokens emitted, drafts proposed and accepted; key positions attended and live
        self.stats = dict(teacher_forwards=0, student_forwards=0, tokens=0, drafted=0, accepted=0)
        self.student, self.tokenizer, self.teacher, self.alignment = student, student_tokenizer, teacher, alignment
        self.sampling, self.rsd = sampling, rsd
        # called with (the rows' requests, T, the student's scores) at every plain step with a teacher
        # (ownwords probe's view of what could be accepted); it must not draw from the rows' generators
        self.observer = observer
        self.max_new_tokens, self.max_length, self.batch_size = max_new_tokens, max_length, batch_size
        self.stop_ids = stop_token_ids(student, student_tokenizer)
        self.stop_strings = tuple(stop_strings)
        self.vocab = alignment.student_size if alignment else min(len(student_tokenizer), logits_width(student))
        self.pad_id = padding_id(student, student_tokenizer)
        self.teacher_pad_id = padding_id(teacher, alignment.teacher_tokenizer) if alignment else self.pad_id
        self._caches: tuple[SlotCache, SlotCache | None] | None = None

    def capacities(self, longest_prompt: int | None = None) -> tuple[int, int]:
        """(student, teacher) tokens a row's slot holds: its prompt and every new token it may take
        (the longest prompt of a run's requests, or max_length), and a speculative block's drafts past
        them; the teacher's an eighth more (a student-only token is several teacher tokens: a row whose
        teacher context would outgrow its slot ends there, with finish reason "length")."""
        student = min(self.max_length, (longest_prompt or self.max_length) + self.max_new_tokens)
        student += self.speculate + 1 if self.speculate else 0
        return student, student + max(64, student // 8)

    def kv_bytes(self, longest_prompt: int | None = None) -> dict[str, int]:
        """What the KV layout allocates, per model (rows x capacity x bytes per token), before any work."""
        student, teacher = self.capacities(longest_prompt)
        needs = {"student": self.batch_size * student * kv_bytes_per_token(self.student)}
        if self.teacher is not None:
            needs["teacher"] = self.batch_size * teacher * kv_bytes_per_token(self.teacher)
        return needs

    def caches(self, longest_prompt: int | None = None) -> tuple[SlotCache, SlotCache | None]:
        """Both models' slot caches, allocated (checked to fit, and logged) when a run needs more room
        than they have: they only grow."""
        student, teacher = self.capacities(longest_prompt)
        if self._caches is None or self._caches[0].capacity < student:
            self._caches = None  # the old layout goes before the new one is made
            needs = self.kv_bytes(longest_prompt)
            check_fits(needs, self.batch_size, student, self.student.device)
            logger.info(
                "KV cache: %s (%d rows x %d tokens)",
                ", ".join(f"{k} {v / 2**30:.2f} GiB" for k, v in needs.items()), self.batch_size, student,
            )  # fmt: skip
            s_cache = SlotCache(self.student, self.batch_size, student, self.pad_id)
            t_cache = None
            if self.teacher is not None:
                t_cache = SlotCache(self.teacher, self.batch_size, teacher, self.teacher_pad_id)
            self._caches = (s_cache, t_cache)
        return self._caches

    def cache_stats(self) -> dict[str, int]:
        """Key positions the attention read (padding included) and live ones, both models, so far; and
        the bytes the KV layout holds (allocated once: it never grows during a run)."""
        caches = [c for c in self._caches or () if c is not None]
        out = {key: sum(c.stats[key] for c in caches) for key in ("attended", "live")}
        return out | {"kv_bytes": sum(c.nbytes for c in caches)}

    def run(self, requests: Iterable[Request]) -> Iterator[Trace]:
        """Generate every request; yields traces as they finish (not in request order).

        New rows are prefilled with their whole prompt into free slots, which gives their first token.
        From then on each row carries a `pending` token: its last one, recorded but not yet fed to
        the models. A step feeds it and emits one token (plain RSD) or a speculative block of tokens;
        a finished row frees its slot for a pending request.
        """
        step = self._block if self.speculate else self._plain
        requests = list(requests)
        pending = iter(requests)
        rows: dict[int, _Row] = {}  # slot -> its row
        caches = self.caches(max((len(r.prompt_ids) for r in requests), default=1))
        for cache in caches:
            if cache is not None:
                cache.lengths = [0] * cache.slots
        while True:
            free = [s for s in range(self.batch_size) if s not in rows]
            fresh = list(islice(pending, len(free)))
            if fresh:
                admitted, too_long = self._admit(fresh, free)
                yield from too_long
                if admitted:
                    yield from self._settle(admitted, self._prefill(admitted), rows, caches, add=True)
            if not rows:
                if fresh:  # every admitted row finished at once (at its prefill, or too long): admit more
                    continue
                return
            running = [rows[s] for s in sorted(rows)]
            yield from self._settle(running, step(running, *caches), rows, caches)

    def _settle(self, running: list[_Row], results, rows: dict, caches, add: bool = False):
        """Record each row's emitted tokens (None: it has no room left); yield the finished traces and
        free their slots; keep the others (adding the newly admitted ones)."""
        for row, records in zip(running, results, strict=True):
            done = records is None or any(self._record(row, record) for record in records)
            if records is None:
                row.trace.finish_reason = "length"
                row.trace.wall_seconds = time.perf_counter() - row.started
            if done:
                rows.pop(row.slot, None)
                for cache in caches:
                    if cache is not None:
                        cache.free(row.slot)
                yield row.trace
            else:
                row.pending = row.trace.token_ids[-1]
                if add:
                    rows[row.slot] = row

    def _admit(self, requests: list[Request], free: list[int]) -> tuple[list[_Row], list[Trace]]:
        rows, too_long = [], []
        slots = iter(free)
        for req in requests:
            budget = min(self.max_new_tokens, req.max_new_tokens or self.max_new_tokens, self.max_length - len(req.prompt_ids))
            trace = Trace(req)
            if budget <= 0 or not req.prompt_ids:  # no room to generate: finished before it started
                trace.finish_reason = "length"
                too_long.append(trace)
            else:
                generator = torch.Generator().manual_seed(req.seed)
                rows.append(_Row(trace, generator, budget, time.perf_counter(), next(slots)))
        return rows, too_long

    def _prefill(self, rows: list[_Row]) -> list[list[Emitted] | None]:
        """The new rows' prompts into their slots; each row's first emitted token."""
        s_cache, t_cache = self._caches
        slots = [r.slot for r in rows]
        prompts = [r.trace.request.prompt_ids for r in rows]
        t_prompts = [self.alignment.to_teacher(p) for p in prompts] if t_cache is not None else None
        if t_prompts is not None and any(len(p) > t_cache.capacity - 1 for p in t_prompts):
            raise ValueError("a prompt longer in teacher tokens than the teacher's slots")  # max_length bounds it
        s_logits = s_cache.append(slots, prompts)[:, -1]
        t_logits = t_cache.append(slots, t_prompts)[:, -1] if t_cache is not None else None
        self.stats["tokens"] += len(rows)
        return [[record] for record in self._step(s_logits, t_logits, rows)]

    def _plain(self, rows: list[_Row], s_cache: SlotCache, t_cache: SlotCache | None) -> list[list[Emitted] | None]:
        """Plain RSD: feed every row's pending token, emit one token per row (None: no room left)."""
        pieces = [self.alignment.to_teacher([r.pending]) for r in rows] if t_cache is not None else None
        room = [t_cache is None or len(p) <= t_cache.room(r.slot) for r, p in zip(rows, pieces or rows, strict=True)]
        going = [r for r, ok in zip(rows, room, strict=True) if ok]
        results: list[list[Emitted] | None] = [None] * len(rows)
        if not going:
            return results
        slots = [r.slot for r in going]
        s_logits = s_cache.append(slots, [[r.pending] for r in going])[:, -1]
        self.stats["student_forwards"] += 1
        t_logits = None
        if t_cache is not None:
            t_logits = t_cache.append(slots, [p for p, ok in zip(pieces, room, strict=True) if ok])[:, -1]
            self.stats["teacher_forwards"] += 1
        self.stats["tokens"] += len(going)
        records = iter(self._step(s_logits, t_logits, going))
        return [[next(records)] if ok else None for ok in room]

    @torch.inference_mode()
    def _step(self, s_logits: torch.Tensor, t_logits: torch.Tensor | None, rows: list[_Row]) -> list[Emitted]:
        """One token for every row. S and T are kept on each row's support (a few dozen tokens after
        top-k / top-p), so no step pays for several passes over a 150k-token vocabulary."""
        s_logits = s_logits[:, : self.vocab]  # [B, Vs]; padded embedding columns ignored
        student = self.sampling.support(s_logits)  # S: [B, Ks]
        scores = RawScores(s_logits) if self.rsd.score == "raw" else student
        generators = [r.generator for r in rows]
        if t_logits is None:
            # S only: one draw; fallback-only RSD: the same 2N + 1 draws RSD makes, its last one
            n = 2 * self.rsd.trials + 1 if self.fallback_only else 1
            tokens = student.sample(uniforms_for(generators, n)[:, -1:].to(s_logits.device)).squeeze(-1)
            proposal_p = torch.full_like(tokens, math.nan, dtype=torch.float64)
            fallback = torch.full_like(tokens, int(self.fallback_only))
            tried = torch.full_like(tokens, self.rsd.trials if self.fallback_only else 0)
        else:
            proposal = proposal_support(t_logits, self.sampling, self.alignment)  # T: [B, Kt]
            if self.observer is not None:
                self.observer([r.trace.request for r in rows], proposal, scores)
            alpha = self.rsd.rule.on_support(proposal, scores)  # [B, Kt]
            u = uniforms_for(generators, 2 * self.rsd.trials + 1).to(s_logits.device)
            tokens, fallback, tried = rsd_sample(
                proposal.probs, alpha, student.probs, self.rsd.trials, u, proposal.ids, student.ids
            )
            proposal_p = proposal.at(tokens[:, None]).squeeze(-1)
        return _emitted(tokens, proposal_p, scores.at(tokens[:, None]).squeeze(-1), fallback, tried)

    @torch.inference_mode()
    def _block(self, rows: list[_Row], s_cache: SlotCache, t_cache: SlotCache) -> list[list[Emitted] | None]:
        """Speculative RSD for every row: the student drafts K tokens from S, the teacher scores
        pending + drafts in one pass, the drafts are verified against P, and each row's slots move
        back over its rejected ones. Returns per row the emitted tokens (accepted drafts + one more),
        or None for a row whose teacher slot has no room for the block."""
        k = self.speculate
        u = uniforms_for([r.generator for r in rows], 4 * k + 3)  # draws | coins | final | 2 per record
        s_logits, students, draft = self._draft(rows, s_cache, u)
        pieces = [
            [self.alignment.to_teacher([t]) for t in [r.pending, *d]] for r, d in zip(rows, draft.tolist(), strict=True)
        ]
        room = [sum(map(len, p)) <= t_cache.room(r.slot) for r, p in zip(rows, pieces, strict=True)]
        t_logits = self._score_block(rows, pieces, room, t_cache)
        emitted, kept = self._verify(s_logits, students, t_logits, draft, u)
        self.stats.update(
            student_forwards=self.stats["student_forwards"] + k + 1,
            teacher_forwards=self.stats["teacher_forwards"] + 1,
            tokens=self.stats["tokens"] + sum(kept) + len(rows),
            drafted=self.stats["drafted"] + k * len(rows),
            accepted=self.stats["accepted"] + sum(kept),
        )
        for r, p, n, ok in zip(rows, pieces, kept, room, strict=True):
            s_cache.rollback(r.slot, k - n)  # rejected drafts
            if ok:
                t_cache.rollback(r.slot, sum(len(x) for x in p[n + 1 :]))
        return [e[: n + 1] if ok else None for e, n, ok in zip(emitted, kept, room, strict=True)]

    def _draft(self, rows: list[_Row], s_cache: SlotCache, u: torch.Tensor):
        """Feed the pending tokens, then draft K tokens from S, one student forward each.
        -> student logits [B, K+1, V], S at each of the K+1 positions, draft [B, K]."""
        k, v = self.speculate, self.vocab
        slots = [r.slot for r in rows]
        s_logits = [s_cache.append(slots, [[r.pending] for r in rows])[:, -1, :v]]  # K+1 x [B, V]
        students, drafts = [], []
        for j in range(k):
            students.append(self.sampling.support(s_logits[j]))
            drafts.append(students[j].sample(u[:, j : j + 1].to(s_logits[j].device)).squeeze(-1))
            s_logits.append(s_cache.append(slots, drafts[j][:, None].tolist())[:, -1, :v])
        students.append(self.sampling.support(s_logits[k]))
        draft = torch.stack(drafts, 1) if k else torch.zeros(len(rows), 0, dtype=torch.long)
        return torch.stack(s_logits, 1), students, draft

    def _score_block(self, rows, pieces, room, t_cache: SlotCache) -> torch.Tensor:
        """One teacher pass over pending + drafts (a student-only token is several teacher tokens).
        -> teacher logits [B, K+1, Vt] after each student token (zeros for a row without room)."""
        going = [i for i, ok in enumerate(room) if ok]
        k1 = self.speculate + 1
        out = torch.zeros(len(rows), k1, logits_width(self.teacher), device=self.student.device)
        if not going:
            return out
        t_rows = [[t for p in pieces[i] for t in p] for i in going]
        width = max(len(r) for r in t_rows)
        t_all = t_cache.append([rows[i].slot for i in going], t_rows, keep=width)  # [G, W, Vt]; right-aligned
        ends = torch.tensor([[width - len(t) + e - 1 for e in _cumsum([len(p) for p in pieces[i]])]
                             for i, t in zip(going, t_rows, strict=True)])  # fmt: skip
        out[going] = t_all[torch.arange(len(going))[:, None], ends.to(t_all.device)].to(out.device)
        return out

    def _verify(self, s_logits, students: list[Support], t_logits, draft, u) -> tuple[list[list[Emitted]], list[int]]:
        """P at each of the K+1 positions from the closed form on supports; speculative sampling against
        it. -> per row the records of all K+1 positions (the first accepted + 1 are emitted), and the
        number of accepted drafts per row."""
        n_rows, k = draft.shape
        student = stack_supports(students)  # S at [B(K+1)] positions, row-major
        logits = s_logits.flatten(0, 1)  # [B(K+1), V]
        scores = RawScores(logits) if self.rsd.score == "raw" else student
        proposal = proposal_support(t_logits.flatten(0, 1), self.sampling, self.alignment)  # T: [B(K+1), Kt]
        alpha = self.rsd.rule.on_support(proposal, scores)
        targets = rsd_target(proposal, alpha, student, self.rsd.trials)
        u = u.to(logits.device)
        positions = torch.arange(n_rows)[:, None] * (k + 1) + torch.arange(k)  # [B, K]: draft j of row i
        s_draft = _lookup_rows(student, positions, draft) if k else draft.double()  # S(draft j) at position j
        accepted, final = speculative_verify_support(targets, s_draft, draft, u[:, k : 2 * k + 1])
        tokens = torch.cat([draft, final[:, None]], 1)  # [B, K+1]; row i emits tokens[i, : accepted[i] + 1]
        tokens[torch.arange(n_rows), accepted] = final
        flat = tokens.flatten()[:, None]
        fallback, tried = rsd_explain(
            targets.mass, student.at(flat).squeeze(-1), targets.at(flat).squeeze(-1), self.rsd.trials,
            u[:, 2 * k + 1 :].reshape(-1, 2),
        )  # fmt: skip
        records = _emitted(flat.squeeze(-1), proposal.at(flat).squeeze(-1), scores.at(flat).squeeze(-1), fallback, tried)
        return [records[i * (k + 1) : (i + 1) * (k + 1)] for i in range(n_rows)], accepted.tolist()

    def _record(self, row: _Row, emitted: Emitted) -> bool:
        """Append one emitted token to the row's trace; True when the row is finished."""
        trace = row.trace
        trace.token_ids.append(emitted.token)
        trace.teacher_probs.append(emitted.teacher_prob)
        trace.scores.append(emitted.score)
        trace.fallbacks.append(emitted.fallback)
        trace.trials.append(emitted.trials)
        if emitted.token in self.stop_ids:
            trace.finish_reason = "eos"
        elif self.stop_strings and self._hit_stop_string(trace.token_ids):
            trace.finish_reason = "stop"
        elif len(trace.token_ids) >= row.budget:
            trace.finish_reason = "length"
        else:
            return False
        trace.wall_seconds = time.perf_counter() - row.started
        return True

    def _hit_stop_string(self, ids: list[int]) -> bool:
        window = max(len(s) for s in self.stop_strings) + 8  # a token covers at least one character
        tail = self.tokenizer.decode(ids[-window:], skip_special_tokens=False)
        return any(s in tail for s in self.stop_strings)


def _lookup_rows(student: Support, positions: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """S at flat positions [B, K] of tokens [B, K] -> [B, K]."""
    flat = positions.flatten().to(student.probs.device)
    picked = Support(student.probs[flat], student.ids[flat], student.keys[flat])
    return picked.at(tokens.reshape(-1, 1).to(student.probs.device)).view(tokens.shape)


def _emitted(tokens, teacher_probs, scores, fallbacks, trials) -> list[Emitted]:
    """[N] tensors -> N records, with one device sync for all of them."""
    columns = torch.stack([c.double() for c in (tokens, teacher_probs, scores, fallbacks, trials)], 1)
    return [Emitted(int(t), p, a, bool(f), int(n)) for t, p, a, f, n in columns.tolist()]


def _cumsum(xs: list[int]) -> list[int]:
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out
