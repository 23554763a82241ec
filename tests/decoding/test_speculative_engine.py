"""Speculative RSD in the engine: same distribution as plain RSD, ragged batches done right."""

import math

import pytest
import torch
from helpers import empirical, tv_bound, two_sample_chi_square
from reference import alpha as dense_alpha
from reference import dense, proposal_probs, rsd_probs

from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.models.loading import load_pair
from ownwords.models.tiny import STUDENT, TinySpec, make_tiny_pair
from ownwords.rsd.sampling import AcceptanceRule


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
    proposal = dense(sampling, alignment.teacher_logits_to_student(t_logits))
    alpha = dense_alpha(AcceptanceRule("threshold", threshold), s_logits.softmax(-1), proposal)
    return rsd_probs(proposal, alpha, dense(sampling, s_logits), trials=3)[0]


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("threshold", [pytest.param(0.0, marks=pytest.mark.slow), 0.01])  # p_th 0: in CI's slow run
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


def exact_next(models, context, sampling, rule, trials):
    """P [V] of the next token after `context` (student ids), from one forward of each model."""
    student, s_tok, teacher, alignment = models
    with torch.no_grad():
        s_logits = student(torch.tensor([context])).logits[:, -1, : alignment.student_size]
        t_logits = teacher(torch.tensor([alignment.to_teacher(context)])).logits[:, -1]
    proposal = proposal_probs(t_logits, sampling, alignment)
    alpha = dense_alpha(rule, s_logits.softmax(-1), proposal)
    return rsd_probs(proposal, alpha, dense(sampling, s_logits), trials)[0]


def chi_square_p(groups) -> tuple[float, int]:
    """Goodness of fit of observed tokens to exact conditional distributions, pooled over groups.
    groups: [(observed token ids [n], exact P [V])]. Per group, tokens expected >= 5 times are bins of
    their own and the rest one bin; returns (p-value by the Wilson-Hilferty approximation, dof)."""
    stat, dof = 0.0, 0
    for observed, exact in groups:
        n = len(observed)
        counts = torch.bincount(torch.tensor(observed), minlength=len(exact)).double()
        expected = n * exact.double()
        big = expected >= 5
        if big.sum() == 0:
            continue
        bins_o = [*counts[big].tolist(), counts[~big].sum().item()]
        bins_e = [*expected[big].tolist(), expected[~big].sum().item()]
        if bins_e[-1] < 1:  # too little left over for a bin of its own: fold it into the largest
            i = max(range(len(bins_e) - 1), key=lambda j: bins_e[j])
            bins_o[i] += bins_o.pop()
            bins_e[i] += bins_e.pop()
        stat += sum((o - e) ** 2 / e for o, e in zip(bins_o, bins_e))
        dof += len(bins_e) - 1
    if dof == 0:
        return 1.0, 0
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2)), dof


@pytest.mark.parametrize("k", [0, 2])
def test_second_and_third_tokens_follow_the_closed_form_at_temperature_and_top_p(small, k):
    """Tokens 2 and 3 come from the speculative block (drafts from S, verified against P), so this
    reaches what a first-token test cannot; temperature 0.7 and top-p 0.9 make S differ from the plain
    softmax. Each token is tested against P given its own prefix. False-alarm rate: 1e-3 per case."""
    n, trials = 3000, 3
    sampling, rule = Sampling(0.7, 0, 0.9), AcceptanceRule("threshold", 0.01)
    prompt = prompts(small, 2)[1]  # ends in the student-only <think>
    student, s_tok, teacher, alignment = small
    eng = Engine(
        student,
        s_tok,
        teacher,
        alignment,
        sampling,
        RSD(rule, trials),
        max_new_tokens=3,
        batch_size=500,
        speculate=k,
    )
    traces = list(eng.run([Request("q", i, prompt, seed=10_000 + i) for i in range(n)]))
    assert len(traces) == n and all(len(t.token_ids) == 3 for t in traces)
    if k:
        assert 0 < eng.stats["accepted"] < eng.stats["drafted"]
    for position in (1, 2):
        by_prefix: dict[tuple, list[int]] = {}
        for t in traces:
            by_prefix.setdefault(tuple(t.token_ids[:position]), []).append(t.token_ids[position])
        groups = [
            (observed, exact_next(small, prompt + list(prefix), sampling, rule, trials))
            for prefix, observed in by_prefix.items()
            if len(observed) >= 20
        ]
        p, dof = chi_square_p(groups)
        assert dof >= 10, "too few bins for a meaningful test"
        assert p > 1e-3, f"token {position + 1}: chi-square p = {p:.2e} over {dof} degrees of freedom"


