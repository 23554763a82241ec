"""`ownwords distill`'s config (TRL's DistillationConfig, whose flags are its own) and result. It
imports TRL, and so torch; nothing of ownwords' model code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import DistillationConfig

from ..config import Result
from ..errors import UserError, check_fields
from ..options import Prompt, Threads


@dataclass
class DistillConfig(DistillationConfig, Threads, Prompt):
    """On-policy distillation: the student samples a completion of each prompt, the teacher's logits on
    it supervise the student (TRL's generalized JSD; beta 1 = reverse KL)."""

    model: str | None = field(default=None, metadata={"help": "Student to train: hub id or local path (required)."})
    teacher: str | None = field(
        default=None, metadata={"help": "Teacher: hub id or local path; must share the student's vocabulary (required)."}
    )
    questions: str | None = field(
        default=None, metadata={"help": "The prompts: a question set, as for generate (required)."}
    )
    split: str = field(default="train", metadata={"help": "Dataset split, for hub datasets."})
    question_field: str | None = field(
        default=None, metadata={"help": "Question column (default: question/problem/Question)."}
    )
    limit: int | None = field(default=None, metadata={"help": "Use only the first N questions."})
    effective_batch_size: int = field(
        default=8, metadata={"help": "Prompts per optimizer step over all devices; sets gradient accumulation."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where the trained student is saved (required)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the prompts."})
    logging_steps: float = field(default=1, metadata={"help": "Log the loss every n steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints (the final model is always saved)."})
    bf16: bool | None = field(default=None, metadata={"help": "bfloat16 (default: on with a GPU, off on CPU)."})

    also_operational = ("disable_tqdm", "report_to", "logging_steps", "dataloader_num_workers")

    def __post_init__(self) -> None:
        for name in ("model", "teacher", "questions", "output_dir"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        self.resolve_prompt(None)
        check_fields(
            self,
            [
                *self.thread_checks(),
                (self.effective_batch_size >= 1, "effective_batch_size", "an integer >= 1"),
                (self.limit is None or self.limit >= 1, "limit", "an integer >= 1"),
            ],
        )
        gpu = torch.cuda.is_available() and not self.use_cpu
        self.bf16 = gpu if self.bf16 is None else self.bf16
        self.gradient_checkpointing = None  # the deprecated alias (TRL defaults it to True); ours decides
        self.activation_checkpointing = bool(self.activation_checkpointing)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.gradient_accumulation_steps = max(1, self.effective_batch_size // (self.per_device_train_batch_size * world))
        super().__post_init__()


@dataclass(eq=False)
class DistillResult(Result):
    """A finished on-policy distillation (also OUTPUT_DIR/train_summary.json)."""

    steps: int
    final_loss: float | None
    first_loss: float | None
    examples: int
    wall_seconds: float
