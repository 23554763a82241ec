"""The speculative verify step (on supports, as the engine runs it) emits P exactly; its records match
the trial procedure's."""

import pytest
import torch
from helpers import A, S, T, empirical, tv_bound
from reference import alpha as dense_alpha
from reference import rsd_probs

from ownwords.rsd.sampling import (
    AcceptanceRule,
    Support,
    rsd_explain,
    rsd_sample,
    rsd_target,
    sample_from,
    speculative_verify_support,
)

RULE = AcceptanceRule("threshold", 0.01)
P = rsd_probs(T, dense_alpha(RULE, A, T), S, trials=3)[0]  # [5] float64, the target


def everywhere(probs: torch.Tensor, rows: int) -> Support:
    """A hand-made distribution on all 5 tokens, at `rows` positions."""
    return Support(probs.float().expand(rows, -1), torch.arange(5).expand(rows, -1), probs.log().expand(rows, -1))


def block(n, k, gen, accept=True):
    """n independent blocks of K drafts from S verified against P (the same at every position); with
    accept False nothing is accepted, so P = S."""
    u = torch.rand(n, 2 * k + 1, generator=gen, dtype=torch.float64)
    draft = sample_from(S.expand(n, -1), u[:, :k]) if k else torch.zeros(n, 0, dtype=torch.long)
    rows = n * (k + 1)
    proposal, student = everywhere(T[0], rows), everywhere(S[0], rows)
    alpha = RULE.on_support(proposal, everywhere(A[0], rows)) if accept else torch.zeros(rows, 5)
    targets = rsd_target(proposal, alpha, student, trials=3)
    accepted, final = speculative_verify_support(targets, S[0][draft], draft, u[:, k:])
    return draft, accepted, final


@pytest.mark.parametrize("k", [0, 1, 3])
def test_first_emitted_token_is_distributed_as_p(k):
    n = 50_000
    draft, accepted, final = block(n, k, torch.Generator().manual_seed(k))
    first = torch.where(accepted > 0, draft[:, 0] if k else final, final)
    tv = 0.5 * (empirical(first, 5) - P).abs().sum().item()
    assert tv < tv_bound(n, 5), f"TV {tv:.4f}"


def test_consecutive_tokens_are_independent_draws_from_p():
    """Token streams across blocks (accepted drafts, recovered and bonus tokens) are i.i.d. P here."""
    n, k = 50_000, 2
    draft, accepted, final = block(n, k, torch.Generator().manual_seed(11))
    draft2, accepted2, final2 = block(n, k, torch.Generator().manual_seed(12))  # the next block
    first = torch.where(accepted > 0, draft[:, 0], final)
    # second token: the next draft if two were accepted... or the final of this block, or the next block's first
    second = torch.where(
        accepted > 1,
        draft[:, 1],
        torch.where(accepted == 1, final, torch.where(accepted2 > 0, draft2[:, 0], final2)),
    )
    pairs = first * 5 + second
    expected = torch.outer(P, P).flatten()
    tv = 0.5 * (empirical(pairs, 25) - expected).abs().sum().item()
    assert tv < tv_bound(n, 25), f"TV {tv:.4f}"


def test_draft_equal_to_target_is_always_accepted():
    n, k = 1000, 4
    _, accepted, _ = block(n, k, torch.Generator().manual_seed(3), accept=False)
    assert (accepted == k).all()


def test_records_match_the_trial_procedure():
    n, trials = 60_000, 3
    gen = torch.Generator().manual_seed(5)
    alpha = dense_alpha(RULE, A, T)
    # trial procedure: joint (token, fallback) and the trials distribution
    u = torch.rand(n, 2 * trials + 1, generator=gen, dtype=torch.float64)
    tok, fb, tried = rsd_sample(T.expand(n, -1), alpha.expand(n, -1), S.expand(n, -1), trials, u)
    # speculative path: token from P, then records drawn from their conditional distribution
    x = sample_from(P.expand(n, -1), torch.rand(n, 1, generator=gen, dtype=torch.float64)).squeeze(-1)
    m = (T * alpha).sum().double().expand(n)
    fb2, tried2 = rsd_explain(m, S[0][x], P[x], trials, torch.rand(n, 2, generator=gen, dtype=torch.float64))
    joint = empirical(tok * 2 + fb.long(), 10)
    joint2 = empirical(x * 2 + fb2.long(), 10)
    assert 0.5 * (joint - joint2).abs().sum().item() < 2 * tv_bound(n, 10)
    assert 0.5 * (empirical(tried, 4) - empirical(tried2, 4)).abs().sum().item() < 2 * tv_bound(n, 4)
    # a token the student scores under p_th can only be a fallback
    low = A[0] < 0.01
    assert fb2[low[x]].all()
