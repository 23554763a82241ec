"""`--preset paper`, exactly as the authors ran it: baselines that are what their names say, the
teacher's own top 20 before the shared tokens, the two readings of vLLM's log-probabilities, and
a(x) without padded logit columns."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from reference import alpha as dense_alpha
from reference import dense, probs_from_logits, proposal_probs, rsd_probs

from ownwords.cli import main
from ownwords.config import parse
from ownwords.decoding.engine import RSD, Engine, Sampling
from ownwords.errors import UserError
from ownwords.models.facts import logits_width
from ownwords.models.loading import load_pair
from ownwords.rsd.sampling import rsd_sample, uniforms_for
from ownwords.rsd.vocab import VocabAlignment
from ownwords.stages.generate import PRESETS, GenerateConfig

RECIPES = Path(__file__).parents[2] / "recipes"
V = 40  # hand-made vocabularies: ids 0..37 shared (same id), teacher 38-39 and student 38-39 their own


def alignment() -> VocabAlignment:
    shared = torch.arange(38)
    return VocabAlignment(V, V, shared, shared, teacher_tokenizer=None, student_tokenizer=None)


def preset(*flags) -> GenerateConfig:
    return parse(
        GenerateConfig,
        ["--teacher", "t", "--student", "s", "--questions", "q.jsonl", "--preset", "paper", *flags],
        "t",
        PRESETS,
    )


def ranked(order: list[int], width: int = V) -> torch.Tensor:
    """Logits [1, width] ranking `order` first (in that order), the rest far below."""
    logits = torch.full((1, width), -30.0)
    for rank, token in enumerate(order):
        logits[0, token] = 10.0 - 0.3 * rank
    return logits


def test_teacher_only_under_the_preset_emits_exactly_t_with_no_fallback():
    config = preset("--threshold", "0")
    assert config.acceptance_top_k == 0 and preset().acceptance_top_k == 20
    sampling, rule = config.sampling(), config.acceptance_rule()
    t_logits = ranked(list(range(20)))  # the teacher's favourites: tokens 0..19
    s_logits = ranked(list(range(37, 17, -1)))  # the student's top 20: 37..18, so 0..17 are outside it
    proposal = proposal_probs(t_logits, sampling, alignment())
    alpha = dense_alpha(rule, s_logits.softmax(-1), proposal)
    student = dense(sampling, s_logits)
    assert torch.allclose(rsd_probs(proposal, alpha, student, config.trials), proposal.double(), atol=1e-12)
    gens = [torch.Generator().manual_seed(i) for i in range(2000)]
    _, fallback, tried = rsd_sample(
        proposal.expand(2000, -1),
        alpha.expand(2000, -1),
        student.expand(2000, -1),
        config.trials,
        uniforms_for(gens, 2 * config.trials + 1),
    )
    assert not fallback.any() and (tried == 1).all()


def test_a_baseline_that_contradicts_itself_is_refused():
    with pytest.raises(UserError, match="teacher-only baseline"):
        preset("--threshold", "0", "--acceptance-top-k", "20")
    assert preset("--threshold", "2").acceptance_top_k == 0  # student only: nothing is accepted anyway


def test_the_teacher_s_own_top_20_comes_first_then_the_shared_tokens():
    """A teacher-only token (38) ranked 3rd takes one of the 20 places: T has 19 tokens, never the
    21st of the teacher's list (token 20 here), renormalised over the shared ones."""
    order = [0, 1, 2, 38, *range(3, 20), 20]  # 22 ranked tokens: the 21st is token 19, the 22nd token 20
    t_logits = ranked(order)
    for logprobs in ("raw", "processed"):
        proposal = proposal_probs(t_logits, Sampling(0.7, 20, 0.95, logprobs), alignment())[0]
        support = set(proposal.nonzero().flatten().tolist())
        top20 = set(order[:20]) - {38}
        assert support <= top20 and 20 not in support and 19 not in support
        if logprobs == "raw":
            own = t_logits[0].softmax(-1)
            expected = torch.zeros(V)
            expected[list(top20)] = own[list(top20)]
            assert support == top20 and torch.allclose(proposal, expected / expected.sum(), atol=1e-6)


