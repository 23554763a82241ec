import random

import pytest
import torch

from ownwords.models.tiny import corpus, train_tokenizer
from ownwords.rsd.vocab import align_vocabularies


@pytest.fixture(scope="module")
def pair():
    texts = corpus(n=800, seed=3)
    teacher = train_tokenizer(texts, vocab_size=700, added_tokens=("<|teacher_only|>",))
    student = train_tokenizer(texts, vocab_size=600, added_tokens=("<think>", "</think>"))
    return teacher, student


def test_shared_tokens_are_the_same_strings(pair):
    teacher, student = pair
    assert len(teacher) != len(student)
    al = align_vocabularies(student, teacher, student_width=640, teacher_width=768)
    assert al.student_size == len(student) and al.teacher_size == len(teacher)
    s_tokens = student.convert_ids_to_tokens(al.student_ids.tolist())
    t_tokens = teacher.convert_ids_to_tokens(al.teacher_ids.tolist())
    assert s_tokens == t_tokens
    assert al.shared == len(set(student.get_vocab()) & set(teacher.get_vocab()))
    assert "<think>" not in t_tokens and "<|teacher_only|>" not in s_tokens
    assert not al.identity


def test_teacher_logits_move_onto_shared_student_ids(pair):
    teacher, student = pair
    al = align_vocabularies(student, teacher, student_width=640, teacher_width=768)
    logits = torch.randn(2, 768)  # padded past the teacher tokenizer's size
    only = teacher.convert_tokens_to_ids("<|teacher_only|>")
    logits[:, only] = 100.0  # the teacher loves a token the student does not have
    logits[:, len(teacher) :] = 200.0  # and padding columns
    moved = al.teacher_logits_to_student(logits)
    assert moved.shape == (2, len(student))
    probs = moved.softmax(-1)
    assert torch.isfinite(probs).all()
    shared = torch.zeros(len(student), dtype=torch.bool)
    shared[al.student_ids] = True
    assert (probs[:, ~shared] == 0).all()
    assert torch.equal(moved[:, al.student_ids], logits[:, al.teacher_ids])


def test_student_only_tokens_are_retokenised_for_the_teacher(pair):
    teacher, student = pair
    al = align_vocabularies(student, teacher, student_width=640, teacher_width=768)
    text = "<think>\nlet me check 12 + 30 = 42</think>"
    ids = student.encode(text, add_special_tokens=False)
    assert student.convert_tokens_to_ids("<think>") in ids
    converted = al.to_teacher(ids)
    assert teacher.decode(converted) == text
    assert teacher.encode("<think>", add_special_tokens=False) == al.to_teacher(
        [student.convert_tokens_to_ids("<think>")]
    )


def test_identical_tokenizers_align_as_identity(pair):
    _, student = pair
    al = align_vocabularies(student, student, student_width=len(student), teacher_width=len(student))
    assert al.identity
    logits = torch.randn(1, len(student))
    assert torch.equal(al.teacher_logits_to_student(logits), logits)


def test_embedding_smaller_than_tokenizer_drops_the_missing_ids(pair):
    teacher, student = pair
    al = align_vocabularies(student, teacher, student_width=len(student) - 2, teacher_width=768)
    assert al.student_size == len(student) - 2 and int(al.student_ids.max()) < len(student) - 2


def test_unrelated_tokenizers_are_refused_naming_the_overlap(pair):
    _, student = pair
    rng = random.Random(0)
    greek = "αβγδεζηθικλμνξοπρστυφχψω"
    other = train_tokenizer(
        ["".join(rng.choice(greek) for _ in range(rng.randint(3, 9))) for _ in range(3000)], vocab_size=700
    )
    with pytest.raises(ValueError, match=r"share \d+ tokens: .* below the required overlap of 50%"):
        align_vocabularies(student, other, student_width=len(student), teacher_width=len(other))
