"""`ownwords train`: supervised fine-tuning of the student on exported traces, with TRL's SFTTrainer.

The config is `trl.SFTConfig` (every field is a flag) plus what ownwords needs, with the s1 recipe
as the paper's authors ran it for defaults. The loss mask is checked, not assumed: after TRL has
tokenised the data, the unsupervised tokens of every checked example must be exactly the chat
template's prompt, and the supervised ones must start with the assistant turn's content.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..data.questions import load_rows
from ..errors import MissingInput, UserError
from ..files import check_writable, write_atomically
from ..models.loading import load_model, set_cpu_threads
from ..models.training import quiet_progress, train_and_save
from ..render.training import loss_plot
from .train_config import OVERLONG, TrainConfig, TrainResult  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

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


def mask_hard_tokens(dataset, model, tokenizer, config: TrainConfig):
    """The tokenised training data with the loss off (label -100) on every supervised token the model
    scores under `mask_under` given the tokens before it (teacher forcing, batched and KV-cached)."""
    from ..decoding.scoring import score_tokens
    from ..models.facts import logits_width, padding_id

    device = "cuda" if torch.cuda.is_available() and not config.use_cpu else "cpu"
    model.to(device).eval()
    vocab, pad = min(len(tokenizer), logits_width(model)), padding_id(model, tokenizer)
    labels = [list(row["labels"]) for row in dataset]
    ids = [list(row["input_ids"]) for row in dataset]
    first = [next((i for i, label in enumerate(row) if label != -100), len(row)) for row in labels]
    order = sorted((i for i in range(len(ids)) if first[i] < len(ids[i])), key=lambda i: len(ids[i]))
    batch = max(1, config.per_device_train_batch_size * 4)
    for b in range(0, len(order), batch):
        rows = order[b : b + batch]
        probs = score_tokens(model, vocab, pad, [ids[i][: max(first[i], 1)] for i in rows],
                             [ids[i][max(first[i], 1) :] for i in rows])  # fmt: skip
        for i, p in zip(rows, probs, strict=True):
            start = max(first[i], 1)
            for j, prob in enumerate(p, start):
                if prob < config.mask_under:
                    labels[i][j] = -100
    model.train()
    return dataset.remove_columns("labels").add_column("labels", labels)


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
    quiet_progress(trainer, not config.disable_tqdm)
    check_loss_mask(trainer.train_dataset, raw, tokenizer, config.mask_checks)
    supervised = sum(sum(label != -100 for label in row["labels"]) for row in trainer.train_dataset)
    if config.mask_under > 0:
        trainer.train_dataset = mask_hard_tokens(trainer.train_dataset, model, tokenizer, config)
    masked = supervised - sum(sum(label != -100 for label in row["labels"]) for row in trainer.train_dataset)
    done, losses = train_and_save(trainer, tokenizer, config.output_dir)
    summary = TrainResult(
        **done,
        tokens_seen=int(trainer.state.num_input_tokens_seen),
        examples=len(raw),
        world_size=config.world_size,
        supervised_tokens=supervised,
        masked_tokens=masked,
    )
    if trainer.is_world_process_zero():
        out = Path(config.output_dir)
        write_atomically(out / "train_summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
        loss_plot(losses, out / "loss.png", f"ownwords train: {out.name}")
    return summary