def paper_reference(models, context):
    """The preset's P for the next token, written from the authors' description, independently of
    the engine: T = the teacher's own raw top 20, renormalised over the shared tokens; S = the
    student's raw top 20, renormalised; accept x if a(x) >= 0.01 and x is in the student's top 20."""
    student, _, teacher, al = models
    with torch.no_grad():
        s_logits = student(torch.tensor([context])).logits[0, -1, : al.student_size].double()
        t_logits = teacher(torch.tensor([al.to_teacher(context)])).logits[0, -1, : al.teacher_size].double()
    t_own = t_logits.softmax(-1)
    t_keep = torch.zeros_like(t_own)
    top = t_logits.topk(20).indices
    t_keep[top] = t_own[top]
    proposal = torch.zeros(al.student_size, dtype=torch.float64)
    proposal[al.student_ids] = t_keep[al.teacher_ids]
    proposal /= proposal.sum()
    a = s_logits.softmax(-1)
    s_top = s_logits.topk(20).indices
    s = torch.zeros_like(a)
    s[s_top] = a[s_top]
    s /= s.sum()
    accept = torch.zeros_like(a)
    accept[s_top] = (a[s_top] >= 0.01).double()
    m = (proposal * accept).sum()
    miss = (1 - m) ** 5
    return proposal * accept * (1 - miss) / m + miss * s if m > 0 else s


@pytest.mark.parametrize("k", [0, 2])
def test_the_paper_preset_emits_the_authors_distribution(small, k):
    from ownwords.config import parse
    from ownwords.stages.generate import PRESETS, GenerateConfig

    config = parse(
        GenerateConfig,
        ["--teacher", "t", "--student", "s", "--questions", "q.jsonl", "--preset", "paper"],
        "t",
        PRESETS,
    )
    student, s_tok, teacher, al = small
    eng = Engine(
        student,
        s_tok,
        teacher,
        al,
        config.sampling(),
        RSD(config.acceptance_rule(), config.trials),
        max_new_tokens=2,
        batch_size=500,
        speculate=k,
    )
    prompt = prompts(small, 1)[0]
    traces = list(eng.run([Request("q", i, prompt, seed=77_000 + i) for i in range(3000)]))
    for position in (0, 1):
        by_prefix: dict[tuple, list[int]] = {}
        for t in traces:
            by_prefix.setdefault(tuple(t.token_ids[:position]), []).append(t.token_ids[position])
        groups = [
            (obs, paper_reference(small, prompt + list(pre)))
            for pre, obs in by_prefix.items()
            if len(obs) >= 20
        ]
        p, dof = chi_square_p(groups)
        assert dof >= 5 and p > 1e-3, (
            f"token {position + 1}: chi-square p = {p:.2e} over {dof} degrees of freedom"
        )


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """The small pair with exact ties at every cut, as a bfloat16 model has them: lm_head rows shared
    by groups of 4 tokens (scaled so that a top-p 0.6 cut falls inside a group), logits rounded to
    bfloat16."""
    t_dir, s_dir = make_tiny_pair(
        tmp_path_factory.mktemp("tied"), teacher=TinySpec("qwen3", 128, 2, 4, 2, 256), student=STUDENT
    )
    student, s_tok, teacher, alignment = load_pair(str(t_dir), str(s_dir), "cpu", "float32")
    for model in (student, teacher):
        head = model.get_output_embeddings()
        with torch.no_grad():
            head.weight.copy_(head.weight[torch.arange(len(head.weight)) // 4 * 4] * 0.3)
        head.register_forward_hook(lambda module, inputs, out: out.bfloat16().float())
    return student, s_tok, teacher, alignment


@pytest.mark.parametrize("rule", [AcceptanceRule("threshold", 0.001), AcceptanceRule("nucleus", 0.6)], ids=str)
def test_plain_and_speculative_rsd_emit_one_law_when_logits_tie(tied, rule):
    """Tokens 2 and 3 come from the speculative block (dense S, T and rule) or from plain RSD (the
    same on each row's support): with ties at the top-k 5 / top-p 0.6 boundaries both keep the same
    tokens, so the two samplers' conditional laws agree (two-sample chi-square, false alarm 1e-3)."""
    n, student, s_tok, teacher, alignment = 3000, *tied
    prompt = prompts(tied, 1)[0]
    runs = []
    for k in (0, 2):
        eng = Engine(student, s_tok, teacher, alignment, Sampling(1.0, 5, 0.6), RSD(rule, 3),
                     max_new_tokens=3, batch_size=500, speculate=k)  # fmt: skip
        runs.append(list(eng.run([Request("q", i, prompt, seed=k * n + i) for i in range(n)])))
        if k:
            assert 0 < eng.stats["accepted"] < eng.stats["drafted"]
    for position in (1, 2):
        by_prefix: dict[tuple, tuple[list, list]] = {}
        for side, traces in enumerate(runs):
            for t in traces:
                by_prefix.setdefault(tuple(t.token_ids[:position]), ([], []))[side].append(t.token_ids[position])
        groups = [pair for pair in by_prefix.values() if min(map(len, pair)) >= 20]
        p, dof = two_sample_chi_square(groups)
        assert dof >= 5, "too few bins for a meaningful test"
        assert p > 1e-3, f"token {position + 1}: two-sample chi-square p = {p:.2e} over {dof} degrees of freedom"
