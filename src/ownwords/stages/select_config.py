"""`ownwords select`'s config and result (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Result
from ..data.verify import KINDS
from ..errors import UserError, check_fields

FILTERS = ("finished", "thinking_format", "fallback_rate", "has_answer", "unverifiable", "correct")
POLICIES = ("shortest", "first", "all", "least_surprising")


@dataclass
class SelectConfig:
    store: str | None = field(
        default=None, metadata={"help": "Trace store written by `ownwords generate` (required)."}
    )
    run: str = field(default="default", metadata={"help": "Run inside the store."})
    policy: str = field(
        default="shortest",
        metadata={
            "help": f"Which passing samples to keep per question: {', '.join(POLICIES)} (the lowest mean negative "
            "log-likelihood under the student that generated them: sequence-level selection)."
        },
    )
    max_fallback_rate: float = field(
        default=0.5, metadata={"help": "Drop traces with a larger share of fallback tokens."}
    )
    require_correct: bool = field(
        default=True,
        metadata={"help": "Keep only correct answers (--no-require-correct: well-formed is enough)."},
    )
    unverifiable: str = field(
        default="drop", metadata={"help": "Samples whose gold answer cannot be checked: keep or drop."}
    )
    kind: str = field(
        default="auto",
        metadata={"help": f"Answer kind: auto (number for '#### n' golds, else math), {', '.join(KINDS)}."},
    )
    thinking_end: str | None = field(
        default=None, metadata={"help": "End-of-thinking marker (default: from the student tokenizer)."}
    )

    def __post_init__(self) -> None:
        if not self.store:
            raise UserError("store is required")
        check_fields(
            self,
            [
                (self.policy in POLICIES, "policy", f"one of {', '.join(POLICIES)}"),
                (0 <= self.max_fallback_rate <= 1, "max_fallback_rate", "in [0, 1]"),
                (self.unverifiable in ("keep", "drop"), "unverifiable", "keep or drop"),
                (self.kind == "auto" or self.kind in KINDS, "kind", f"auto or one of {', '.join(KINDS)}"),
            ],
        )


@dataclass(eq=False)
class SelectResult(Result):
    """What `select` decided for a run (also `<store>.<run>.select.json`)."""

    store: str
    run: str
    policy: str
    thinking_end: str | None
    questions: int
    questions_covered: int  # questions with a sample that passed every filter
    samples: int  # judged
    samples_passed: int
    samples_kept: int  # chosen: the training set
    kept_tokens: int
    kept_fallback_rate: float | None
    dropped: dict  # filter -> samples it dropped
    questions_without_sample: int
    questions_without_sample_examples: list
