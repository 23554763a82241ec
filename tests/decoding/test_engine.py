import pytest
import torch

from ownwords.data.questions import build_prompt
from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.models.loading import load_pair
from ownwords.rsd.sampling import AcceptanceRule


@pytest.fixture(scope="module")
def models(tiny_pair):
    teacher_dir, student_dir = tiny_pair
    return load_pair(str(teacher_dir), str(student_dir), "cpu", "float32")


def make_engine(models, batch_size, threshold=0.01, max_new_tokens=24, top_p=1.0, **kwargs):
    student, s_tok, teacher, alignment = models
    rsd = RSD(AcceptanceRule("threshold", threshold), trials=5)
    return Engine(
        student,
        s_tok,
        teacher,
        alignment,
        Sampling(temperature=1.0, top_p=top_p),
        rsd,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        **kwargs,
    )


def requests(models, n=8):
    s_tok = models[1]
    prompts = [
        build_prompt(s_tok, f"What is {i} + {i * 7}?" * (1 + i % 3), prefix="<think>\n") for i in range(n)
    ]
    return [Request(f"q{i % 3}", i, prompts[i], seed=1000 + i) for i in range(n)]


def by_index(traces):
    return {t.request.sample_index: t for t in traces}


def test_same_seed_same_tokens(models):
    a = by_index(make_engine(models, 4).run(requests(models)))
    b = by_index(make_engine(models, 4).run(requests(models)))
    assert {i: t.token_ids for i, t in a.items()} == {i: t.token_ids for i, t in b.items()}
    assert len({tuple(t.token_ids) for t in a.values()}) == len(a)  # different seeds differ


