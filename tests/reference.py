"""The dense reference: the RSD step written over the whole vocabulary [B, V], slowly and obviously.

The engine has one production path, on each row's support (ownwords/rsd/sampling.py); this is the
oracle its tests compare it against (as vLLM keeps its obvious reference implementation in its
rejection sampler's tests). Ties follow the same rule: a group of equal keys is cut as one token.
"""

import math

import torch

from ownwords.rsd.sampling import AcceptanceRule, _percentile, mass_before_group, sample_from


def probs_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, logprobs: str = "none"
) -> torch.Tensor:
    """A distribution [B, V] (float32) from logits [B, V]; ``-inf`` logits are masked tokens.

    * ``none`` -- the sampler's own: temperature, then top-k, then top-p.
    * ``raw`` -- vLLM ``logprobs_mode="raw_logprobs"``: the top-k of the plain softmax, renormalised.
    * ``processed`` -- vLLM ``logprobs_mode="processed_logprobs"``: temperature, then top-p over the full
      vocabulary, then the top-k of that, renormalised.

    temperature 0 is greedy (uniform over the tied maxima); top_k 0 and top_p 1 disable those filters.
    """
    logits = logits.float()
    if logprobs == "raw":
        return _top_k(logits, top_k).softmax(-1)
    if temperature == 0:
        return _greedy(logits)
    logits = logits / temperature
    if logprobs == "processed":
        probs = _top_p(logits.softmax(-1), top_p, logits)
        if 0 < top_k < probs.shape[-1]:  # the top-k of the nucleus, renormalised
            probs = _top_k(logits.masked_fill(probs == 0, -math.inf), top_k).softmax(-1)
        return probs
    logits = _top_k(logits, top_k)
    return _top_p(logits.softmax(-1), top_p, logits)


def dense(sampling, logits: torch.Tensor) -> torch.Tensor:
    """`probs_from_logits` with an engine's Sampling settings."""
    return probs_from_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p, sampling.logprobs)


def _greedy(logits: torch.Tensor) -> torch.Tensor:
    """Uniform over each row's tied maxima [B, V] (all zero for a row with no finite logit)."""
    top = logits.amax(-1, keepdim=True)
    tied = ((logits == top) & (logits > -math.inf)).float()
    return tied / tied.sum(-1, keepdim=True).clamp_min(1.0)


def _top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Mask every logit below the k-th (ties with the k-th stay)."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return logits


def _top_p(probs: torch.Tensor, top_p: float, key: torch.Tensor) -> torch.Tensor:
    """Keep each token whose strictly-higher-keyed mass is under top_p, renormalised."""
    if top_p >= 1.0:
        return probs
    keys, order = key.sort(-1, descending=True)  # [B, V]
    sorted_probs = probs.gather(-1, order)
    kept = sorted_probs.masked_fill(mass_before_group(sorted_probs, keys) >= top_p, 0.0)
    out = torch.zeros_like(probs).scatter_(-1, order, kept)
    return out / out.sum(-1, keepdim=True)


def alpha(rule: AcceptanceRule, score: torch.Tensor, proposal: torch.Tensor, key: torch.Tensor | None = None):
    """The rule over the whole vocabulary: score, proposal [B, V] -> alpha [B, V] (float32). key [B, V]:
    the order of the scores, which decides ties (the student's logits for the raw score)."""
    score, proposal = score.float(), proposal.float()
    key = score if key is None else key.float()
    if rule.name == "threshold":
        out = (score >= rule.value).float()
    elif rule.name == "rank":
        out = _in_top_k(score, int(rule.value), key)
    elif rule.name == "nucleus":
        keys, order = key.sort(-1, descending=True)
        inside = mass_before_group(score.gather(-1, order), keys) < rule.value  # the top group is inside
        out = torch.zeros_like(score).scatter_(-1, order, inside.float())
    elif rule.name == "ratio":  # T = 0 tokens are never proposed; the clamp keeps the division NaN-free
        out = torch.where(proposal > 0, (score / proposal.clamp_min(1e-30)).clamp(max=1.0), 0.0)
    else:
        out = _percentile(proposal, key, rule.value)
    if rule.top_k:
        out = out * _in_top_k(score, rule.top_k, key)
    return out


def _in_top_k(score: torch.Tensor, k: int, key: torch.Tensor) -> torch.Tensor:
    """1.0 where the token's key is >= the k-th highest of its row and its score is above 0; [B, V]."""
    kth = key.topk(min(k, key.shape[-1]), dim=-1).values[:, -1:]
    return ((key >= kth) & (score > 0)).float()


def rsd_probs(proposal: torch.Tensor, alpha: torch.Tensor, student: torch.Tensor, trials: int) -> torch.Tensor:
    """Closed form of what one RSD step emits, P [B, V] (float64)."""
    proposal, alpha, student = proposal.double(), alpha.double(), student.double()
    accepted = proposal * alpha  # [B, V]
    m = accepted.sum(-1, keepdim=True)  # [B, 1]
    miss = (1.0 - m).clamp(min=0.0) ** trials  # all trials rejected
    scale = torch.where(m > 0, (1.0 - miss) / m.clamp_min(1e-300), torch.full_like(m, float(trials)))
    return accepted * scale + miss * student


def speculative_verify(target: torch.Tensor, draft_probs: torch.Tensor, draft: torch.Tensor, uniforms: torch.Tensor):
    """Speculative sampling against P, densely. target [B, K+1, V]; draft_probs [B, K, V] (S); draft
    [B, K]; uniforms [B, K+1]. Returns accepted [B] and the final token [B]."""
    batch, k = draft.shape
    p_draft = target[:, :k].gather(-1, draft[..., None]).squeeze(-1).double()
    s_draft = draft_probs.gather(-1, draft[..., None]).squeeze(-1).double()
    keep = uniforms[:, :k] < (p_draft / s_draft.clamp_min(1e-300)).clamp(max=1.0)
    accepted = keep.long().cumprod(-1).sum(-1)
    rows = torch.arange(batch, device=draft.device)
    p_last = target[rows, accepted].double()
    s_last = torch.cat([draft_probs, draft_probs.new_zeros(batch, 1, draft_probs.shape[-1])], 1)[rows, accepted]
    residual = (p_last - s_last.double()).clamp(min=0.0)
    residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p_last)
    return accepted, sample_from(residual, uniforms[:, k:]).squeeze(-1)


def proposal_probs(t_logits: torch.Tensor, sampling, alignment) -> torch.Tensor:
    """T [N, Vs] on student ids from teacher logits [N, Vt_model], densely (padded columns never proposed)."""
    if sampling.logprobs == "none":
        return dense(sampling, alignment.teacher_logits_to_student(t_logits))
    return alignment.teacher_probs_to_student(dense(sampling, t_logits[:, : alignment.teacher_size]))
