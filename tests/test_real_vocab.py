"""The engine on the paper's own vocabularies: Qwen3 (student) under Qwen2.5 (teacher), and a
cross-family pair (Tekken teacher, Qwen student), with the real logits widths."""

import pytest
import torch
from realvocab import QWEN3_ONLY, WIDTH, qwen_tokenizer, random_model, tekken_tokenizer

from ownwords.data.questions import build_prompt, thinking_markers
from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.errors import UserError
from ownwords.rsd.sampling import AcceptanceRule
from ownwords.rsd.vocab import align_vocabularies
from ownwords.stages.select import SelectConfig, judge


@pytest.fixture(scope="module")
def qwen3():
    return qwen_tokenizer("qwen3")


@pytest.fixture(scope="module")
def qwen25():
    return qwen_tokenizer("qwen2.5")


@pytest.fixture(scope="module")
def paper_pair(qwen3, qwen25):
    """The paper's shapes where they matter here: a Qwen3-0.6B-shaped student (one layer) and a
    real-vocabulary teacher, both with the real logits widths."""
    student = random_model(qwen3, WIDTH["qwen3"], layers=1, real_qwen3_06b=True, seed=1)
    teacher = random_model(qwen25, WIDTH["qwen2.5"], hidden=128, seed=2)
    return student, teacher, align_vocabularies(qwen3, qwen25, WIDTH["qwen3"], WIDTH["qwen2.5"])


def test_the_tokenizers_have_the_real_special_tokens(qwen3, qwen25):
    assert len(qwen25) == 151_665 and len(qwen3) == 151_669
    assert (
        qwen25.convert_tokens_to_ids("<|endoftext|>") == 151_643
        and qwen25.convert_tokens_to_ids("<|file_sep|>") == 151_664
    )
    assert [qwen3.convert_tokens_to_ids(t) for t in QWEN3_ONLY] == [151_665, 151_666, 151_667, 151_668]
    assert qwen3.decode(qwen3.encode("Let x = 12345.")) == "Let x = 12345."


def test_the_paper_pair_shares_every_qwen25_token_and_the_four_qwen3_ones_are_student_only(paper_pair, qwen3):
    *_, alignment = paper_pair
    assert alignment.shared == 151_665 and not alignment.identity
    assert (alignment.student_size, alignment.teacher_size) == (151_669, 151_665)  # padded columns excluded
    student_only = sorted(set(range(alignment.student_size)) - set(alignment.student_ids.tolist()))
    assert [qwen3.convert_ids_to_tokens(i) for i in student_only] == QWEN3_ONLY


def test_think_tags_reach_the_teacher_as_its_own_pieces(paper_pair, qwen3, qwen25):
    *_, alignment = paper_pair
    for tag in ("<think>", "</think>"):
        pieces = alignment.to_teacher([qwen3.convert_tokens_to_ids(tag)])
        assert len(pieces) > 1 and qwen25.decode(pieces) == tag
        assert pieces == qwen25.encode(tag, add_special_tokens=False)


@pytest.mark.parametrize("k", [0, 2])
@pytest.mark.parametrize("threshold", [0.0, 0.01, 2.0])
def test_padded_logit_columns_are_never_proposed_or_sampled(paper_pair, qwen3, threshold, k):
    """The padded rows of both heads are set to win every softmax over the model's full width: the
    engine must still only emit tokenizer tokens, whatever the rule (teacher only, RSD, student only)."""
    student, teacher, alignment = paper_pair
    with torch.no_grad():
        for model, size in ((student, alignment.student_size), (teacher, alignment.teacher_size)):
            head = model.get_output_embeddings().weight
            if model is student:  # tied embeddings: leave the input rows of real tokens alone
                head[size:] = (
                    head[:size].norm(dim=-1).max() * 10 * torch.ones(head.shape[1]) / head.shape[1] ** 0.5
                )
            else:
                head[size:] = 10.0
    if k and threshold > 1:
        pytest.skip("a rule that never accepts runs no teacher, so nothing to speculate against")
    engine = Engine(
        student,
        qwen3,
        teacher,
        alignment,
        Sampling(1.0, 0, 1.0),
        RSD(AcceptanceRule("threshold", threshold), 3),
        max_new_tokens=6,
        batch_size=4,
        speculate=k,
    )
    prompt = build_prompt(qwen3, "What is 2 + 2?", prefix="<think>\n")
    for trace in engine.run([Request("q", i, prompt, seed=i) for i in range(4)]):
        assert len(trace.token_ids) == 6 or trace.finish_reason == "eos"
        assert all(t < alignment.student_size for t in trace.token_ids), trace.token_ids


def test_select_finds_the_end_of_thinking_in_a_real_qwen3_trace(qwen3):
    prompt = qwen3.decode(build_prompt(qwen3, "What is 2 + 2?", prefix="<think>\n"))
    assert thinking_markers(qwen3, prompt) == ("<think>", "</think>")
    text = "Two plus two: 2 + 2 = 4.\n</think>\n\nThe answer is \\boxed{4}."
    sample = dict(answer="4", text=text, finish_reason="eos", n_fallbacks=0, n_tokens=20)
    assert judge(sample, SelectConfig(store="unused.sqlite"), "</think>") == (None, "4", True)
    doubled = dict(sample, text=text.replace("</think>", "</think></think>"))
    assert judge(doubled, SelectConfig(store="unused.sqlite"), "</think>")[0] == "thinking_format"


@pytest.fixture(scope="module")
def tekken(tmp_path_factory):
    return tekken_tokenizer(tmp_path_factory.mktemp("tekken"))


def test_a_cross_family_pair_is_refused_by_default_with_the_overlap(qwen3, tekken):
    with pytest.raises(UserError, match=r"share \d+ tokens: .*below the required overlap of 50%"):
        align_vocabularies(qwen3, tekken, WIDTH["qwen3"], len(tekken))


@pytest.mark.parametrize("k", [0, 2])
def test_a_cross_family_pair_generates_when_allowed(qwen3, tekken, k):
    """Tekken teacher, Qwen student at --min-vocab-overlap 0.4: teacher-only tokens are never
    proposed (T lives on the student's shared ids), student-only tokens (Qwen's specials, <think>)
    are re-tokenised into Tekken pieces, in plain and speculative mode."""
    alignment = align_vocabularies(qwen3, tekken, WIDTH["qwen3"], len(tekken), min_overlap=0.4)
    assert 0.4 < alignment.shared / len(tekken) < 0.6
    think = qwen3.convert_tokens_to_ids("<think>")
    assert tekken.decode(alignment.to_teacher([think])) == "<think>"
    student = random_model(qwen3, WIDTH["qwen3"], seed=3)
    teacher = random_model(tekken, len(tekken), seed=4)
    engine = Engine(
        student,
        qwen3,
        teacher,
        alignment,
        Sampling(1.0, 0, 1.0),
        RSD(AcceptanceRule("threshold", 0.0), 3),
        max_new_tokens=5,
        batch_size=2,
        speculate=k,
    )
    shared = set(alignment.student_ids.tolist())
    prompt = build_prompt(qwen3, "What is 2 + 2?", prefix="<think>\n")
    for trace in engine.run([Request("q", i, prompt, seed=i) for i in range(2)]):
        assert trace.token_ids and not any(trace.fallbacks)  # teacher only: every token a teacher proposal
        assert all(t in shared for t in trace.token_ids)
