"""`ownwords distill`: on-policy distillation with TRL's DistillationTrainer -- the student writes a
completion of each prompt, the teacher's logits on it supervise the student (generalized JSD). The
control to RSD that moves the teacher's signal into the loss on the student's own samples; started
from another arm's fine-tuned student, RSD traces are its off-policy cold start.

The prompts are the question set's, through the student's chat template with the generation prefix
(given to TRL as text, so a thinking block opens as it does in generation). Teacher and student must
share a vocabulary: the loss compares their logits token by token.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..data.questions import chat_messages, load_questions
from ..errors import UserError
from ..files import check_writable, write_atomically
from ..models.loading import load_model, set_cpu_threads
from ..models.training import quiet_progress, train_and_save
from ..render.training import loss_plot
from .distill_config import DistillConfig, DistillResult

logger = logging.getLogger(__name__)


def check_same_vocabulary(student_tokenizer, teacher_tokenizer, student: str, teacher: str) -> None:
    """On-policy distillation compares logits token by token: the two vocabularies must be one."""
    if student_tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        shared = len(set(student_tokenizer.get_vocab()) & set(teacher_tokenizer.get_vocab()))
        raise UserError(
            f"on-policy distillation needs teacher and student to share a vocabulary: {teacher!r} has "
            f"{len(teacher_tokenizer)} tokens, {student!r} {len(student_tokenizer)}, {shared} in common (the loss "
            "compares their logits token by token; RSD and the other arms work across vocabularies)"
        )


def prompts(config: DistillConfig, tokenizer) -> list[str]:
    questions = load_questions(config.questions, config.question_field, None, None, config.split)[: config.limit]
    return [
        tokenizer.apply_chat_template(chat_messages(q.question, config.system_prompt), tokenize=False,
                                      add_generation_prompt=True) + config.generation_prefix
        for q in questions
    ]  # fmt: skip


def distill(config: DistillConfig) -> DistillResult:
    """Train, save the model + tokenizer, write train_summary.json and loss.png; returns the summary."""
    from datasets import Dataset
    from trl import DistillationTrainer

    check_writable(config.output_dir, "output_dir")
    if config.use_cpu or not torch.cuda.is_available():
        set_cpu_threads(config.threads)
    dtype = "bfloat16" if config.bf16 else "float32"
    student, s_tok = load_model(config.model, "cpu", dtype)
    teacher, t_tok = load_model(config.teacher, "cpu", dtype)
    check_same_vocabulary(s_tok, t_tok, config.model, config.teacher)
    student.train()
    data = Dataset.from_list([{"prompt": p} for p in prompts(config, s_tok)])
    trainer = DistillationTrainer(student, teacher, args=config, train_dataset=data, processing_class=s_tok)
    quiet_progress(trainer, not config.disable_tqdm)
    done, losses = train_and_save(trainer, s_tok, config.output_dir)
    summary = DistillResult(**done, examples=len(data))
    if trainer.is_world_process_zero():
        out = Path(config.output_dir)
        write_atomically(out / "train_summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
        loss_plot(losses, out / "loss.png", f"ownwords distill: {out.name}")
    return summary
