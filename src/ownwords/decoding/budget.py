"""Budget forcing (s1): cap the thinking block, close it for the rows still thinking, let them answer."""

from __future__ import annotations

from collections.abc import Iterator

from .engine import Engine, Request, Sampling, Trace


def generate_with_budget(
    model,
    tokenizer,
    sampling: Sampling,
    requests: list[Request],
    *,
    max_new_tokens: int,
    batch_size: int,
    thinking_budget: int | None = None,
    thinking_end: str | None = None,
    answer_tokens: int = 1024,
) -> Iterator[Trace]:
    """Student-only traces for `requests`. With a thinking budget, a row still thinking at the cap (no
    `thinking_end` yet) gets the block closed for it and continues with `answer_tokens` more."""
    first_cap = thinking_budget or max_new_tokens
    engine = Engine(model, tokenizer, sampling=sampling, max_new_tokens=first_cap, batch_size=batch_size)
    if thinking_budget is None:
        yield from engine.run(requests)
        return
    if not thinking_end:
        raise ValueError("a thinking budget needs the end-of-thinking marker")
    close = tokenizer.encode(f"\n{thinking_end}\n\n", add_special_tokens=False)
    cut: dict[tuple[str, int], Trace] = {}
    for trace in engine.run(requests):
        if trace.finish_reason == "length" and thinking_end not in tokenizer.decode(trace.token_ids):
            cut[(trace.request.question_id, trace.request.sample_index)] = trace
        else:
            yield trace
    follow = [
        Request(r.question_id, r.sample_index, r.prompt_ids + t.token_ids + close, r.seed + 1)
        for t in cut.values()
        for r in [t.request]
    ]
    answer_engine = Engine(
        model, tokenizer, sampling=sampling, max_new_tokens=answer_tokens, batch_size=batch_size
    )
    for answer in answer_engine.run(follow):
        yield _join(cut[(answer.request.question_id, answer.request.sample_index)], close, answer)


def _join(first: Trace, close: list[int], second: Trace) -> Trace:
    """The thinking part, the forced closing tokens (no records: nobody sampled them), the answer."""
    nan = float("nan")
    return Trace(
        request=first.request,
        token_ids=first.token_ids + close + second.token_ids,
        teacher_probs=first.teacher_probs + [nan] * len(close) + second.teacher_probs,
        scores=first.scores + [nan] * len(close) + second.scores,
        fallbacks=first.fallbacks + [False] * len(close) + second.fallbacks,
        trials=first.trials + [0] * len(close) + second.trials,
        finish_reason=second.finish_reason,
        wall_seconds=first.wall_seconds + second.wall_seconds,
    )
