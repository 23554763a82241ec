"""The batched generation engine: teacher and student step in lock-step over a batch of rows.

Each row is one sample with its own `torch.Generator`; a finished row frees its slot, which is
refilled from pending requests. Without a teacher the engine samples the student alone (the
single-model mode evaluation uses). Token ids are the source of truth; text is decoded once, at the end.
"""

from __future__ import annotations

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
    probs_from_logits,
    rsd_explain,
    rsd_probs,
    rsd_sample,
    sample_from,
    speculative_verify,
    support_from_logits,
    uniforms_for,
)
from ..rsd.vocab import VocabAlignment
from .cache import CachedBatch


@dataclass(frozen=True)
class Sampling:
    """How logits become the distributions T (teacher proposal) and S (student sampling).

    ``logprobs`` "none": the sampler's own distribution; T restricts the teacher to the shared tokens
    first and filters after (DESIGN §2). "raw" / "processed": what vLLM's top-k log-probabilities
    were (``probs_from_logits``); T filters the teacher's own distribution first and then keeps the
    shared tokens, renormalised, as the paper's authors did.
    """

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    logprobs: str = "none"

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return probs_from_logits(logits, self.temperature, self.top_k, self.top_p, self.logprobs)

    def support(self, logits: torch.Tensor) -> Support:
        return support_from_logits(logits, self.temperature, self.top_k, self.top_p, self.logprobs)


def proposal_probs(t_logits: torch.Tensor, sampling: Sampling, alignment: VocabAlignment) -> torch.Tensor:
    """T [N, Vs] on student ids from teacher logits [N, Vt_model] (padded columns never proposed).

    logprobs "none": restrict to the shared tokens, then temperature / top-k / top-p (DESIGN §2).
    "raw" / "processed": the teacher's own top-k list first, then the shared tokens of it, renormalised
    (the paper's authors: a teacher-only token in the top 20 takes a place, it does not let a 21st in).
    """
    if sampling.logprobs == "none":
        return sampling.probs(alignment.teacher_logits_to_student(t_logits))
    own = sampling.probs(t_logits[:, : alignment.teacher_size])  # [N, Vt]
    return alignment.teacher_probs_to_student(own)


def proposal_support(t_logits: torch.Tensor, sampling: Sampling, alignment: VocabAlignment) -> Support:
    """``proposal_probs`` kept on each row's support (student ids)."""
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


@dataclass
class Trace:
    """One finished sample; per-token lists are aligned with `token_ids`."""

    request: Request
    token_ids: list[int] = field(default_factory=list)
    teacher_probs: list[float] = field(
        default_factory=list
    )  # T(x) of the emitted token (NaN without teacher)
    scores: list[float] = field(default_factory=list)  # a(x), the student's acceptance score
    fallbacks: list[bool] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)  # proposals tried at this position
    finish_reason: str = ""  # "eos" | "stop" | "length"
    wall_seconds: float = 0.0


