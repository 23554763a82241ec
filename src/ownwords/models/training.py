"""What train and distill share around a TRL trainer: the progress bar with the loss on it, and
saving the trained model so that a full disk is said as one."""

from __future__ import annotations

import errno
import logging
import time

from transformers.trainer_callback import PrinterCallback, ProgressCallback

logger = logging.getLogger(__name__)


class LossOnTheBar(ProgressCallback):
    """The Trainer's progress bar (stderr), with the latest loss on it instead of a dict per step
    printed to stdout: stdout carries the command's result only."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}")
        logger.debug("step %d: %s", state.global_step, logs)


def quiet_progress(trainer, show: bool) -> None:
    """Replace the Trainer's printed log dicts and bar with LossOnTheBar (or nothing)."""
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if show:
        trainer.add_callback(LossOnTheBar)


def save_trained(trainer, tokenizer, folder: str) -> None:
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


def losses_of(trainer) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]


def train_and_save(trainer, tokenizer, folder: str) -> tuple[dict, list[tuple[int, float]]]:
    """Train, save, and what both results report: (steps, first and final loss, wall seconds; the
    logged losses)."""
    start = time.perf_counter()
    trainer.train()
    save_trained(trainer, tokenizer, folder)
    losses = losses_of(trainer)
    done = dict(steps=trainer.state.global_step, final_loss=losses[-1][1] if losses else None,
                first_loss=losses[0][1] if losses else None, wall_seconds=time.perf_counter() - start)  # fmt: skip
    return done, losses
