"""`ownwords train`: supervised fine-tuning of the student on exported traces, with TRL's SFTTrainer.

The config is `trl.SFTConfig` (every field is a flag) plus what ownwords needs, with the s1 recipe
as the paper's authors ran it for defaults. The loss mask is checked, not assumed: after TRL has
tokenised the data, the unsupervised tokens of every checked example must be exactly the chat
template's prompt, and the supervised ones must start with the assistant turn's content.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig

from ..data.questions import load_rows
from ..errors import MissingInput, UserError
from ..files import check_writable, write_atomically
from ..models.loading import load_model, set_cpu_threads

logger = logging.getLogger(__name__)

OVERLONG = ("drop", "truncate")


@dataclass
class TrainConfig(SFTConfig):
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
    threads: int = field(default=0, metadata={"help": "torch CPU threads on CPU (0: the free cores)."})
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

    def __post_init__(self) -> None:
        for name in ("model", "dataset", "output_dir"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        if self.overlong not in OVERLONG:
            raise UserError(f"overlong is {self.overlong!r}; expected one of {', '.join(OVERLONG)}")
        if self.effective_batch_size < 1:
            raise UserError(f"effective_batch_size is {self.effective_batch_size}; expected >= 1")
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


class LossOnTheBar(ProgressCallback):
    """The Trainer's progress bar (stderr), with the latest loss on it instead of a dict per step
    printed to stdout: stdout carries the command's result only."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}")
        logger.debug("step %d: %s", state.global_step, logs)


def load_traces(source: str):
    """A chat dataset with `prompt`/`completion` (or `messages`) columns, from a file, a directory or the hub."""
    from datasets import load_from_disk

    path = Path(source)
    if path.is_dir():
        dataset = load_from_disk(str(path))
    elif path.suffix in (".jsonl", ".json", ".parquet") or not (
        source.startswith((".", "/", "~")) or path.suffix
    ):
        dataset = load_rows(source, what="dataset")
    else:
        raise MissingInput(f"dataset {source!r}: expected a .jsonl/.json/.parquet file or a directory")
    columns = set(dataset.column_names)
    if not ({"prompt", "completion"} <= columns or "messages" in columns):
        raise UserError(
            f"dataset {source!r} has columns {sorted(columns)}; expected 'prompt' and 'completion' "
            "(as `ownwords export` writes) or 'messages'"
        )
    first = dataset[0]
    for column in ("messages",) if "messages" in columns else ("prompt", "completion"):
        if not (isinstance(first[column], list) and all(isinstance(m, dict) for m in first[column])):
            raise UserError(
                f"dataset {source!r}: column {column!r} holds {type(first[column]).__name__}, expected a list "
                "of chat messages ({'role': ..., 'content': ...}) as `ownwords export` writes"
            )
    return dataset


def _conversation(example: dict) -> list[dict]:
    return example["messages"] if "messages" in example else example["prompt"] + example["completion"]


def apply_length_policy(dataset, tokenizer, config: TrainConfig):
    """Drop (with a count) or keep-and-warn examples longer than max_length; never silently."""
    if config.max_length is None:
        return dataset
    lengths = [
        len(
            tokenizer(
                tokenizer.apply_chat_template(_conversation(ex), tokenize=False), add_special_tokens=False
            ).input_ids
        )
        for ex in dataset
    ]
    over = [i for i, n in enumerate(lengths) if n > config.max_length]
    if not over:
        return dataset
    if config.overlong == "truncate":
        logger.warning(
            "%d of %d examples exceed max_length=%d and will be truncated",
            len(over),
            len(lengths),
            config.max_length,
        )
        return dataset
    logger.warning(
        "dropping %d of %d examples longer than max_length=%d", len(over), len(lengths), config.max_length
    )
    keep = sorted(set(range(len(lengths))) - set(over))
    if not keep:
        raise UserError(f"every example of {config.dataset!r} is longer than max_length={config.max_length}")
    return dataset.select(keep)


def check_loss_mask(train_dataset, raw_dataset, tokenizer, n: int) -> None:
    """The unsupervised tokens must be exactly the templated prompt; the supervised ones the assistant turn."""
    if "prompt" not in raw_dataset.column_names:
        return  # `messages` data: TRL's assistant_only_loss owns the mask (needs generation tags in the template)
    for i in range(min(n, len(train_dataset))):
        row, raw = train_dataset[i], raw_dataset[i]
        labels = row.get("labels") or [
            t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"], strict=True)
        ]
        prompt_ids = [t for t, lab in zip(row["input_ids"], labels, strict=True) if lab == -100]
        target_ids = [t for t, lab in zip(row["input_ids"], labels, strict=True) if lab != -100]
        expected_prompt = tokenizer.apply_chat_template(
            raw["prompt"], tokenize=False, add_generation_prompt=True
        )
        content = raw["completion"][0]["content"]
        if tokenizer.decode(prompt_ids) != expected_prompt or not tokenizer.decode(target_ids).startswith(
            content[:200]
        ):
            raise UserError(
                f"loss mask check failed on example {i}: with this chat template the prompt/completion split does "
                "not match the prompt and the assistant turn (the template may rewrite earlier turns or the "
                "assistant content); the loss would not be on the assistant tokens only"
            )


def train(config: TrainConfig) -> dict:
    """Fine-tune, save the model + tokenizer, write train_summary.json and loss.png; returns the summary."""
    from trl import SFTTrainer

    raw = load_traces(config.dataset)
    check_writable(config.output_dir, "output_dir")
    if config.use_cpu or not torch.cuda.is_available():
        set_cpu_threads(config.threads)
    model, tokenizer = load_model(config.model, "cpu", "bfloat16" if config.bf16 else "float32")
    model.train()  # the Trainer places it on its device
    raw = apply_length_policy(raw, tokenizer, config)
    trainer = SFTTrainer(model, args=config, train_dataset=raw, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not config.disable_tqdm:
        trainer.add_callback(LossOnTheBar)
    check_loss_mask(trainer.train_dataset, raw, tokenizer, config.mask_checks)
    start = time.perf_counter()
    trainer.train()
    _save(trainer, tokenizer, config.output_dir)
    losses = [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]
    summary = dict(
        steps=trainer.state.global_step,
        final_loss=losses[-1][1] if losses else None,
        first_loss=losses[0][1] if losses else None,
        tokens_seen=int(trainer.state.num_input_tokens_seen),
        examples=len(raw),
        world_size=config.world_size,
        wall_seconds=time.perf_counter() - start,
    )
    if trainer.is_world_process_zero():
        out = Path(config.output_dir)
        write_atomically(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
        _plot_losses(losses, out / "loss.png")
    return summary


def _save(trainer, tokenizer, folder: str) -> None:
    """The model and its tokenizer; a full disk is the OSError it is (safetensors reports it as its
    own error type), so that it is said in one line and the run can be resumed."""
    from safetensors import SafetensorError

    try:
        trainer.save_model(folder)
        tokenizer.save_pretrained(folder)
    except SafetensorError as err:
        if "No space" in str(err) or "os error 28" in str(err):
            raise OSError(errno.ENOSPC, "No space left on device", folder) from err
        raise


def _plot_losses(losses: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
    ax.set(xlabel="optimizer step", ylabel="training loss", title=f"ownwords train: {path.parent.name}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
