"""`ownwords demo`'s config and its two scales (torch-free: `ownwords demo --help` imports no model code)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import check_fields
from ..models.spec import TinySpec
from ..options import Threads


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
class DemoConfig(Threads):
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
    cache_dir: str | None = field(
        default=None, metadata={"help": "Model cache (default ~/.cache/ownwords/demo)."}
    )

    def __post_init__(self) -> None:
        check_fields(self, [(self.seeds >= 1, "seeds", "an integer >= 1"), *self.thread_checks()])
        if self.quick:
            self.seeds = 1
        if self.out is None:
            self.out = "ownwords-demo-quick" if self.quick else "ownwords-demo"
