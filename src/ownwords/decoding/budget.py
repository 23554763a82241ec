"""Budget forcing (s1): cap the thinking block, close it for the rows still thinking, let them answer."""

from __future__ import annotations

from collections.abc import Iterator

from .engine import Request, Trace


def generate_with_budget(
    thinking, requests: list[Request], answer=None, tokenizer=None, thinking_end: str | None = None
) -> Iterator[Trace]:
    """Traces for `requests` from `thinking` (an engine, or anything with `run(requests)`, whose
    max_new_tokens is the thinking budget). With an `answer` engine, a row still thinking at the cap
    (no `thinking_end` yet) gets the block closed for it and continues there."""
    if answer is None:
        yield from thinking.run(requests)
        return
    if not thinking_end:
        raise ValueError("a thinking budget needs the end-of-thinking marker")
    close = tokenizer.encode(f"\n{thinking_end}\n\n", add_special_tokens=False)
    cut: dict[tuple[str, int], Trace] = {}
    for trace in thinking.run(requests):
        if trace.finish_reason == "length" and thinking_end not in tokenizer.decode(trace.token_ids):
            cut[(trace.request.question_id, trace.request.sample_index)] = trace
        else:
            yield trace
    follow = [
        Request(r.question_id, r.sample_index, r.prompt_ids + t.token_ids + close, r.seed + 1)
        for t in cut.values()
        for r in [t.request]
    ]
    for reply in answer.run(follow):
        yield _join(cut[(reply.request.question_id, reply.request.sample_index)], close, reply)


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