@pytest.mark.parametrize("top_p", [1.0, 0.95])
def test_batch_invariance_alone_vs_batch_of_8_vs_refilled_batch_of_3(models, top_p):
    """At top-p 0.95 the support widens per row; the batch runs the requests in a permuted order, so
    a row whose nucleus is widened is not always the first."""
    reqs = requests(models)
    alone = by_index(t for r in reqs for t in make_engine(models, 1, top_p=top_p).run([r]))
    shuffled = [reqs[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]
    together = by_index(make_engine(models, 8, top_p=top_p).run(shuffled))
    refilled = by_index(make_engine(models, 3, top_p=top_p).run(shuffled))
    for i in alone:
        assert together[i].token_ids == alone[i].token_ids, f"sample {i} changed in a batch of 8"
        assert refilled[i].token_ids == alone[i].token_ids, f"sample {i} changed in a refilled batch of 3"
        assert together[i].fallbacks == alone[i].fallbacks
        assert together[i].scores == pytest.approx(alone[i].scores, abs=1e-5)


def test_records_are_consistent_with_the_threshold(models):
    engine = make_engine(models, 8, threshold=0.01)
    for trace in engine.run(requests(models)):
        n = len(trace.token_ids)
        assert (
            n
            == len(trace.scores)
            == len(trace.teacher_probs)
            == len(trace.fallbacks)
            == len(trace.trials)
            > 0
        )
        for score, fallback, tried, t_prob in zip(
            trace.scores, trace.fallbacks, trace.trials, trace.teacher_probs
        ):
            if fallback:
                assert tried == 5
            else:
                assert score >= 0.01 and 1 <= tried <= 5 and t_prob > 0
        assert trace.finish_reason in ("eos", "length") and trace.wall_seconds > 0
        assert (trace.token_ids[-1] in engine.stop_ids) == (trace.finish_reason == "eos")


def test_threshold_zero_is_teacher_only_and_above_one_is_student_only(models):
    for trace in make_engine(models, 8, threshold=0.0).run(requests(models)):
        assert not any(trace.fallbacks) and set(trace.trials) == {1}
        assert all(p > 0 for p in trace.teacher_probs)
    for trace in make_engine(models, 8, threshold=1.5).run(requests(models)):
        assert all(trace.fallbacks)


def test_student_only_engine_samples_the_student(models):
    student, s_tok, _, _ = models
    engine = Engine(student, s_tok, sampling=Sampling(temperature=0.0), max_new_tokens=6, batch_size=2)
    traces = list(engine.run(requests(models, 2)))
    prompt = traces[0].request.prompt_ids
    with torch.no_grad():
        greedy = student(torch.tensor([prompt])).logits[0, -1, : len(s_tok)].argmax().item()
    assert traces[0].token_ids[0] == greedy
    assert not any(traces[0].fallbacks)


def test_stop_string_and_length_limits(models):
    reqs = requests(models, 1)
    free = next(make_engine(models, 1, max_new_tokens=12).run(reqs))
    stop = models[1].decode(free.token_ids[4:6])
    stopped = next(make_engine(models, 1, max_new_tokens=12, stop_strings=(stop,)).run(reqs))
    assert stopped.finish_reason == "stop" and len(stopped.token_ids) <= 6
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    prompt_len = len(reqs[0].prompt_ids)
    short = next(make_engine(models, 1, max_length=prompt_len + 3).run(reqs))
    assert short.finish_reason == "length" and len(short.token_ids) == 3
    none = next(make_engine(models, 1, max_length=prompt_len).run(reqs))
    assert none.finish_reason == "length" and none.token_ids == []


@pytest.mark.parametrize("k", [0, 2])
def test_rows_finished_by_their_prefill_free_their_slots(models, k):
    """The longest prompts have room for one token, emitted by the prefill: they finish before their
    batch-mates' first step, whose slots and traces must not be disturbed."""
    reqs = requests(models, 6)
    max_length = max(len(r.prompt_ids) for r in reqs) + 1
    # 2 and 5 are the longest; in a batch of 2, 5 is then admitted alone into the running batch
    reqs = [reqs[0], reqs[2], reqs[5], *reqs[3:5], reqs[1]]
    batched = by_index(make_engine(models, 2, max_length=max_length, speculate=k).run(reqs))
    for r in reqs:
        alone = next(make_engine(models, 1, max_length=max_length, speculate=k).run([r]))
        assert batched[r.sample_index].token_ids == alone.token_ids
    lengths = {len(t.token_ids) for t in batched.values()}
    assert 1 in lengths and max(lengths) > 1


@pytest.mark.parametrize("k", [0, 2])
def test_one_token_prompts_join_a_running_batch(models, k):
    s_tok = models[1]
    long = requests(models, 2)
    short = [Request("s", 10 + i, [s_tok.convert_tokens_to_ids("<think>")], seed=50 + i) for i in range(2)]
    reqs = [long[0], short[0], long[1], short[1]]
    batched = by_index(make_engine(models, 2, speculate=k).run(reqs))
    for r in reqs:
        alone = next(make_engine(models, 1, speculate=k).run([r]))
        assert batched[r.sample_index].token_ids == alone.token_ids


@pytest.mark.parametrize("k", [0, 2])
def test_every_request_gets_a_trace_when_whole_batches_finish_at_their_prefill(models, k):
    """max_new_tokens=1: every admitted row finishes at its prefill, so the running batch empties at
    once; the engine must admit the next requests instead of returning (12 requests, batches of 5)."""
    reqs = [Request(f"q{i}", i, r.prompt_ids, seed=i) for i, r in enumerate(requests(models, 12))]
    traces = by_index(make_engine(models, 5, max_new_tokens=1, speculate=k).run(reqs))
    assert sorted(traces) == list(range(12))
    assert all(len(t.token_ids) == 1 for t in traces.values())


def test_every_request_gets_a_trace_when_a_whole_batch_is_too_long(models):
    reqs = requests(models, 6)
    short = min(len(r.prompt_ids) for r in reqs)
    # the first 3 prompts leave no room at all; the engine must still reach the last 3
    reqs = sorted(reqs, key=lambda r: -len(r.prompt_ids))
    engine = make_engine(models, 3, max_length=short + 2)
    traces = by_index(engine.run(reqs))
    assert sorted(traces) == sorted(r.sample_index for r in reqs)
    assert any(t.token_ids for t in traces.values())


def test_a_rule_that_never_accepts_costs_no_teacher_pass_and_emits_what_rsd_would(models, monkeypatch):
    """p_th > 1: the student alone, every token a fallback after all trials; and the very tokens the
    full RSD step emits (same per-sample draws), which the reference run computes with the teacher."""
    engine = make_engine(models, 4, threshold=1.5)
    fast = by_index(engine.run(requests(models)))
    assert engine.stats["teacher_forwards"] == 0 and engine.teacher is None
    for trace in fast.values():
        assert all(trace.fallbacks) and set(trace.trials) == {5}
    monkeypatch.setattr(AcceptanceRule, "never_accepts", property(lambda self: False))
    reference = make_engine(models, 4, threshold=1.5)
    slow = by_index(reference.run(requests(models)))
    assert reference.stats["teacher_forwards"] > 0
    assert {i: t.token_ids for i, t in fast.items()} == {i: t.token_ids for i, t in slow.items()}
