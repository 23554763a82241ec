"""`ownwords train`'s config (TRL's SFTConfig, whose flags are its own, with the s1 recipe as
defaults) and result. It imports TRL, and so torch; nothing of ownwords' model code."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from trl import SFTConfig

from ..config import Result
from ..errors import UserError, check_fields
from ..options import Threads

OVERLONG = ("drop", "truncate")


@dataclass
class TrainConfig(SFTConfig, Threads):
    model: str | None = field(
        default=None, metadata={"help": "Student to fine-tune: hub id or local path (required)."}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Traces from `ownwords export`: .jsonl/.parquet, a save_to_disk directory or a hub id (required)."
        },
    )
    overlong: str = field(
        default="drop", metadata={"help": "Examples over --max-length: drop (counted) or truncate (warned)."}
    )
    effective_batch_size: int = field(
        default=16,
        metadata={"help": "Examples per optimizer step over all devices; sets gradient accumulation."},
    )
    mask_checks: int = field(default=16, metadata={"help": "Tokenised examples whose loss mask is verified."})
    mask_under: float = field(
        default=0.0,
        metadata={
            "help": "Take the loss off the completion tokens the model being trained scores under this probability "
            "(teacher forcing before training, the a(x) RSD accepts by; 0 = off): the hard tokens out of the "
            "gradient instead of out of the trace."
        },
    )
    # The s1 recipe (simplescaling/s1 train/sft.sh), as the paper's authors ran it.
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the fine-tuned model is saved (required)."}
    )
    learning_rate: float = field(default=1e-5, metadata={"help": "Peak learning rate (s1: 1e-5)."})
    lr_scheduler_type: str = field(
        default="cosine", metadata={"help": "Decay to 0 after warm-up (s1: cosine)."}
    )
    warmup_steps: float = field(
        default=0.05, metadata={"help": "Warm-up: steps, or a fraction of all steps (s1: 0.05)."}
    )
    weight_decay: float = field(default=1e-4, metadata={"help": "AdamW weight decay (s1: 1e-4)."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (s1: 0.95)."})
    num_train_epochs: float = field(default=5.0, metadata={"help": "Epochs (s1: 5; the paper reports 15)."})
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Examples per device per micro-step."}
    )
    max_length: int | None = field(default=8192, metadata={"help": "Maximum tokens of prompt + completion."})
    packing: bool = field(
        default=False, metadata={"help": "Pack several examples into one sequence (s1: off)."}
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bfloat16 (default: on with a GPU, off on CPU)."}
    )
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Default: on with a GPU, off on CPU."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log the loss every n steps."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP: look for unused parameters."}
    )
    save_strategy: str = field(
        default="no", metadata={"help": "Checkpoints during training (the final model is always saved)."}
    )
    include_num_input_tokens_seen: str | bool = field(
        default=True, metadata={"help": "Count the tokens trained on."}
    )

    # TRL's fields that change no result (an experiment does not retrain for them)
    also_operational = ("disable_tqdm", "report_to", "logging_steps", "dataloader_num_workers")

    def __post_init__(self) -> None:
        for name in ("model", "dataset", "output_dir"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        check_fields(
            self,
            [
                *self.thread_checks(),
                (self.overlong in OVERLONG, "overlong", f"one of {', '.join(OVERLONG)}"),
                (self.effective_batch_size >= 1, "effective_batch_size", "an integer >= 1"),
                (0 <= self.mask_under <= 1, "mask_under", "a probability in [0, 1]"),
            ],
        )
        gpu = torch.cuda.is_available() and not self.use_cpu
        self.bf16 = gpu if self.bf16 is None else self.bf16
        if self.activation_checkpointing is None:
            self.activation_checkpointing = gpu
        self.gradient_checkpointing = None  # the deprecated alias (TRL defaults it to True); ours decides
        self.dataloader_pin_memory = self.dataloader_pin_memory and gpu
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.gradient_accumulation_steps = max(
            1, self.effective_batch_size // (self.per_device_train_batch_size * world)
        )
        super().__post_init__()


@dataclass(eq=False)
class TrainResult(Result):
    """A finished training (also OUTPUT_DIR/train_summary.json)."""

    steps: int
    final_loss: float | None
    first_loss: float | None
    tokens_seen: int
    examples: int
    world_size: int
    wall_seconds: float
    supervised_tokens: int = 0  # completion tokens with a loss, before mask_under
    masked_tokens: int = 0  # of those, taken out by mask_under
