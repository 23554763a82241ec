"""The demo's tiny teacher and student: trained once on the task's two styles, cached by architecture
and training steps, locked per entry (a second process waits, then reuses it), resumable."""

from __future__ import annotations

import logging
import random
import shutil
from contextlib import nullcontext
from pathlib import Path

from ..data.store import hold_lock
from ..models.tiny import TinySpec, build_model, fit_lm, train_tokenizer
from .config import Scale
from .task import problem, terse, verbose

logger = logging.getLogger(__name__)


def tiny_pair(cache: Path, scale: Scale, fresh: bool) -> tuple[Path, Path]:
    """Teacher (verbose, accurate) and student (terse, weaker), one shared tokenizer. Each model is
    cached under a name that records its architecture and training steps, so a changed scale retrains."""
    rng = random.Random(0)
    examples = [problem(rng)[1:] for _ in range(4000)]
    texts = {
        "teacher": [verbose(a, b, c, rng) for a, b, c in examples],
        "student": [terse(a, b, c) for a, b, c in examples],
    }
    tokenizer = train_tokenizer(
        texts["teacher"] + texts["student"], vocab_size=600, added_tokens=("<think>", "</think>")
    )
    cache.mkdir(parents=True, exist_ok=True)
    paths = cache_entries(cache, scale)
    for path, (name, spec, steps) in zip(paths, _models(scale), strict=True):
        # one process trains an entry; another waits for it, then finds it cached
        with hold_lock(path.with_name(path.name + ".lock"), None, lambda p=path: _waiting(p)) or nullcontext():
            _train_entry(path, name, spec, steps, tokenizer, examples, texts[name], fresh)
    return paths[0], paths[1]


def _models(scale: Scale) -> list[tuple[str, TinySpec, int]]:
    return [("teacher", scale.teacher, scale.teacher_steps), ("student", scale.student, scale.student_steps)]


def cache_entries(cache: Path, scale: Scale) -> list[Path]:
    """The cached teacher and student of a scale, named by their architecture and training steps."""
    return [
        cache / f"{name}-{spec.model_type}-{spec.hidden_size}x{spec.num_hidden_layers}-{steps}steps"
        for name, spec, steps in _models(scale)
    ]


def _waiting(path: Path) -> None:
    logger.warning("demo: another process is training %s; waiting for it to finish", path)


def _train_entry(path: Path, name: str, spec, steps: int, tokenizer, examples, texts, fresh: bool) -> None:
    """Train one cached model (resuming its checkpoint), unless it is cached already."""
    checkpoint = path.with_name(path.name + ".training.pt")  # a killed demo resumes its training here
    if fresh:
        shutil.rmtree(path, ignore_errors=True)
        checkpoint.unlink(missing_ok=True)
    if not (path / "model.safetensors").exists():
        model = build_model(spec, tokenizer, seed=1 if name == "teacher" else 2)
        chats = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": f"What is {a} + {b} - {c}?"}, {"role": "assistant", "content": t}],
                tokenize=False,
            )
            for (a, b, c), t in zip(examples, texts, strict=True)
        ]
        losses = fit_lm(model, tokenizer, chats, steps, batch_size=16, lr=3e-3, checkpoint=checkpoint, every=50,
                        progress=f"training the tiny {name}")  # fmt: skip
        logger.info("demo %s: %d steps, loss %.3f -> %.3f", name, steps, losses[0], sum(losses[-10:]) / 10)
        tokenizer.save_pretrained(path)
        model.save_pretrained(path)  # written last: its presence marks a complete cache entry
        checkpoint.unlink()
