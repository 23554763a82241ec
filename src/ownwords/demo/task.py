"""The demo's synthetic task: a + b - c, reasoned verbosely by the teacher and tersely by the student,
the answer boxed; question splits written with a seed, the test split holding out the training
questions. Registered as the benchmark `arithmetic` (an entry point of the package: the data layer
knows no demo)."""

from __future__ import annotations

import json
import random
from pathlib import Path

# The benchmark `arithmetic` (local files only), found by ownwords.data.benchmarks through the entry
# point ownwords.benchmarks.
ARITHMETIC = dict(name="arithmetic", hub=("", None, ""), kind="integer", files=("arithmetic_test.jsonl",))


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