def reference_processed(logits: torch.Tensor, temperature: float, top_p: float, k: int) -> torch.Tensor:
    """vLLM processed_logprobs, by full sort: temperature, the nucleus over the whole vocabulary, then
    the top k of it, renormalised."""
    probs = (logits.double() / temperature).softmax(-1)[0]
    order = probs.argsort(descending=True)
    mass_before = probs[order].cumsum(0) - probs[order]
    nucleus = order[mass_before < top_p]
    kept = nucleus[:k]
    out = torch.zeros_like(probs)
    out[kept] = probs[kept]
    return out / out.sum()


def test_processed_logprobs_are_the_top_k_of_the_full_vocabulary_nucleus():
    logits = -0.08 * torch.arange(200.0)[None]  # flat: the nucleus over 200 tokens is far wider than 20
    got = probs_from_logits(logits, 0.7, 20, 0.95, "processed")[0].double()
    assert torch.allclose(got, reference_processed(logits, 0.7, 0.95, 20), atol=1e-6)
    assert int((got > 0).sum()) == 20
    within_top20 = probs_from_logits(logits, 0.7, 20, 0.95, "none")[0]  # the old reading: top-p inside the 20
    assert int((within_top20 > 0).sum()) < 20
    peaked = -2.0 * torch.arange(200.0)[None]  # a nucleus narrower than 20: processed keeps just it
    got = probs_from_logits(peaked, 0.7, 20, 0.95, "processed")[0].double()
    assert torch.allclose(got, reference_processed(peaked, 0.7, 0.95, 20), atol=1e-6)
    assert int((got > 0).sum()) < 20
    raw = probs_from_logits(logits, 0.7, 20, 0.95, "raw")[0]  # raw: the plain softmax's top 20
    assert torch.allclose(raw[:20], logits[0, :20].softmax(-1), atol=1e-6) and raw[20:].sum() == 0


@pytest.fixture(scope="module")
def pair(tiny_pair):
    return load_pair(str(tiny_pair[0]), str(tiny_pair[1]), "cpu", "float32")


def test_scores_and_proposals_ignore_padded_logit_columns(pair):
    """a(x) is the softmax over the tokenizer's tokens: a huge logit in a padded column (past the
    tokenizer, as real embeddings are padded) changes no score, and is never proposed or emitted."""
    student, s_tok, teacher, align = pair
    width_s, width_t = logits_width(student), logits_width(teacher)
    assert width_s > align.student_size and width_t > align.teacher_size
    engine = Engine(student, s_tok, teacher, align, Sampling(1.0, 0, 1.0), RSD(trials=2))
    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(64, width_s), torch.randn(64, width_t)
    s_logits[:, align.student_size :] = 50.0
    t_logits[:, align.teacher_size :] = 50.0
    rows = [SimpleNamespace(generator=torch.Generator().manual_seed(i)) for i in range(64)]  # _step reads a row's generator
    records = engine._step(s_logits, t_logits, rows)
    plain = s_logits[:, : align.student_size].softmax(-1)
    for row, (token, t_prob, score, _, _) in enumerate(records):
        assert token < align.student_size and t_prob > 0
        assert score == pytest.approx(plain[row, int(token)].item(), rel=1e-5)


@pytest.mark.parametrize(
    "recipe, rate", [("generate_paper_teacher.yaml", 0.0), ("generate_paper_self.yaml", 1.0)]
)
def test_the_shipped_baseline_recipes_are_teacher_only_and_student_only(
    tiny_pair, questions_file, tmp_path, recipe, rate
):
    store = tmp_path / "s.sqlite"
    args = [
        "generate",
        "--config",
        str(RECIPES / recipe),
        "--teacher",
        str(tiny_pair[0]),
        "--student",
        str(tiny_pair[1]),
        "--questions",
        str(questions_file),
        "--answer-field",
        "answer",
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--store",
        str(store),
        "--samples",
        "2",
        "--max-new-tokens",
        "8",
        "--batch-size",
        "4",
        "--no-progress",
    ]
    assert main(args) == 0
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.summary.json")]
    assert summary["tokens"] > 0 and summary["fallback_rate"] == rate
    if rate == 1.0:
        assert summary["engine"]["teacher_forwards"] == 0
