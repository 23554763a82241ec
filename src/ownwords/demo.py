"""`ownwords demo`: the whole loop on a laptop, in minutes.

A synthetic reasoning task (a + b - c, answer boxed) and two tiny models trained here on CPU: a
bigger teacher that reasons in a verbose, varied style (paraphrases, "wait, let me verify", filler)
and a much smaller student first trained on a terse style of its own -- a student that knows the
task's language but is weaker at it, and a teacher whose traces hold tokens the student finds
unlikely. Then `ownwords experiment` on recipes/demo.yaml: teacher, RSD and self (the student's own
correct traces) trace sets -> select -> export -> SFT (x seeds) -> eval against the base student ->
analyze -> OUT/experiment/report.md. Whatever the result at this scale, it is reported as measured.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from .data.store import hold_lock
from .errors import MissingInput, UserError
from .experiment.plan import ExperimentConfig, load_experiment
from .experiment.runner import experiment
from .models.loading import set_cpu_threads
from .models.tiny import TinySpec, build_model, fit_lm, train_tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scale:
    train_questions: int
    test_questions: int  # none of them a training question
    samples: int  # per training question, per trace set
    teacher_steps: int
    student_steps: int
    sft_epochs: float  # every arm trains this many epochs over its own examples (equal budgets)
    teacher: TinySpec = TinySpec("qwen3", 128, 3, 4, 2, 384, logit_scale=1.0)
    student: TinySpec = TinySpec("llama", 48, 2, 4, 2, 96, logit_scale=1.0)


SCALES = {
    "full": Scale(
        train_questions=400,
        test_questions=200,
        samples=2,
        teacher_steps=3000,
        student_steps=320,
        sft_epochs=4,
    ),
    "quick": Scale(
        train_questions=120, test_questions=80, samples=2, teacher_steps=1200, student_steps=320, sft_epochs=3
    ),
}
KIND_FILE = "demo.json"  # in OUT: which demo (full or quick) wrote it
DEMO_LAYOUT = {"data", "models", "experiment", KIND_FILE}  # what a demo writes in OUT (an older one: no marker)


@dataclass
class DemoConfig:
    out: str | None = field(
        default=None,
        metadata={
            "help": "Where the report, data, models and plots go (default: ownwords-demo, or ownwords-demo-quick "
            "with --quick: the two never overwrite each other)."
        },
    )
    quick: bool = field(
        default=False,
        metadata={
            "help": "One seed, smaller everything (about 2.5 minutes on 2 CPU cores; under 30 s once its models are cached)."
        },
    )
    seeds: int = field(default=3, metadata={"help": "SFT seeds per arm (the report gives mean and spread)."})
    fresh: bool = field(default=False, metadata={"help": "Retrain the cached tiny teacher and student."})
    threads: int = field(default=0, metadata={"help": "torch CPU threads (0: the free cores)."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Model cache (default ~/.cache/ownwords/demo)."}
    )

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise UserError(f"seeds is {self.seeds}; expected >= 1")
        if self.quick:
            self.seeds = 1
        if self.out is None:
            self.out = "ownwords-demo-quick" if self.quick else "ownwords-demo"


# -- the task -----------------------------------------------------------------------------------


def problem(rng: random.Random) -> tuple[str, int, int, int]:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    c = rng.randint(1, a + b - 1)
    return f"What is {a} + {b} - {c}?", a, b, c


def terse(a: int, b: int, c: int) -> str:
    s = a + b
    return f"<think>\n{a} + {b} = {s}. {s} - {c} = {s - c}.\n</think>\nThe answer is \\boxed{{{s - c}}}."


def verbose(a: int, b: int, c: int, rng: random.Random) -> str:
    s, r = a + b, a + b - c
    pick = rng.choice
    parts = [
        pick(
            [
                "Alright, let me work through this carefully.",
                "Okay, so we need to combine these numbers.",
                "Let me think about this step by step.",
                "Hmm, this needs two operations.",
            ]
        ),
        pick(
            [
                f"First, I add {a} and {b}, which gives {s}.",
                f"Adding {a} to {b}, I get {s}.",
                f"Starting with {a} plus {b}: that makes {s}.",
            ]
        ),
        pick(
            [
                f"Wait, let me verify: {s} minus {b} is {a}. Yes.",
                f"Hmm, double-check: {a} + {b} is indeed {s}.",
                "That looks right so far.",
            ]
        ),
        pick(
            [
                f"Now subtract {c}: {s} - {c} = {r}.",
                f"Then I take away {c} from {s}, leaving {r}.",
                f"Next, {s} minus {c} equals {r}.",
            ]
        ),
        pick(
            [
                f"Let me verify once more: {r} + {c} = {s}. Good.",
                f"Wait, is that right? {r} plus {c} gives {s}, so yes.",
                "",
            ]
        ),
    ]
    closer = pick(["So the final answer is", "Therefore, the answer is", "The answer is"])
    return "<think>\n" + " ".join(p for p in parts if p) + f"\n</think>\n{closer} \\boxed{{{r}}}."


def write_split(path: Path, n: int, seed: int, exclude: Path | None = None) -> None:
    """n questions drawn with `seed`; none of them a question of the split `exclude` (the test split
    holds out the training questions: the task has about 700 distinct ones, so random draws overlap)."""
    rng = random.Random(seed)
    taken = {json.loads(line)["question"] for line in exclude.read_text().splitlines()} if exclude else set()
    rows = []
    while len(rows) < n:
        question, a, b, c = problem(rng)
        if question not in taken:
            rows.append({"id": f"{path.stem}-{len(rows)}", "question": question, "answer": str(a + b - c)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# -- the models ---------------------------------------------------------------------------------


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


# -- the loop ---------------------------------------------------------------------------------

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"


def demo_experiment(config: DemoConfig, out: Path, scale: Scale) -> ExperimentConfig:
    """recipes/demo.yaml, pointed at OUT's models and data; --quick: one seed, fewer SFT steps."""
    if not RECIPE.is_file():
        raise MissingInput(
            f"the demo's recipe {str(RECIPE)!r} is missing; run the demo from a clone of ownwords"
        )
    experiment = load_experiment(RECIPE)
    experiment.out = str(out / "experiment")
    experiment.teacher, experiment.students = (
        str(out / "models" / "teacher"),
        [str(out / "models" / "student")],
    )
    experiment.questions = str(out / "data" / "arithmetic_train.jsonl")
    experiment.seeds = config.seeds
    experiment.sections["eval"]["data"] = [str(out / "data" / "arithmetic_test.jsonl")]
    experiment.sections["train"]["num_train_epochs"] = scale.sft_epochs
    experiment.sections["generate"]["samples"] = scale.samples
    for section in ("generate", "eval"):
        experiment.sections[section]["threads"] = config.threads
    experiment.sections["train"]["threads"] = config.threads
    return experiment


