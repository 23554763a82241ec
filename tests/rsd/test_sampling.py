import math

import pytest
import torch
from helpers import A, S, T, empirical, tv_bound
from reference import alpha as dense_alpha
from reference import probs_from_logits, rsd_probs

from ownwords.rsd.sampling import AcceptanceRule, rsd_sample, sample_from, uniforms_for


def test_probs_from_logits_filters():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    assert torch.allclose(probs_from_logits(logits), torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    assert torch.allclose(probs_from_logits(logits, top_k=2), torch.tensor([[4 / 7, 3 / 7, 0, 0]]))
    # top-p 0.6: 0.4 alone is below 0.6, so 0.3 joins; 0.2 starts at mass 0.7 and is cut.
    assert torch.allclose(probs_from_logits(logits, top_p=0.6), torch.tensor([[4 / 7, 3 / 7, 0, 0]]))
    assert torch.equal(probs_from_logits(logits, temperature=0), torch.tensor([[1.0, 0, 0, 0]]))
    hot = probs_from_logits(logits, temperature=2.0)
    assert torch.allclose(
        hot, torch.tensor([[0.4, 0.3, 0.2, 0.1]]).sqrt() / torch.tensor([0.4, 0.3, 0.2, 0.1]).sqrt().sum()
    )
    masked = probs_from_logits(torch.tensor([[0.0, -math.inf, 0.0]]))
    assert torch.equal(masked, torch.tensor([[0.5, 0.0, 0.5]]))


def test_sample_from_never_returns_zero_probability_tokens():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]])
    u = torch.tensor([[0.0, 0.25, 0.5, 0.999999999]], dtype=torch.float64)
    assert sample_from(probs, u).tolist() == [[1, 1, 3, 3]]


def test_threshold_rule_and_top_k():
    rule = AcceptanceRule("threshold", 0.01)
    assert dense_alpha(rule, A, T).tolist() == [[0, 1, 1, 0, 1]]
    assert dense_alpha(AcceptanceRule("threshold", 0.01, top_k=2), A, T).tolist() == [[0, 1, 0, 0, 1]]


