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

import torch

from .lm import CachedBatch, logits_width, stop_token_ids
from .sampling import AcceptanceRule, probs_from_logits, rsd_sample, sample_from, uniforms_for
from .vocab import VocabAlignment


@dataclass(frozen=True)
class Sampling:
    """How logits become the distributions T (teacher proposal) and S (student sampling)."""

    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    raw: bool = (
        False  # T and S from raw logits (temperature 1, no top-p; top-k still applies), as vLLM's logprobs
    )

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        if self.raw:
            return probs_from_logits(logits, 1.0, self.top_k, 1.0)
        return probs_from_logits(logits, self.temperature, self.top_k, self.top_p)


@dataclass(frozen=True)
class RSD:
    rule: AcceptanceRule = AcceptanceRule()
    trials: int = 5  # N: proposals drawn from the teacher before falling back to the student
    score: str = "raw"  # acceptance score a(x): "raw" student softmax (T=1, full vocab) or "processed" S(x)


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
    ):
        if (teacher is None) != (alignment is None):
            raise ValueError("a teacher needs a vocabulary alignment, and an alignment needs a teacher")
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
        pad = student_tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids)
        self.teacher_pad_id = self.pad_id
        if alignment is not None:
            tpad = alignment.teacher_tokenizer.pad_token_id
            self.teacher_pad_id = tpad if tpad is not None else alignment.teacher_tokenizer.eos_token_id or 0

    def run(self, requests: Iterable[Request]) -> Iterator[Trace]:
        """Generate every request; yields traces as they finish (not in request order)."""
        pending = iter(requests)
        rows: list[_Row] = []
        student, teacher = self._states()
        s_logits = t_logits = None  # [B, V] at each row's next position
        while True:
            fresh = [r for r in islice(pending, self.batch_size - len(rows))]
            if fresh:
                admitted, too_long = self._admit(fresh)
                yield from too_long
                if admitted:
                    new_s, new_t, logits = self._prefill(admitted)
                    rows += admitted
                    s_logits = _cat(s_logits, logits[0])
                    student.extend(new_s)
                    if teacher is not None:
                        t_logits = _cat(t_logits, logits[1])
                        teacher.extend(new_t)
            if not rows:
                return
            emitted = self._step(s_logits, t_logits, [r.generator for r in rows])
            keep = []
            for i, (row, record) in enumerate(zip(rows, emitted, strict=True)):
                if self._record(row, record):
                    yield row.trace
                else:
                    keep.append(i)
            if len(keep) < len(rows):
                index = torch.tensor(keep, dtype=torch.long)
                rows = [rows[i] for i in keep]
                if not rows:
                    (student, teacher), s_logits, t_logits = self._states(), None, None
                    continue
                student.select(index)
                s_logits = s_logits[index.to(s_logits.device)]
                if teacher is not None:
                    teacher.select(index)
                    t_logits = t_logits[index.to(t_logits.device)]
            last = [[row.trace.token_ids[-1]] for row in rows]
            s_logits = student.append(last)[:, -1]
            if teacher is not None:
                t_logits = teacher.append([self.alignment.to_teacher(ids) for ids in last])[:, -1]

    def _admit(self, requests: list[Request]) -> tuple[list[_Row], list[Trace]]:
        rows, too_long = [], []
        for req in requests:
            budget = min(self.max_new_tokens, self.max_length - len(req.prompt_ids))
            trace = Trace(req)
            if budget <= 0:  # the prompt alone fills the context: finished before it started
                trace.finish_reason = "length"
                too_long.append(trace)
            else:
                rows.append(_Row(trace, torch.Generator().manual_seed(req.seed), budget, time.perf_counter()))
        return rows, too_long

    def _states(self) -> tuple[CachedBatch, CachedBatch | None]:
        student = CachedBatch(self.student, self.pad_id)
        return student, CachedBatch(self.teacher, self.teacher_pad_id) if self.teacher is not None else None

    def _prefill(self, rows: list[_Row]):
        prompts = [r.trace.request.prompt_ids for r in rows]
        student, teacher = self._states()
        s_logits = student.append(prompts)[:, -1]
        if teacher is None:
            return student, None, (s_logits, None)
        t_logits = teacher.append([self.alignment.to_teacher(p) for p in prompts])[:, -1]
        return student, teacher, (s_logits, t_logits)

    @torch.no_grad()
    def _step(self, s_logits: torch.Tensor, t_logits: torch.Tensor | None, generators) -> list[list[float]]:
        """One token for every row -> per row [token, T(x), a(x), fallback, trials]."""
        s_logits = s_logits[:, : self.vocab]  # [B, Vs]; padded embedding columns ignored
        student = self.sampling.probs(s_logits)
        score = s_logits.softmax(-1) if self.rsd.score == "raw" else student
        if t_logits is None:
            tokens = sample_from(student, uniforms_for(generators, 1).to(student.device)).squeeze(-1)
            proposal_p = torch.full_like(tokens, math.nan, dtype=torch.float64)
            fallback = tried = torch.zeros_like(tokens)
        else:
            proposal = self.sampling.probs(self.alignment.teacher_logits_to_student(t_logits))
            alpha = self.rsd.rule(score, proposal)
            u = uniforms_for(generators, 2 * self.rsd.trials + 1).to(student.device)
            tokens, fallback, tried = rsd_sample(proposal, alpha, student, self.rsd.trials, u)
            proposal_p = proposal.gather(-1, tokens[:, None]).squeeze(-1)
        a = score.gather(-1, tokens[:, None]).squeeze(-1)
        columns = (tokens, proposal_p, a, fallback, tried)
        return torch.stack([c.double() for c in columns], dim=1).tolist()  # one device sync per step

    def _record(self, row: _Row, record: list[float]) -> bool:
        """Append one emitted token to the row's trace; True when the row is finished."""
        token, proposal_p, a, fallback, tried = record
        trace = row.trace
        trace.token_ids.append(int(token))
        trace.teacher_probs.append(proposal_p)
        trace.scores.append(a)
        trace.fallbacks.append(bool(fallback))
        trace.trials.append(int(tried))
        if int(token) in self.stop_ids:
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


def _cat(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if old is None else torch.cat([old, new])
