"""The RSD step, exactly (DESIGN §2). Imports only torch.

Words, defined once. Every distribution lives on the *student's* vocabulary, shape [B, V]:

* proposal ``T`` -- the teacher's sampling distribution, restricted to tokens both models share.
* student ``S`` -- the student's sampling distribution; fallback tokens and drafts are drawn from it.
* score ``a`` -- the student's acceptance score of a token (by default its plain softmax probability).
* ``alpha`` -- the probability that a proposed token is accepted, from an :class:`AcceptanceRule`
  (0 or 1 for the deterministic rules, ``min(1, a/T)`` for ``ratio``).
* trial -- one proposal drawn from ``T`` and tested against ``alpha``; up to ``trials`` per position.
* fallback -- no trial was accepted, so the student drew the token from ``S``.
* ``P`` -- what one RSD step emits. With ``m = sum_x T(x) alpha(x)`` (the mass that would be accepted):

      P(x) = T(x) alpha(x) (1 - (1 - m)^N) / m  +  (1 - m)^N S(x)

Randomness always comes in as uniforms drawn by the caller from per-sample generators
(float64, so a draw is never rounded onto a bucket edge); nothing here touches global RNG state.

Ties. Every cut -- top-k, top-p, the rank, nucleus and percentile rules, acceptance top-k, greedy --
depends on the values only, never on the order of token ids or on which kernel sorted them: tokens
whose sort key is equal form a *tie group*, and a group is cut as one token would be. Top-k keeps
every token whose key is >= the k-th (as HF's top-k does); top-p and the nucleus rule close after the
whole group that reaches the mass (a token is kept when the mass of the tokens with a strictly
greater key is under top-p); rank and acceptance top-k accept a group tied at the k-th together;
percentile accepts a group when the proposal mass of the tokens with a strictly lower score reaches
the fraction; greedy (temperature 0) is the limit of temperature -> 0, uniform over the tied
maxima. The key is the logit (a token's place in the order), not its probability: equal logits
may round to probabilities an ulp apart in different SIMD lanes, equal keys never differ. bfloat16
logits tie often (8 bits of mantissa), so this decides real laws.

Everything here works on each row's support (the tokens left after top-k / top-p): plain RSD and the
speculative verification alike, one production path. The same step written densely over the whole
vocabulary is the tests' reference oracle (tests/reference.py), not code the engine runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import LOGPROBS, RULES  # noqa: F401 (the names, kept apart from the math for torch-free configs)


def mass_before_group(mass: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """mass, keys [B, K], sorted by key (either direction) -> [B, K]: the mass of the entries before
    each entry's tie group (the entries with a strictly greater key, sorted descending), so that a
    group is always cut as a whole."""
    before = mass.cumsum(-1) - mass
    position = torch.arange(keys.shape[-1], device=keys.device).expand_as(keys)
    starts = torch.ones_like(keys, dtype=torch.bool)
    starts[:, 1:] = keys[:, 1:] != keys[:, :-1]
    first = torch.where(starts, position, 0).cummax(-1).values  # [B, K] where each entry's group begins
    return before.gather(-1, first)


def sample_from(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws: probs [B, V], uniforms [B, n] in [0, 1) (float64) -> token ids [B, n].

    A token with zero probability is never returned (``right=True`` skips flat steps of the CDF).
    """
    cdf = probs.double().cumsum(-1)  # [B, V]
    targets = uniforms.to(cdf) * cdf[:, -1:]  # [B, n], strictly below the total mass
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class AcceptanceRule:
    """Which proposals the student accepts: ``alpha(score, proposal)`` in [0, 1], shape [B, V].

    * ``threshold`` -- accept if ``a(x) >= value`` (the paper's p_th; 0 accepts all, > 1 none).
    * ``rank`` -- accept if x is among the student's ``value`` most likely tokens.
    * ``nucleus`` -- accept if x is inside the student's top-p set of mass ``value``.
    * ``ratio`` -- accept with probability ``min(1, a(x) / T(x))`` (no value).
    * ``percentile`` -- reject the ``value`` fraction of proposal mass that the student scores lowest.

    ``top_k`` > 0 additionally requires x to be among the student's top-k (the paper's code does so).
    """

    name: str = "threshold"
    value: float = 0.01
    top_k: int = 0

    @property
    def never_accepts(self) -> bool:
        """No token can pass (a probability never reaches a threshold > 1): P = S, no teacher needed."""
        return self.name == "threshold" and self.value > 1

    def __post_init__(self) -> None:
        if self.name not in RULES:
            raise ValueError(f"acceptance rule {self.name!r} is unknown; expected one of {', '.join(RULES)}")
        if self.top_k < 0:
            raise ValueError(f"acceptance top_k must be >= 0 (0 = off), got {self.top_k}")
        allowed = {
            "threshold": (self.value >= 0, "a threshold >= 0 (values > 1 give plain student sampling)"),
            "rank": (self.value >= 1 and float(self.value).is_integer(), "a whole number of tokens >= 1"),
            "nucleus": (0 < self.value <= 1, "a probability mass in (0, 1]"),
            "ratio": (True, ""),
            "percentile": (0 <= self.value <= 1, "a fraction in [0, 1]"),
        }
        ok, expected = allowed[self.name]
        if not ok:
            raise ValueError(f"acceptance rule {self.name!r} got value {self.value}; expected {expected}")

    def on_support(self, proposal: Support, scores) -> torch.Tensor:
        """alpha [B, K] at the proposal's support tokens: ``__call__`` on the dense tensors, read there.
        scores: the student's acceptance score (:class:`RawScores` or S as a :class:`Support`)."""
        score, t = scores.at(proposal.ids), proposal.probs
        if self.name == "threshold":
            alpha = (score >= self.value).float()
        elif self.name == "ratio":
            alpha = torch.where(t > 0, (score / t.clamp_min(1e-30)).clamp(max=1.0), 0.0)
        elif self.name == "rank":
            alpha = _member(proposal.ids, *scores.top(int(self.value)))
        elif self.name == "nucleus":
            alpha = _member(proposal.ids, *scores.nucleus(self.value))
        else:  # percentile: the proposal's tokens by score key, lowest first
            alpha = _percentile(t, scores.key_at(proposal.ids), self.value)
        if self.top_k:
            alpha = alpha * _member(proposal.ids, *scores.top(self.top_k))
        return alpha