def test_rank_nucleus_ratio_percentile_rules():
    assert dense_alpha(AcceptanceRule("rank", 2), A, T).tolist() == [[0, 1, 0, 0, 1]]
    # nucleus 0.9: 0.5 then 0.47 (mass before 0.5 < 0.9) then 0.02 (mass before 0.97): cut.
    assert dense_alpha(AcceptanceRule("nucleus", 0.9), A, T).tolist() == [[0, 1, 0, 0, 1]]
    ratio = dense_alpha(AcceptanceRule("ratio"), A, T)
    assert torch.allclose(ratio, torch.tensor([[0.01, 1.0, 0.2, 0.05, 0.0]]))
    # Scores ascending: tokens 0 and 3 (tied at 0.005: one group), 2, 4, 1. Proposal mass strictly
    # below each: 0 -> 0.0, 3 -> 0.0, 2 -> 0.6, 4 -> 0.7, 1 -> 0.7. Percentile 0.55 rejects 0 and 3.
    assert dense_alpha(AcceptanceRule("percentile", 0.55), A, T).tolist() == [[0, 1, 1, 0, 1]]
    assert dense_alpha(AcceptanceRule("percentile", 0.0), A, T).tolist() == [[1, 1, 1, 1, 1]]


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("bogus", 0.1, "unknown"),
        ("threshold", -0.1, "threshold >= 0"),
        ("nucleus", 0.0, "(0, 1]"),
        ("rank", 2.5, "whole number"),
        ("percentile", 1.5, "[0, 1]"),
    ],
)
def test_rule_validation(name, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        AcceptanceRule(name, value)


def test_closed_form_by_hand():
    alpha = dense_alpha(AcceptanceRule("threshold", 0.01), A, T)  # accepts tokens 1, 2, 4
    # T(A) = 0.3 + 0.1 + 0 = 0.4; with N = 2: miss = 0.36, accepted scale = 0.64 / 0.4 = 1.6.
    expected = torch.tensor([[0.036, 0.48 + 0.036, 0.16 + 0.072, 0.072, 0.144]], dtype=torch.float64)
    p = rsd_probs(T, alpha, S, trials=2)
    assert torch.allclose(p, expected)
    assert p.sum().item() == pytest.approx(1.0)


def test_closed_form_degenerate_cases():
    none = torch.zeros_like(T)
    assert torch.allclose(rsd_probs(T, none, S, trials=5), S.double())  # m = 0: no NaN, pure fallback
    assert torch.allclose(rsd_probs(T, torch.ones_like(T), S, trials=1), T.double())


@pytest.mark.parametrize("trials", [1, 3])
@pytest.mark.parametrize(
    "rule", [AcceptanceRule("threshold", 0.01), AcceptanceRule("ratio"), AcceptanceRule("percentile", 0.3)]
)
def test_trial_sampler_matches_closed_form(trials, rule):
    n = 40_000
    gen = torch.Generator().manual_seed(1234)
    teacher, student, score = (x.expand(n, -1) for x in (T, S, A))
    u = torch.rand(n, 2 * trials + 1, generator=gen, dtype=torch.float64)
    tokens, fallback, tried = rsd_sample(teacher, dense_alpha(rule, score, teacher), student, trials, u)
    expected = rsd_probs(T, dense_alpha(rule, A, T), S, trials)[0]
    tv = 0.5 * (empirical(tokens, 5) - expected).abs().sum().item()
    assert tv < tv_bound(n, support=5), f"TV {tv:.4f} over {n} draws"
    # Book-keeping: fallback exactly when all trials were used and none accepted.
    m = (T * dense_alpha(rule, A, T)).sum().item()
    assert fallback.double().mean().item() == pytest.approx((1 - m) ** trials, abs=4 / math.sqrt(n))
    assert bool((tried[~fallback] <= trials).all()) and bool((tried[fallback] == trials).all())


def test_threshold_zero_is_teacher_sampling_and_above_one_is_student_sampling():
    n = 64
    gen = torch.Generator().manual_seed(7)
    u = torch.rand(n, 5, generator=gen, dtype=torch.float64)
    teacher, student, score = (x.expand(n, -1) for x in (T, S, A))
    tok0, fb0, _ = rsd_sample(teacher, dense_alpha(AcceptanceRule("threshold", 0.0), score, teacher), student, 2, u)
    assert torch.equal(tok0, sample_from(teacher, u[:, :1]).squeeze(-1)) and not fb0.any()
    tok2, fb2, _ = rsd_sample(teacher, dense_alpha(AcceptanceRule("threshold", 1.5), score, teacher), student, 2, u)
    assert torch.equal(tok2, sample_from(student, u[:, -1:]).squeeze(-1)) and fb2.all()
    assert torch.allclose(rsd_probs(T, dense_alpha(AcceptanceRule("threshold", 0.0), A, T), S, 2), T.double())
    assert torch.allclose(rsd_probs(T, dense_alpha(AcceptanceRule("threshold", 1.5), A, T), S, 2), S.double())


def test_uniforms_are_per_generator():
    a = uniforms_for([torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], 3)
    b = uniforms_for([torch.Generator().manual_seed(2)], 3)
    assert a.dtype == torch.float64 and torch.equal(a[1], b[0])


def test_top_p_matches_a_full_sort_nucleus():
    def full_sort(logits, p):
        probs = logits.softmax(-1)
        sorted_probs, order = probs.sort(-1, descending=True)
        sorted_probs = sorted_probs.masked_fill(sorted_probs.cumsum(-1) - sorted_probs >= p, 0.0)
        out = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        return out / out.sum(-1, keepdim=True)

    gen = torch.Generator().manual_seed(0)
    # flat rows need the full vocabulary, peaked rows a few tokens; mixed in one batch, rows finish apart
    scales = torch.tensor([0.3, 3.0, 10.0, 1.0]).repeat_interleave(3)[torch.randperm(12, generator=gen)]
    logits = torch.randn(12, 1000, generator=gen) * scales[:, None]
    for p in (0.3, 0.9, 0.999):
        assert torch.allclose(probs_from_logits(logits, top_p=p), full_sort(logits, p))


def test_a_row_with_no_proposal_falls_back_to_the_student():
    """T = 0 everywhere (none of the teacher's listed tokens is shared): nothing can be accepted,
    even where alpha is 1, and the token comes from S."""
    n = 500
    proposal = torch.zeros(n, 5)
    u = torch.rand(n, 2 * 3 + 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    tokens, fallback, tried = rsd_sample(proposal, torch.ones(n, 5), S.expand(n, -1), 3, u)
    assert fallback.all() and (tried == 3).all()
    assert torch.equal(tokens, sample_from(S.expand(n, -1), u[:, -1:]).squeeze(-1))
