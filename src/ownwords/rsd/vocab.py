"""Vocabulary alignment between a teacher and a student tokenizer (DESIGN §4).

A token is *shared* when both tokenizers map the same string to it. The RSD step works on the
student's vocabulary: teacher logits are moved onto shared student ids (a teacher-only token can
never be proposed), and a student-only token entering the teacher's context is re-tokenised into
teacher tokens from its text. Logit columns past a tokenizer's size (padded embeddings) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import UserError


@dataclass
class VocabAlignment:
    student_size: int  # logits columns used on the student side (its tokenizer's size)
    teacher_size: int
    student_ids: torch.Tensor  # [K] shared tokens, student ids
    teacher_ids: torch.Tensor  # [K] the same tokens, teacher ids
    teacher_tokenizer: object = field(repr=False)
    student_tokenizer: object = field(repr=False)

    def __post_init__(self) -> None:
        self._to_teacher = dict(zip(self.student_ids.tolist(), self.teacher_ids.tolist(), strict=True))
        self.identity = self.student_size == self.teacher_size == len(self._to_teacher) and all(
            s == t for s, t in self._to_teacher.items()
        )
        columns = torch.zeros(self.student_size, dtype=torch.long)  # [Vs] teacher column of each student id
        columns[self.student_ids] = self.teacher_ids
        unshared = torch.ones(self.student_size, dtype=torch.bool)  # [Vs] True: no teacher column
        unshared[self.student_ids] = False
        self._gather = {torch.device("cpu"): (columns, unshared)}  # a copy per device logits come from
        # Shared tokens are ids 0..K-1 on both sides (a vocabulary and its extension, as Qwen2.5 and
        # Qwen3): the first K teacher columns are then the student's, and no gather is needed.
        k = len(self._to_teacher)
        self.shared_prefix = k if all(s == t < k for s, t in self._to_teacher.items()) else 0
        self._to_student = torch.full((self.teacher_size,), -1, dtype=torch.long)  # [Vt]; -1: teacher-only
        self._to_student[self.teacher_ids] = self.student_ids

    @property
    def shared(self) -> int:
        return len(self._to_teacher)

    def teacher_logits_to_student(self, logits: torch.Tensor) -> torch.Tensor:
        """Teacher logits [B, Vt_model] -> [B, Vs] on student ids; ``-inf`` where the token is not shared."""
        if self.identity:
            return logits[:, : self.student_size]
        columns, unshared = self._gather_on(logits.device)
        return logits.index_select(-1, columns).masked_fill_(unshared, -math.inf)

    def teacher_probs_to_student(self, probs: torch.Tensor) -> torch.Tensor:
        """A teacher distribution [B, Vt] over its own tokens -> [B, Vs] on student ids, renormalised
        over the shared tokens (the authors' order: filter the teacher's own list, then drop what the
        student cannot take). A row with no shared mass is all zero: nothing to propose."""
        if self.identity:
            moved = probs[:, : self.student_size]
        else:
            columns, unshared = self._gather_on(probs.device)
            moved = probs.index_select(-1, columns).masked_fill_(unshared, 0.0)
        total = moved.sum(-1, keepdim=True)
        return torch.where(total > 0, moved / total.clamp_min(1e-30), 0.0)

    def teacher_support_to_student(
        self, probs: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``teacher_probs_to_student`` for a distribution kept on its support: probs, teacher ids
        [B, K] -> probs renormalised over the shared tokens, student ids [B, K]."""
        student_ids = self._to_student.to(ids.device)[ids]
        moved = probs.masked_fill(student_ids < 0, 0.0)
        total = moved.sum(-1, keepdim=True)
        return torch.where(total > 0, moved / total.clamp_min(1e-30), 0.0), student_ids.clamp_(min=0)

    def _gather_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._gather:
            self._gather[device] = tuple(t.to(device) for t in self._gather[torch.device("cpu")])
        return self._gather[device]

    def to_teacher(self, student_ids: list[int]) -> list[int]:
        """Student token ids -> teacher token ids (student-only tokens re-tokenised from their text)."""
        out: list[int] = []
        for sid in student_ids:
            tid = self._to_teacher.get(sid)
            if tid is not None:
                out.append(tid)
            else:
                text = self.student_tokenizer.convert_tokens_to_string(
                    [self.student_tokenizer.convert_ids_to_tokens(sid)]
                )
                out.extend(self.teacher_tokenizer.encode(text, add_special_tokens=False))
        return out


def align_vocabularies(
    student_tokenizer, teacher_tokenizer, student_width: int, teacher_width: int, min_overlap: float = 0.5
) -> VocabAlignment:
    """Align two tokenizers; `*_width` are the models' logits widths (embeddings may be padded past,
    or fall short of, the tokenizer). Refuses pairs whose shared fraction of either vocabulary is
    under `min_overlap`."""
    student_size = min(len(student_tokenizer), student_width)
    teacher_size = min(len(teacher_tokenizer), teacher_width)
    teacher_vocab = {tok: i for tok, i in teacher_tokenizer.get_vocab().items() if i < teacher_size}
    pairs = sorted(
        (sid, teacher_vocab[tok])
        for tok, sid in student_tokenizer.get_vocab().items()
        if sid < student_size and tok in teacher_vocab
    )
    overlap = min(len(pairs) / student_size, len(pairs) / teacher_size)
    if overlap < min_overlap:
        raise UserError(
            f"teacher and student tokenizers share {len(pairs)} tokens: {len(pairs) / student_size:.1%} of the "
            f"student's {student_size} and {len(pairs) / teacher_size:.1%} of the teacher's {teacher_size}, "
            f"below the required overlap of {min_overlap:.0%}; RSD needs the two models to share a vocabulary "
            "(lower min_vocab_overlap only if you know the pair is usable)"
        )
    ids = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    return VocabAlignment(
        student_size, teacher_size, ids[:, 0], ids[:, 1], teacher_tokenizer, student_tokenizer
    )
