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
import time
from pathlib import Path

import torch
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ..data.questions import load_rows
from ..errors import MissingInput, UserError
from ..files import check_writable, write_atomically
from ..models.loading import load_model, set_cpu_threads
from .train_config import OVERLONG, TrainConfig, TrainResult  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

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


def train(config: TrainConfig) -> TrainResult:
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
    summary = TrainResult(
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
        write_atomically(out / "train_summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
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