def _percentile(proposal: torch.Tensor, key: torch.Tensor, fraction: float) -> torch.Tensor:
    """Accept a token once the proposal mass of the tokens with a strictly lower score key reaches
    the fraction (a tie group together). proposal, key [B, K] -> alpha [B, K]."""
    keys, order = key.sort(-1)  # lowest score first
    below = mass_before_group(proposal.gather(-1, order), keys)
    inside = below >= fraction - 1e-7  # float32 cumsum tolerance
    return torch.zeros_like(proposal).scatter_(-1, order, inside.float())


def rsd_sample(
    proposal: torch.Tensor,
    alpha: torch.Tensor,
    student: torch.Tensor,
    trials: int,
    uniforms: torch.Tensor,
    proposal_ids: torch.Tensor | None = None,
    student_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The trial procedure. uniforms [B, 2 * trials + 1] (float64): per trial one for the proposal and
    one for the acceptance coin, and the last one for the fallback draw (always consumed, so a row's
    random stream never depends on what happened). proposal / alpha [B, Kt] and student [B, Ks] are
    dense over the vocabulary, or on supports whose token ids are ``proposal_ids`` / ``student_ids``.

    Returns tokens [B] (long), fallback [B] (bool), tried [B] (long, trials used).
    """
    candidates = sample_from(proposal, uniforms[:, :trials])  # [B, N], positions in proposal
    coins = uniforms[:, trials : 2 * trials]  # [B, N]
    accepted = coins < alpha.gather(-1, candidates).double()  # [B, N]
    # a candidate with T = 0 comes only from a row with no proposal at all (none of T's tokens shared)
    accepted &= proposal.gather(-1, candidates) > 0
    fallback = ~accepted.any(-1)  # [B]
    first = accepted.long().argmax(-1)  # [B]; first accepted trial (0 when none)
    drawn = sample_from(student, uniforms[:, -1:])  # [B, 1], a position in student
    if student_ids is not None:
        drawn = student_ids.gather(-1, drawn)
    chosen = candidates.gather(-1, first[:, None])  # [B, 1]
    if proposal_ids is not None:
        chosen = proposal_ids.gather(-1, chosen)
    tokens = torch.where(fallback, drawn.squeeze(-1), chosen.squeeze(-1))
    tried = torch.where(fallback, torch.full_like(first, trials), first + 1)
    return tokens, fallback, tried


def uniforms_for(generators: list[torch.Generator], n: int) -> torch.Tensor:
    """[B, n] float64 uniforms, row i drawn from generators[i] (CPU generators: a sample's stream is
    the same on every device and in every batch)."""
    return torch.stack([torch.rand(n, generator=g, dtype=torch.float64) for g in generators])


class Target(NamedTuple):
    """P, what one RSD step emits, on the union of T's and S's supports: the first Kt columns are T's
    support (P = T alpha scale + miss S there), the rest S's tokens outside it (P = miss S). probs
    [n, Kt + Ks] (float64), ids [n, Kt + Ks]; mass [n] (m = sum T alpha); student_at_t [n, Kt]."""

    probs: torch.Tensor
    ids: torch.Tensor
    mass: torch.Tensor
    student_at_t: torch.Tensor

    def at(self, query: torch.Tensor) -> torch.Tensor:
        """P of tokens query [n, q] -> [n, q] (float64)."""
        return _lookup(self.ids, self.probs, self.probs > 0, query)

    def residual(self) -> torch.Tensor:
        """max(0, P - S) [n, Kt] on T's support: off it P = miss S <= S."""
        width = self.student_at_t.shape[-1]
        return (self.probs[:, :width] - self.student_at_t.double()).clamp(min=0.0)


def stack_supports(supports: list[Support]) -> Support:
    """Supports [B, W_j] of K+1 positions -> one [B(K+1), W] (row-major: a row's positions together),
    zero-padded to the widest (keys -inf: still sorted)."""
    width = max(s.probs.shape[-1] for s in supports)

    def stacked(parts, value):
        return torch.stack([torch.nn.functional.pad(x, (0, width - x.shape[-1]), value=value) for x in parts], 1)

    return Support(
        stacked([s.probs for s in supports], 0.0).flatten(0, 1),
        stacked([s.ids for s in supports], 0).flatten(0, 1),
        stacked([s.keys for s in supports], -math.inf).flatten(0, 1),
    )


def rsd_target(proposal: Support, alpha: torch.Tensor, student: Support, trials: int) -> Target:
    """The closed form (module docstring) on supports: proposal T [n, Kt] with alpha [n, Kt], S [n, Ks]."""
    t = proposal.probs.double()
    accepted = t * alpha.double()  # [n, Kt]
    m = accepted.sum(-1, keepdim=True)  # [n, 1]
    miss = (1.0 - m).clamp(min=0.0) ** trials
    scale = torch.where(m > 0, (1.0 - miss) / m.clamp_min(1e-300), torch.full_like(m, float(trials)))
    s_at_t = student.at(proposal.ids)  # [n, Kt]
    on_t = torch.where(t > 0, accepted * scale + miss * s_at_t.double(), 0.0)
    outside = 1.0 - _member(student.ids, proposal.ids, proposal.probs > 0)  # S's tokens not in T's support
    off_t = miss * student.probs.double() * outside.double()
    return Target(torch.cat([on_t, off_t], -1), torch.cat([proposal.ids, student.ids], -1), m.squeeze(-1), s_at_t)


def speculative_verify_support(
    targets: Target, student_draft: torch.Tensor, draft: torch.Tensor, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Speculative sampling against P, on supports. targets: P at [B(K+1)] positions (row-major: the K
    drafts then one past them); student_draft [B, K]: S of each draft token (> 0: drawn from S); draft
    [B, K]; uniforms [B, K+1] (float64): K acceptance coins and one draw for the final token.
    Output tokens = accepted drafts + one more: at the first rejection a token from max(0, P - S) (the
    recovered token), or, when all K are accepted, a bonus token from P.
    Returns accepted [B] (how many drafts were kept) and the final token [B]."""
    batch, k = draft.shape
    rows = torch.arange(batch, device=draft.device)
    positions = rows[:, None] * (k + 1) + torch.arange(k, device=draft.device)  # [B, K] into the flat targets
    p_draft = _lookup(targets.ids[positions.flatten()], targets.probs[positions.flatten()],
                      targets.probs[positions.flatten()] > 0, draft.reshape(-1, 1)).view(batch, k)  # fmt: skip
    keep = uniforms[:, :k] < (p_draft / student_draft.double().clamp_min(1e-300)).clamp(max=1.0)  # [B, K]
    accepted = keep.long().cumprod(-1).sum(-1)  # [B]: index of the first rejection, or K
    last = rows * (k + 1) + accepted  # [B] the position of the final token
    residual, everything = targets.residual()[last], targets.probs[last]  # [B, Kt], [B, Kt + Ks]
    width = residual.shape[-1]
    # at a rejection, max(0, P - S); after K acceptances (S is zero there) or where P - S has no positive
    # mass (rounding), P itself
    use_residual = (accepted < k) & (residual.sum(-1) > 0)
    pad = everything.new_zeros(batch, everything.shape[-1] - width)
    dist = torch.where(use_residual[:, None], torch.cat([residual, pad], -1), everything)
    final = targets.ids[last].gather(-1, sample_from(dist, uniforms[:, k:]))  # [B, 1]
    return accepted, final.squeeze(-1)


def rsd_explain(
    mass: torch.Tensor, student_x: torch.Tensor, probs_x: torch.Tensor, trials: int, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Book-keeping for a token emitted from P without running trials (the speculative path).

    Draws (fallback, trials) from their distribution given the emitted token x, so that token and
    records are jointly distributed exactly as in the trial procedure: x was a fallback with
    probability (1 - m)^N S(x) / P(x); otherwise it was accepted at trial k with probability
    proportional to (1 - m)^(k - 1), k = 1..N. All inputs are [n] (m, S(x), P(x)); uniforms [n, 2].
    """
    mass, student_x, probs_x = mass.double(), student_x.double(), probs_x.double()
    miss_each = (1.0 - mass).clamp(0.0, 1.0)
    from_student = miss_each**trials * student_x
    fallback = uniforms[:, 0] * probs_x < from_student  # u < miss S(x) / P(x), without dividing
    # Truncated geometric by inverse CDF: k = floor(log(1 - u (1 - r^N)) / log r) + 1.
    scaled = torch.log1p(-uniforms[:, 1] * (1.0 - miss_each**trials))
    k = torch.floor(scaled / torch.log(miss_each).clamp(max=-1e-300)) + 1
    tried = torch.where(fallback, float(trials), k.nan_to_num(1.0).clamp(1, trials)).long()
    return fallback, tried


# -- The same step on each row's support ---------------------------------------------------------
# At a real vocabulary (~150k tokens) each pass over [B, V] costs as much as the rest of the step,
# yet after top-k / top-p a distribution lives on a few dozen tokens. Here S and T are kept as
# (probs [B, K], ids [B, K], keys [B, K]); the full vocabulary is touched only by a top-k and one
# normaliser.


class Support(NamedTuple):
    """A distribution on each row's support: probs [B, K] (float32, zero-padded), token ids [B, K] and
    their sort keys [B, K] (the logits the cuts were decided on; ``-inf`` on padding), sorted by key,
    descending. Scattered onto [B, V] (``dense``) it is the distribution the dense reference gives."""

    probs: torch.Tensor
    ids: torch.Tensor
    keys: torch.Tensor

    def dense(self, vocab: int) -> torch.Tensor:
        return self.probs.new_zeros(len(self.probs), vocab).scatter_add_(-1, self.ids, self.probs)

    def at(self, query: torch.Tensor) -> torch.Tensor:
        """The probability of tokens query [B, n] -> [B, n] (0 off the support)."""
        return _lookup(self.ids, self.probs, self.probs > 0, query)

    def key_at(self, query: torch.Tensor) -> torch.Tensor:
        """The sort key of tokens query [B, n] -> [B, n] (-inf off the support: a score of 0)."""
        return _lookup(self.ids, self.keys, self.probs > 0, query, missing=-math.inf)

    def sample(self, uniforms: torch.Tensor) -> torch.Tensor:
        """Token ids [B, n] for uniforms [B, n] (inverse CDF over the support, as ``sample_from``)."""
        return self.ids.gather(-1, sample_from(self.probs, uniforms))

    # As the acceptance score ("processed": a = S): its top-k and its nucleus, as (ids, valid) [B, K].
    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys = self.keys.masked_fill(self.probs == 0, -math.inf)
        kth = keys.topk(min(k, keys.shape[-1]), dim=-1).values[:, -1:]
        return self.ids, (keys >= kth) & (self.probs > 0)

    def nucleus(self, mass: float) -> tuple[torch.Tensor, torch.Tensor]:
        keys, order = self.keys.sort(-1, descending=True)  # a no-op but for a whole-vocabulary support
        probs = self.probs.gather(-1, order)
        return self.ids.gather(-1, order), (probs > 0) & (mass_before_group(probs, keys) < mass)


class RawScores:
    """The acceptance score "raw": the student's softmax at temperature 1, a(x) = exp(l_x - logsumexp l),
    read at the tokens asked for; logits [B, V] are never normalised as a whole. Its key is the logit."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits.float()
        top = self.logits.amax(-1, keepdim=True)  # [B, 1]
        self.log_total = top + (self.logits - top).exp_().sum(-1, keepdim=True).log_()

    def at(self, query: torch.Tensor) -> torch.Tensor:
        return (self.logits.gather(-1, query) - self.log_total).exp()

    def key_at(self, query: torch.Tensor) -> torch.Tensor:
        return self.logits.gather(-1, query)

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        values, ids, kept = _top_k_ties(self.logits, k)
        return ids, kept & (values > -math.inf)

    def nucleus(self, mass: float) -> tuple[torch.Tensor, torch.Tensor]:
        inside = support_from_logits(self.logits, top_p=mass)
        return inside.ids, inside.probs > 0


def support_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, logprobs: str = "none"
) -> Support:
    """A distribution from logits [B, V] (``-inf``: masked tokens), on each row's support.

    ``logprobs`` says which one (the paper's code read top-k log-probabilities from vLLM): ``none``,
    the sampler's own (temperature, then top-k, then top-p); ``raw``, vLLM's
    ``logprobs_mode="raw_logprobs"`` (the top-k of the plain softmax, renormalised); ``processed``,
    ``processed_logprobs`` (temperature, then top-p over the whole vocabulary, then the top-k of that,
    renormalised). Temperature 0 is greedy (uniform over the tied maxima); top_k 0 and top_p 1 are off.

    A row's support, and so its draws, depend only on that row: the top-k widens per row (64, 256,
    ...) until it holds every token tied with the k-th, or the whole nucleus with its last tie group.
    Without any filter the support is the whole vocabulary.
    """
    logits = logits.float()
    vocab = logits.shape[-1]
    if logprobs == "raw":
        return _renormalised(*_top_k_ties(logits, top_k)) if 0 < top_k < vocab else _whole(logits, 1.0)
    if temperature == 0:  # the tied maxima, uniformly
        values, ids, kept = _top_k_ties(logits, 1)
        kept &= values > -math.inf
        return Support(kept.float() / kept.sum(-1, keepdim=True).clamp_min(1), ids, values)
    if 0 < top_k < vocab and (logprobs == "none" or top_p >= 1.0):  # the top-k first: the softmax spans it
        values, ids, kept = _top_k_ties(logits, top_k)
        return _nucleus(_renormalised(values, ids, kept, temperature), top_p)
    if top_p >= 1.0:
        return _whole(logits, temperature)
    # The nucleus of the whole softmax: its normaliser once, then a top-k wide enough to hold it.
    top = logits.amax(-1, keepdim=True)  # [B, 1]
    total = (logits - top).div_(temperature).exp_().sum(-1, keepdim=True)  # [B, 1]

    def prob(values, rows):
        return ((values - top[rows]) / temperature).exp() / total[rows]

    def holds_nucleus(values, rows):  # the last group fetched starts at a mass >= top_p: all is inside
        return mass_before_group(prob(values, rows), values)[:, -1] >= top_p

    values, ids = _grown_top(logits, 64, holds_nucleus)
    support = _nucleus(Support(prob(values, slice(None)), ids, values), top_p)
    if logprobs == "processed" and 0 < top_k < support.probs.shape[-1]:  # the top-k of the nucleus
        keys = support.keys.masked_fill(support.probs == 0, -math.inf)
        kept = keys >= keys[:, top_k - 1 : top_k]
        support = _nucleus(Support(support.probs * kept, ids, support.keys), 1.0)
    return support


def _whole(logits: torch.Tensor, temperature: float) -> Support:
    batch, vocab = logits.shape
    return Support(
        (logits / temperature).softmax(-1), torch.arange(vocab, device=logits.device).expand(batch, vocab), logits
    )


def _renormalised(values, ids, kept, temperature: float = 1.0) -> Support:
    """The softmax over the kept entries of a top-k (values [B, K], sorted descending)."""
    return Support((values / temperature).masked_fill(~kept, -math.inf).softmax(-1), ids, values)


def _nucleus(support: Support, top_p: float) -> Support:
    """A support sorted by key, descending -> the tokens whose strictly-higher-keyed mass is under
    top_p (a prefix ending with a whole tie group), renormalised."""
    probs = support.probs
    if top_p < 1.0:
        probs = probs.masked_fill(mass_before_group(probs, support.keys) >= top_p, 0.0)
    return Support(probs / probs.sum(-1, keepdim=True), support.ids, support.keys)


def _top_k_ties(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's k largest and every value tied with the k-th: values, ids, kept [B, K] (K >= k)."""

    def past_ties(values, rows):  # the last value fetched is below the k-th (or the k-th is -inf)
        kth = values[:, k - 1]
        return (values[:, -1] < kth) | (kth == -math.inf)

    values, ids = _grown_top(x, k + 1, past_ties)
    return values, ids, values >= values[:, k - 1 : k]


def _grown_top(x: torch.Tensor, k: int, enough) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's top-k (descending) for the smallest k in k0, 4 k0, ... (at least 64) where
    ``enough(values, rows)`` holds, or the whole row; padded with -inf to the widest -> values, ids."""
    batch, vocab = x.shape
    k, rows, found = min(max(k, 64), vocab), torch.arange(batch, device=x.device), []
    while True:
        values, ids = (x if len(found) == 0 else x[rows]).topk(k, dim=-1)
        done = enough(values, rows) if k < vocab else torch.ones(len(rows), dtype=torch.bool, device=x.device)
        found.append((rows[done], values[done], ids[done]))
        if bool(done.all()):
            break
        rows, k = rows[~done], min(4 * k, vocab)
    values, ids = x.new_full((batch, k), -math.inf), torch.zeros(batch, k, dtype=torch.long, device=x.device)
    for r, v, i in found:
        values[r, : v.shape[1]], ids[r, : i.shape[1]] = v, i
    width = max(v.shape[1] for r, v, _ in found if len(r))
    return values[:, :width], ids[:, :width]


def _lookup(
    ids: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, query: torch.Tensor, missing: float = 0.0
) -> torch.Tensor:
    """values [B, K] at the entries of ids [B, K] matching query [B, n] -> [B, n] (`missing` where
    none; an entry not ``valid`` never matches). Sort and binary search: K and n may both be thousands."""
    keys, order = torch.where(valid, ids, -1).sort(-1)
    query = query.contiguous()
    pos = torch.searchsorted(keys, query).clamp_(max=keys.shape[-1] - 1)
    hit = keys.gather(-1, pos) == query
    return torch.where(hit, values.gather(-1, order.gather(-1, pos)), missing)


def _member(query: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1.0 where query [B, n] is among the valid ids [B, k], else 0.0."""
    return _lookup(ids, valid.float(), valid, query)
