"""Ties at a cut: one rule that depends on the values only, applied alike by the support form (plain
RSD) and the dense form (speculative verification, the test oracle), whatever the column order."""

import math

import pytest
import torch
from reference import alpha as dense_alpha
from reference import probs_from_logits

from ownwords.rsd.sampling import AcceptanceRule, RawScores, support_from_logits

VOCAB = 151_936  # Qwen3's logits width


def the_audits_logits() -> torch.Tensor:
    """One logit of 3.0 above 63 logits of exactly 1.0 (the audit's reproduction)."""
    logits = torch.ones(1, 64)
    logits[0, 0] = 3.0
    return logits


def bfloat16_logits(rows: int, vocab: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    """Random logits rounded to bfloat16, as a bfloat16 model's are: many exact ties near the top."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, vocab, generator=gen) * scale).bfloat16().float()


def test_the_audits_reproduction_keeps_one_set_in_both_forms():
    logits = the_audits_logits()
    dense = probs_from_logits(logits, 1.0, top_k=5, top_p=0.5)
    support = support_from_logits(logits, 1.0, top_k=5, top_p=0.5)
    # top-k 5 keeps every logit tied with the 5th (all 64); the nucleus starts the tied group at mass
    # 0.105 < 0.5, so the whole group is inside: the law is the plain softmax
    assert bool((dense > 0).all())
    assert torch.equal(support.dense(64) > 0, dense > 0)
    assert torch.allclose(support.dense(64), dense, atol=1e-7)
    assert torch.allclose(dense, logits.softmax(-1), atol=1e-7)


def test_a_top_p_cut_inside_a_tie_group_keeps_the_whole_group():
    logits = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]])
    for top_p in (0.5, 0.6, 0.8):  # the top token holds 0.42 of the mass: the tied group joins
        expected = logits[:, :4].softmax(-1)
        for probs in (probs_from_logits(logits, top_p=top_p), support_from_logits(logits, top_p=top_p).dense(5)):
            assert torch.allclose(probs[:, :4], expected, atol=1e-7) and probs[0, 4] == 0
    assert torch.equal(probs_from_logits(logits, top_p=0.3) > 0, torch.tensor([[True, False, False, False, False]]))


def test_greedy_is_uniform_over_the_tied_maxima():
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, -math.inf, 1.0, 5.0]])
    expected = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.5, 0.0, 0.0, 0.5]])
    assert torch.equal(probs_from_logits(logits, temperature=0), expected)
    assert torch.equal(support_from_logits(logits, temperature=0).dense(4), expected)
    nothing = torch.full((1, 3), -math.inf)  # no token at all: nothing to propose
    assert not probs_from_logits(nothing, temperature=0).any()
    assert not support_from_logits(nothing, temperature=0).dense(3).any()


TIED_RULES = [
    (AcceptanceRule("nucleus", 0.5), [True] * 64),  # the tied group starts at 0.105: all inside
    (AcceptanceRule("rank", 5), [True] * 64),  # all 63 are tied with the 5th
    (AcceptanceRule("percentile", 0.5), [True] + [False] * 63),  # 63 tied lowest, below them: 0
    (AcceptanceRule("threshold", 0.001, top_k=2), [True] * 64),
]


@pytest.mark.parametrize("rule,accepted", TIED_RULES, ids=lambda r: getattr(r, "name", ""))
def test_rules_over_tied_scores_accept_a_group_together_in_both_forms(rule, accepted):
    logits = the_audits_logits()
    proposal = support_from_logits(torch.zeros(1, 64))  # uniform: every token proposed
    dense = dense_alpha(rule, logits.softmax(-1), proposal.dense(64), logits)
    on_support = torch.zeros(1, 64).scatter_(-1, proposal.ids, rule.on_support(proposal, RawScores(logits)))
    assert dense[0].bool().tolist() == accepted
    assert torch.equal(on_support, dense)


SETTINGS = [
    dict(temperature=1.0, top_k=50, top_p=0.9),
    dict(temperature=0.7, top_p=0.9),
    dict(temperature=0.7, top_k=20),
    dict(temperature=0.0),
    dict(logprobs="raw", top_k=20),
    dict(logprobs="processed", temperature=0.7, top_p=0.95, top_k=20),
    dict(logprobs="processed", temperature=0.7, top_k=5),
]


def permutation(vocab: int, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    forward = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed))
    return forward, forward.argsort()


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_bfloat16_logits_give_one_law_in_both_forms_and_in_any_column_order(setting):
    """At a real vocabulary with bfloat16-rounded logits nearly every row has ties at its cut (the
    audit: 15 of 16 rows kept different sets at top-k 50 / top-p 0.9)."""
    logits = bfloat16_logits(16, VOCAB, seed=0)
    dense = probs_from_logits(logits, **setting)
    support = support_from_logits(logits, **setting).dense(VOCAB)
    forward, back = permutation(VOCAB)
    permuted_support = support_from_logits(logits[:, forward], **setting).dense(VOCAB)[:, back]
    permuted_dense = probs_from_logits(logits[:, forward], **setting)[:, back]
    for law in (support, permuted_support, permuted_dense):
        assert torch.equal(law > 0, dense > 0), "another set of tokens kept"
        assert torch.allclose(law, dense, atol=1e-6)


RULES = [
    AcceptanceRule("rank", 20),
    AcceptanceRule("nucleus", 0.6),
    AcceptanceRule("percentile", 0.3),
    AcceptanceRule("threshold", 1e-4, top_k=20),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.name}-{r.value}-{r.top_k}")
@pytest.mark.parametrize("score", ["raw", "processed"])
def test_rules_over_bfloat16_scores_agree_in_both_forms_and_in_any_column_order(rule, score):
    vocab, setting = 20_000, dict(temperature=1.0, top_k=200, top_p=0.95)
    s_logits, t_logits = bfloat16_logits(8, vocab, seed=1), bfloat16_logits(8, vocab, seed=2, scale=2.0)
    forward, back = permutation(vocab)

    def alpha(s, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(on the support, dense) alpha [B, V] for student and teacher logits s, t."""
        student, proposal = support_from_logits(s, **setting), support_from_logits(t, **setting)
        scores = RawScores(s) if score == "raw" else student
        got = torch.zeros_like(s).scatter_(-1, proposal.ids, rule.on_support(proposal, scores) * (proposal.probs > 0))
        dense_s = s.softmax(-1) if score == "raw" else student.dense(vocab)
        dense_t = proposal.dense(vocab)
        expected = dense_alpha(rule, dense_s, dense_t, s.masked_fill(dense_s == 0, -math.inf)) * (dense_t > 0)
        return got, expected

    got, expected = alpha(s_logits, t_logits)
    assert torch.equal(got, expected)
    permuted_got, permuted_expected = alpha(s_logits[:, forward], t_logits[:, forward])
    assert torch.equal(permuted_got[:, back], got) and torch.equal(permuted_expected[:, back], expected)
