"""Per-sample seeds and the store row of a finished trace."""

from __future__ import annotations

import hashlib
import math

from .engine import Trace


def sample_seed(run_seed: int, question_id: str, sample_index: int) -> int:
    """A sample's own seed: stable across runs, machines and Python versions (no `hash()`)."""
    digest = hashlib.sha256(f"{run_seed}\x00{question_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def trace_record(trace: Trace, question, tokenizer) -> dict:
    """The store row of a finished trace (`question`: anything with id, question, answer); text is
    decoded once, here, without the closing EOS (a trace finished by "eos" ends with its EOS token)."""
    ids = trace.token_ids
    body = ids[:-1] if trace.finish_reason == "eos" else ids
    return dict(
        question_id=question.id,
        sample_index=trace.request.sample_index,
        seed=trace.request.seed,
        question=question.question,
        answer=question.answer,
        prompt=tokenizer.decode(trace.request.prompt_ids, skip_special_tokens=False),
        text=tokenizer.decode(body, skip_special_tokens=False),
        token_ids=ids,
        teacher_probs=[None if math.isnan(p) else p for p in trace.teacher_probs],
        scores=trace.scores,
        fallbacks=[int(f) for f in trace.fallbacks],
        trials=trace.trials,
        n_tokens=len(ids),
        n_fallbacks=sum(trace.fallbacks),
        finish_reason=trace.finish_reason,
        wall_seconds=trace.wall_seconds,
    )