def _claim(out: Path, kind: str) -> None:
    """OUT holds one demo: a quick demo never replaces a full one's results, nor the other way round."""
    marker = out / KIND_FILE
    if marker.is_file():
        made = json.loads(marker.read_text()).get("kind")
        if made != kind:
            raise UserError(
                f"folder {str(out)!r} holds the results of the {made} demo; the {kind} demo would replace them: "
                f"give it another --out (the {kind} demo's default is "
                f"{'ownwords-demo-quick' if kind == 'quick' else 'ownwords-demo'})"
            )
    elif out.exists() and {p.name for p in out.iterdir()} - DEMO_LAYOUT:
        raise UserError(f"folder {str(out)!r} is not empty and no demo wrote it; give the demo another --out")
    (out / "data").mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kind": kind}) + "\n")


def run_demo(config: DemoConfig) -> dict:
    """Train (or reuse) the tiny pair, write the task's splits, run the demo experiment; the report is
    OUT/experiment/report.md."""
    kind = "quick" if config.quick else "full"
    scale = SCALES[kind]
    out = Path(config.out)
    _claim(out, kind)
    cache = Path(
        config.cache_dir
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords" / "demo"
    )
    set_cpu_threads(config.threads)
    start = time.perf_counter()
    cached = tiny_pair(cache, scale, config.fresh)
    models_seconds = time.perf_counter() - start
    # Published under OUT/models by their role (copies keep modification times, so the evaluation's
    # weight fingerprint changes only when the models were retrained): every stage can be tried on them.
    for source, role in zip(cached, ("teacher", "student"), strict=True):
        shutil.copytree(source, out / "models" / role, dirs_exist_ok=True)
    train = out / "data" / "arithmetic_train.jsonl"
    write_split(train, scale.train_questions, seed=1)
    write_split(out / "data" / "arithmetic_test.jsonl", scale.test_questions, seed=2, exclude=train)
    summary = experiment(demo_experiment(config, out, scale))
    logger.info("demo: tiny models %.1f s", models_seconds)
    return summary | {"models_seconds": models_seconds}
