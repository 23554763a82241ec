"""Speculative RSD in the engine: same distribution as plain RSD, ragged batches done right."""

import pytest
import torch
from test_sampling import empirical, tv_bound

from ownwords.engine import RSD, Engine, Request, Sampling
from ownwords.lm import load_pair
from ownwords.sampling import AcceptanceRule, rsd_probs
from ownwords.tiny import STUDENT, TinySpec, make_tiny_pair


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small pair (2-layer teacher) so thousands of samples stay cheap."""
    t_dir, s_dir = make_tiny_pair(
        tmp_path_factory.mktemp("small"), teacher=TinySpec("qwen3", 128, 2, 4, 2, 256), student=STUDENT
    )
    return load_pair(str(t_dir), str(s_dir), "cpu", "float32")


def engine(models, k, threshold=0.01, batch_size=8, max_new_tokens=20, temperature=1.0):
    student, s_tok, teacher, alignment = models
    rsd = RSD(AcceptanceRule("threshold", threshold), trials=3)
    return Engine(
        student,
        s_tok,
        teacher,
        alignment,
        Sampling(temperature, 0, 1.0),
        rsd,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        speculate=k,
    )


def prompts(models, n):
    s_tok = models[1]
    think = s_tok.convert_tokens_to_ids("<think>")  # student-only: the teacher sees it as several tokens
    base = s_tok.encode(
        "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
    )
    return [base[: len(base) - (i % 3)] + ([think] if i % 2 else []) for i in range(n)]


def by_index(traces):
    return {t.request.sample_index: t for t in traces}


@pytest.mark.parametrize("k", [1, 3])
def test_rows_in_a_ragged_batch_match_rows_alone(small, k):
    reqs = [Request("q", i, p, seed=100 + i) for i, p in enumerate(prompts(small, 8))]
    alone = by_index(t for r in reqs for t in engine(small, k, batch_size=1).run([r]))
    batch_engine = engine(small, k, batch_size=8)
    together = by_index(batch_engine.run(reqs))
    refilled = by_index(engine(small, k, batch_size=3).run(reqs))
    for i in alone:
        assert together[i].token_ids == alone[i].token_ids, f"row {i} changed in a batch"
        assert refilled[i].token_ids == alone[i].token_ids, f"row {i} changed in a refilled batch"
        assert together[i].fallbacks == alone[i].fallbacks and together[i].trials == alone[i].trials
    stats = batch_engine.stats
    assert 0 < stats["accepted"] < stats["drafted"], "rows must accept different numbers of drafts"
    assert stats["teacher_forwards"] < stats["tokens"]


def test_records_keep_the_rsd_invariant(small):
    for trace in engine(small, 3, threshold=0.01).run(
        [Request("q", i, p, 7 + i) for i, p in enumerate(prompts(small, 6))]
    ):
        assert len(trace.token_ids) == len(trace.scores) == len(trace.fallbacks) == len(trace.trials)
        for score, fallback, tried in zip(trace.scores, trace.fallbacks, trace.trials):
            assert (score >= 0.01 and 1 <= tried <= 3) if not fallback else tried == 3


def exact_first_token(models, prompt, threshold, temperature):
    """P for the first generated token, from one forward of each model and the closed form."""
    student, s_tok, teacher, alignment = models
    sampling = Sampling(temperature, 0, 1.0)
    with torch.no_grad():
        s_logits = student(torch.tensor([prompt])).logits[:, -1, : alignment.student_size]
        t_logits = teacher(torch.tensor([alignment.to_teacher(prompt)])).logits[:, -1]
    proposal = sampling.probs(alignment.teacher_logits_to_student(t_logits))
    alpha = AcceptanceRule("threshold", threshold)(s_logits.softmax(-1), proposal)
    return rsd_probs(proposal, alpha, sampling.probs(s_logits), trials=3)[0]


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.01])
def test_first_tokens_follow_the_closed_form(small, k, threshold):
    n, temperature = 3000, 0.5
    prompt = prompts(small, 1)[0]
    exact = exact_first_token(small, prompt, threshold, temperature)
    eng = engine(small, k, threshold, batch_size=500, max_new_tokens=1, temperature=temperature)
    eng._plain = eng._block  # with K = 0 the speculative block has no drafts: one token straight from P
    reqs = [Request("q", i, prompt, seed=i) for i in range(n)]
    first = torch.tensor([t.token_ids[0] for t in eng.run(reqs)])
    support = int((exact > 1e-4).sum())
    tv = 0.5 * (empirical(first, len(exact)) - exact).abs().sum().item()
    assert tv < tv_bound(n, support), f"TV {tv:.3f} (support {support})"
    plain = engine(small, 0, threshold, batch_size=500, max_new_tokens=1, temperature=temperature)
    first_plain = torch.tensor([t.token_ids[0] for t in plain.run(reqs)])
    tv_plain = 0.5 * (empirical(first_plain, len(exact)) - exact).abs().sum().item()
    assert tv_plain < tv_bound(n, support), f"plain RSD TV {tv_plain:.3f}"
