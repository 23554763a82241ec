"""The RSD step on each row's support gives what the dense step gives (same S, T, alpha, P)."""

import math

import pytest
import torch
from helpers import empirical, tv_bound
from reference import alpha as dense_alpha
from reference import probs_from_logits, proposal_probs, rsd_probs

from ownwords.rsd.sampling import AcceptanceRule, RawScores, rsd_sample, support_from_logits

V = 3000


def logits_batch(seed=0):
    """Flat, peaked and very peaked rows; rows with masked tokens; rows with ties (rounded logits)."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.3, 1.0, 3.0, 10.0, 3.0, 3.0])
    logits = torch.randn(len(scales), V, generator=gen) * scales[:, None]
    logits[4, torch.randperm(V, generator=gen)[: V // 2]] = -math.inf  # half the vocabulary masked
    logits[5] = (logits[5] * 2).round() / 2  # many exact ties, also at top-k boundaries
    return logits


SETTINGS = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_p=0.95),
    dict(temperature=0.7, top_p=0.3),
    dict(temperature=0.7, top_k=20),
    dict(temperature=0.7, top_k=20, top_p=0.9),
    dict(temperature=0.0),
    dict(logprobs="raw", top_k=20),
    dict(logprobs="raw"),
    dict(logprobs="processed", temperature=0.7, top_p=0.95, top_k=20),
    dict(logprobs="processed", temperature=0.7, top_k=5),
    dict(logprobs="processed", temperature=0.7, top_p=0.95),
]


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_support_is_the_dense_distribution(setting):
    logits = logits_batch()
    support = support_from_logits(logits, **setting)
    assert torch.allclose(support.dense(V), probs_from_logits(logits, **setting), atol=1e-6)


def test_a_rows_support_does_not_depend_on_its_batch_mates():
    logits = logits_batch()
    together = support_from_logits(logits, temperature=0.7, top_p=0.95)
    for i in range(len(logits)):
        alone = support_from_logits(logits[i : i + 1], temperature=0.7, top_p=0.95)
        width = alone.probs.shape[1]
        assert torch.equal(together.probs[i, :width], alone.probs[0])
        assert torch.equal(together.ids[i, :width], alone.ids[0])
        assert not together.probs[i, width:].any()


def test_a_peaked_row_is_found_without_touching_the_whole_vocabulary():
    logits = torch.full((1, 100_000), -20.0)
    logits[0, [7, 99_999, 500]] = torch.tensor([5.0, 4.0, 3.0])
    support = support_from_logits(logits, temperature=0.7, top_p=0.95)
    assert support.probs.shape[1] == 64  # the first top-k held the nucleus
    assert support.ids[0, :2].tolist() == [7, 99_999] and support.probs[0, 2:].sum() == 0


RULES = [
    AcceptanceRule("threshold", 0.01),
    AcceptanceRule("threshold", 0.001, top_k=20),
    AcceptanceRule("rank", 5),
    AcceptanceRule("nucleus", 0.8),
    AcceptanceRule("ratio"),
    AcceptanceRule("percentile", 0.3),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r.name}-{r.value}-{r.top_k}")
@pytest.mark.parametrize("score", ["raw", "processed"])
def test_rules_on_the_support_agree_with_the_dense_rules(rule, score):
    s_logits, t_logits = logits_batch(1)[:4] * 0.5, logits_batch(2)[:4]
    setting = dict(temperature=0.7, top_p=0.95)
    student, proposal = support_from_logits(s_logits, **setting), support_from_logits(t_logits, **setting)
    dense_t, dense_s = proposal.dense(V), student.dense(V)
    dense_score = s_logits.softmax(-1) if score == "raw" else dense_s
    expected = dense_alpha(rule, dense_score, dense_t).gather(-1, proposal.ids) * (proposal.probs > 0)
    scores = RawScores(s_logits) if score == "raw" else student
    got = rule.on_support(proposal, scores) * (proposal.probs > 0)
    assert torch.allclose(got, expected, atol=1e-6), f"{(got - expected).abs().max()}"
    assert torch.allclose(scores.at(proposal.ids), dense_score.gather(-1, proposal.ids), rtol=1e-4, atol=1e-7)


def test_sampling_on_the_support_follows_the_closed_form():
    n, trials = 20_000, 3
    gen = torch.Generator().manual_seed(5)
    s_logits, t_logits = torch.randn(1, 50, generator=gen) * 2, torch.randn(1, 50, generator=gen) * 2
    setting, rule = dict(temperature=0.8, top_p=0.9), AcceptanceRule("threshold", 0.02)
    student, proposal = support_from_logits(s_logits, **setting), support_from_logits(t_logits, **setting)
    alpha = rule.on_support(proposal, RawScores(s_logits))
    u = torch.rand(n, 2 * trials + 1, generator=gen, dtype=torch.float64)
    rows = lambda x: x.expand(n, -1)  # noqa: E731
    tokens, _, _ = rsd_sample(
        rows(proposal.probs),
        rows(alpha),
        rows(student.probs),
        trials,
        u,
        rows(proposal.ids),
        rows(student.ids),
    )
    dense_t = proposal.dense(50)
    expected = rsd_probs(dense_t, dense_alpha(rule, s_logits.softmax(-1), dense_t), student.dense(50), trials)[0]
    tv = 0.5 * (empirical(tokens, 50) - expected).abs().sum().item()
    assert tv < tv_bound(n, support=int((expected > 0).sum())), f"TV {tv:.4f}"


@pytest.mark.parametrize("ids", ["prefix", "permuted"])
@pytest.mark.parametrize(
    "setting",
    [
        dict(temperature=0.7),
        dict(temperature=0.7, top_p=0.9),
        dict(logprobs="raw", top_k=5),
        dict(logprobs="processed", top_k=5, top_p=0.9),
    ],
    ids=str,
)
def test_the_proposal_on_its_support_is_the_dense_proposal(ids, setting):
    """T from teacher logits (padded columns, teacher-only and student-only tokens) on its support
    equals the dense T, for an alignment whose shared tokens are a common prefix and for one that is not."""
    from ownwords.decoding.engine import Sampling, proposal_support
    from ownwords.rsd.vocab import VocabAlignment

    gen = torch.Generator().manual_seed(3)
    shared = 40  # student 48 tokens (8 student-only), teacher 44 (4 teacher-only), teacher logits 50 wide
    teacher_ids = torch.arange(shared) if ids == "prefix" else torch.randperm(44, generator=gen)[:shared]
    alignment = VocabAlignment(48, 44, torch.arange(shared), teacher_ids, None, None)
    assert bool(alignment.shared_prefix) == (ids == "prefix")
    sampling = Sampling(**{"temperature": 1.0, "top_p": 1.0, **setting})
    t_logits = torch.randn(6, 50, generator=gen) * 3
    dense = proposal_probs(t_logits, sampling, alignment)
    assert torch.allclose(proposal_support(t_logits, sampling, alignment).dense(48), dense, atol=1e-6)


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_the_support_follows_its_rows_in_any_order(setting):
    """Rows whose nucleus is wide (and so are widened) sit anywhere in the batch: a row's support is
    its own wherever it is (a widening that re-reads the first rows instead of its own is wrong by up
    to 1.0 in probability)."""
    logits = logits_batch()
    order = torch.tensor([3, 5, 0, 4, 1, 2])  # the flat row (0) is no longer first
    straight = support_from_logits(logits, **setting).dense(V)
    permuted = support_from_logits(logits[order], **setting).dense(V)
    assert torch.allclose(permuted, straight[order], atol=1e-6)
    assert torch.allclose(permuted, probs_from_logits(logits[order], **setting), atol=1e-6)
