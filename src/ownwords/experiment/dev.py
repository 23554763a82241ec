"""A dev split: part of the training questions held out, on which a sweep's arms are compared, so the
value the report carries to the test benchmarks is chosen without looking at them.

`split_questions` writes the two parts (each row as it was, in file order); a row goes to dev by a
hash of its content and the seed, so editing one question moves only that one. `best_on_dev` picks
a sweep's value from dev accuracies alone: the choose stage runs after the dev evaluations and
before any test evaluation of the chosen arm, and it is given nothing else.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Result
from ..errors import UserError
from ..files import write_atomically


@dataclass
class SplitConfig:
    questions: str  # the experiment's question set
    fraction: float  # of its questions held out as dev
    train: str  # where the training part is written
    dev: str  # where the dev part is written
    split: str = "train"  # of a hub dataset
    seed: int = 0


@dataclass(eq=False)
class SplitResult(Result):
    train: int  # questions
    dev: int


@dataclass
class ChooseConfig:
    option: str  # the swept generate option
    values: list  # in the arm's order
    arms: list[str]  # the arm of each value
    dev: dict[str, list[str]]  # arm -> its models' dev evaluation stages (one per seed)
    benchmark: str


@dataclass(eq=False)
class ChoiceResult(Result):
    option: str
    value: object  # the chosen value
    arm: str  # the arm that has it
    benchmark: str
    dev_accuracy: dict[str, float] = field(default_factory=dict)  # arm -> mean dev pass@1 over seeds


def split_questions(config: SplitConfig) -> SplitResult:
    from ..data.questions import load_rows

    rows = [dict(r) for r in load_rows(config.questions, config.split)]
    keys = [hashlib.sha256(f"{config.seed}:{json.dumps(r, sort_keys=True, default=str)}".encode()).hexdigest()
            for r in rows]  # fmt: skip
    held = round(config.fraction * len(rows))
    if not 1 <= held < len(rows):
        raise UserError(
            f"dev_fraction {config.fraction} of {len(rows)} questions in {config.questions!r} holds out {held}; "
            "it must leave at least one question on each side"
        )
    dev = set(sorted(range(len(rows)), key=keys.__getitem__)[:held])
    for path, part in ((config.train, [r for i, r in enumerate(rows) if i not in dev]),
                       (config.dev, [r for i, r in enumerate(rows) if i in dev])):  # fmt: skip
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(Path(path), "".join(json.dumps(r, default=str) + "\n" for r in part))
    return SplitResult(train=len(rows) - held, dev=held)


def best_on_dev(accuracy: dict[str, list[float]]) -> str:
    """The arm of highest mean dev accuracy over its seeds; a tie goes to the arm listed first."""
    means = {arm: statistics.mean(values) for arm, values in accuracy.items()}
    return max(means, key=lambda arm: (means[arm], -list(means).index(arm)))