@dataclass
class _Row:
    trace: Trace
    generator: torch.Generator
    budget: int  # new tokens this row may still emit
    started: float
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
        # teacher/student forward passes, tokens emitted, drafts proposed and accepted (for benchmarks)
        self.stats = dict(teacher_forwards=0, student_forwards=0, tokens=0, drafted=0, accepted=0)
        self.student, self.tokenizer, self.teacher, self.alignment = (
            student,
            student_tokenizer,
            teacher,
            alignment,
        )
        self.sampling, self.rsd = sampling, rsd
        self.max_new_tokens, self.max_length, self.batch_size = max_new_tokens, max_length, batch_size
        self.stop_ids = stop_token_ids(student, student_tokenizer)
        self.stop_strings = tuple(stop_strings)
        self.vocab = (
            alignment.student_size if alignment else min(len(student_tokenizer), logits_width(student))
        )

        self.pad_id = padding_id(student, student_tokenizer)
        self.teacher_pad_id = padding_id(teacher, alignment.teacher_tokenizer) if alignment else self.pad_id

    def run(self, requests: Iterable[Request]) -> Iterator[Trace]:
        """Generate every request; yields traces as they finish (not in request order).

        New rows are prefilled with their whole prompt, which gives their first token. From then on
        each row carries a `pending` token: its last one, recorded but not yet fed to the models. A
        step feeds it and emits one token (plain RSD) or a speculative block of tokens; a finished
        row frees its slot for a pending request.
        """
        step = self._block if self.speculate else self._plain
        pending_requests = iter(requests)
        rows: list[_Row] = []
        s_cache, t_cache = self._caches()
        while True:
            fresh = list(islice(pending_requests, self.batch_size - len(rows)))
            if fresh:
                admitted, too_long = self._admit(fresh)
                yield from too_long
                if admitted:
                    new_s, new_t, first = self._prefill(admitted)
                    admitted = yield from self._settle(admitted, first, new_s, new_t)
                    s_cache.extend(new_s)
                    if t_cache is not None:
                        t_cache.extend(new_t)
                    rows += admitted
            if not rows:
                if fresh:  # every admitted row finished at once (at its prefill, or too long): admit more
                    continue
                return
            rows = yield from self._settle(rows, step(rows, s_cache, t_cache), s_cache, t_cache)
            if not rows:
                s_cache, t_cache = self._caches()

    def _settle(self, rows: list[_Row], results, s_cache: CachedBatch, t_cache: CachedBatch | None):
        """Record each row's emitted tokens; yield the finished traces, free their slots in the model
        states, and return the rows still running."""
        keep = []
        for i, (row, records) in enumerate(zip(rows, results, strict=True)):
            if any(self._record(row, record) for record in records):
                yield row.trace
            else:
                row.pending = row.trace.token_ids[-1]
                keep.append(i)
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long)
            s_cache.select(index)
            if t_cache is not None:
                t_cache.select(index)
        return [rows[i] for i in keep]

    def _admit(self, requests: list[Request]) -> tuple[list[_Row], list[Trace]]:
        rows, too_long = [], []
        for req in requests:
            budget = min(self.max_new_tokens, self.max_length - len(req.prompt_ids))
            trace = Trace(req)
            if budget <= 0 or not req.prompt_ids:  # no room to generate: finished before it started
                trace.finish_reason = "length"
                too_long.append(trace)
            else:
                generator = torch.Generator().manual_seed(req.seed)
                rows.append(_Row(trace, generator, budget, time.perf_counter()))
        return rows, too_long

    def _caches(self) -> tuple[CachedBatch, CachedBatch | None]:
        """Fresh, empty KV-cache states of the student and (when there is one) the teacher."""
        t_cache = CachedBatch(self.teacher, self.teacher_pad_id) if self.teacher is not None else None
        return CachedBatch(self.student, self.pad_id), t_cache

    def _prefill(self, rows: list[_Row]) -> tuple[CachedBatch, CachedBatch | None, list[list[Emitted]]]:
        """Fresh caches holding the new rows' prompts, and each row's first emitted token."""
        s_cache, t_cache = self._caches()
        prompts = [r.trace.request.prompt_ids for r in rows]
        s_logits = s_cache.append(prompts)[:, -1]
        t_logits = None
        if t_cache is not None:
            t_logits = t_cache.append([self.alignment.to_teacher(p) for p in prompts])[:, -1]
        self.stats["tokens"] += len(rows)
        records = self._step(s_logits, t_logits, [r.generator for r in rows])
        return s_cache, t_cache, [[record] for record in records]

    def _plain(
        self, rows: list[_Row], s_cache: CachedBatch, t_cache: CachedBatch | None
    ) -> list[list[Emitted]]:
        """Plain RSD: feed every row's pending token, emit one token per row."""
        s_logits = s_cache.append([[r.pending] for r in rows])[:, -1]
        self.stats["student_forwards"] += 1
        t_logits = None
        if t_cache is not None:
            t_logits = t_cache.append([self.alignment.to_teacher([r.pending]) for r in rows])[:, -1]
            self.stats["teacher_forwards"] += 1
        self.stats["tokens"] += len(rows)
        return [[record] for record in self._step(s_logits, t_logits, [r.generator for r in rows])]

    @torch.inference_mode()
    def _step(self, s_logits: torch.Tensor, t_logits: torch.Tensor | None, generators) -> list[Emitted]:
        """One token for every row. S and T are kept on each row's support (a few dozen tokens after
        top-k / top-p), so no step pays for several passes over a 150k-token vocabulary."""
        s_logits = s_logits[:, : self.vocab]  # [B, Vs]; padded embedding columns ignored
        student = self.sampling.support(s_logits)  # S: [B, Ks]
        scores = RawScores(s_logits) if self.rsd.score == "raw" else student
        if t_logits is None:
            # S only: one draw; fallback-only RSD: the same 2N + 1 draws RSD makes, its last one
            n = 2 * self.rsd.trials + 1 if self.fallback_only else 1
            tokens = student.sample(uniforms_for(generators, n)[:, -1:].to(s_logits.device)).squeeze(-1)
            proposal_p = torch.full_like(tokens, math.nan, dtype=torch.float64)
            fallback = torch.full_like(tokens, int(self.fallback_only))
            tried = torch.full_like(tokens, self.rsd.trials if self.fallback_only else 0)
        else:
            proposal = proposal_support(t_logits, self.sampling, self.alignment)  # T: [B, Kt]
            alpha = self.rsd.rule.on_support(proposal, scores)  # [B, Kt]
            u = uniforms_for(generators, 2 * self.rsd.trials + 1).to(s_logits.device)
            tokens, fallback, tried = rsd_sample(
                proposal.probs, alpha, student.probs, self.rsd.trials, u, proposal.ids, student.ids
            )
            proposal_p = proposal.at(tokens[:, None]).squeeze(-1)
        return _emitted(tokens, proposal_p, scores.at(tokens[:, None]).squeeze(-1), fallback, tried)

    def _proposal(self, t_logits: torch.Tensor) -> torch.Tensor:
        return proposal_probs(t_logits, self.sampling, self.alignment)

    @torch.inference_mode()
    def _block(self, rows: list[_Row], s_cache: CachedBatch, t_cache: CachedBatch) -> list[list[Emitted]]:
        """Speculative RSD for every row: the student drafts K tokens from S, the teacher scores
        pending + drafts in one pass, the drafts are verified against P, and both caches are rolled
        back over the rejected ones. Returns per row the emitted tokens (accepted drafts + one more)."""
        k = self.speculate
        u = uniforms_for([r.generator for r in rows], 4 * k + 3)  # draws | coins | final | 2 per record
        s_logits, s_probs, draft = self._draft(rows, s_cache, u)
        t_logits, pieces = self._score_block(rows, draft, t_cache)
        emitted, kept = self._verify(s_logits, s_probs, t_logits, draft, u)
        self.stats.update(
            student_forwards=self.stats["student_forwards"] + k + 1,
            teacher_forwards=self.stats["teacher_forwards"] + 1,
            tokens=self.stats["tokens"] + sum(kept) + len(rows),
            drafted=self.stats["drafted"] + k * len(rows),
            accepted=self.stats["accepted"] + sum(kept),
        )
        s_cache.rollback([k - n for n in kept])  # rejected drafts
        t_cache.rollback([sum(len(p) for p in row[n + 1 :]) for row, n in zip(pieces, kept, strict=True)])
        return [e[: n + 1] for e, n in zip(emitted, kept, strict=True)]

    def _draft(self, rows: list[_Row], s_cache: CachedBatch, u: torch.Tensor):
        """Feed the pending tokens, then draft K tokens from S, one student forward each.
        -> student logits [B, K+1, V], S [B, K+1, V], draft [B, K]."""
        k, v = self.speculate, self.vocab
        s_logits = [s_cache.append([[r.pending] for r in rows])[:, -1, :v]]  # K+1 x [B, V]
        s_probs, drafts = [], []
        for j in range(k):
            s_probs.append(self.sampling.probs(s_logits[j]))
            drafts.append(sample_from(s_probs[j], u[:, j : j + 1].to(s_probs[j].device)).squeeze(-1))
            s_logits.append(s_cache.append(drafts[j][:, None].tolist())[:, -1, :v])
        s_probs.append(self.sampling.probs(s_logits[k]))
        draft = torch.stack(drafts, 1) if k else torch.zeros(len(rows), 0, dtype=torch.long)
        return torch.stack(s_logits, 1), torch.stack(s_probs, 1), draft

    def _score_block(self, rows: list[_Row], draft: torch.Tensor, t_cache: CachedBatch):
        """One teacher pass over pending + drafts (a student-only token is several teacher tokens).
        -> teacher logits [B, K+1, Vt] after each student token, and each row's teacher pieces."""
        pieces = [
            [self.alignment.to_teacher([t]) for t in [r.pending, *d]]
            for r, d in zip(rows, draft.tolist(), strict=True)
        ]
        t_rows = [[t for p in row for t in p] for row in pieces]
        width = max(len(r) for r in t_rows)
        t_all = t_cache.append(t_rows, keep=width)  # [B, W, Vt]; rows right-aligned in the block
        ends = torch.tensor(
            [
                [width - len(t) + e - 1 for e in _cumsum([len(p) for p in row])]
                for row, t in zip(pieces, t_rows, strict=True)
            ]
        )
        return t_all[torch.arange(len(rows))[:, None], ends.to(t_all.device)], pieces

    def _verify(self, s_logits, s_probs, t_logits, draft, u) -> tuple[list[list[Emitted]], list[int]]:
        """P at each of the K+1 positions from the closed form; speculative sampling against it.
        -> per row the records of all K+1 positions (the first accepted + 1 are emitted), and the
        number of accepted drafts per row."""
        (n_rows, k), v = draft.shape, self.vocab
        proposal = self._proposal(t_logits.flatten(0, 1))  # [B(K+1), V]
        student_p = s_probs.flatten(0, 1)  # [B(K+1), V]
        logits = s_logits.flatten(0, 1)  # the scores' order, which decides ties (as on the support)
        score = logits.softmax(-1) if self.rsd.score == "raw" else student_p
        alpha = self.rsd.rule(score, proposal, logits.masked_fill(score == 0, -math.inf))
        target = rsd_probs(proposal, alpha, student_p, self.rsd.trials)  # [B(K+1), V] float64
        shape = (n_rows, k + 1, v)
        u = u.to(target.device)
        accepted, final = speculative_verify(
            target.view(shape), student_p.view(shape)[:, :k], draft, u[:, k : 2 * k + 1]
        )
        tokens = torch.cat([draft, final[:, None]], 1)  # [B, K+1]; row i emits tokens[i, : accepted[i] + 1]
        tokens[torch.arange(n_rows), accepted] = final
        flat = tokens.flatten()
        pick = lambda dist: dist.gather(-1, flat[:, None]).squeeze(-1)  # noqa: E731
        fallback, tried = rsd_explain(
            (proposal * alpha).sum(-1),
            pick(student_p),
            pick(target),
            self.rsd.trials,
            u[:, 2 * k + 1 :].reshape(-1, 2),
        )
        records = _emitted(flat, pick(proposal), pick(score), fallback, tried)
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
