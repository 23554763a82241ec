"""The benchmark registry (AIME24/25, MATH500, GPQA-Diamond, GSM8K, AMC23) and their loaders: each
benchmark's questions as the model sees them, with gold answers in its answer kind."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from ..errors import UserError
from .questions import Question, load_hub, load_rows


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub: tuple[str, str | None, str]  # dataset id, config, split
    kind: str  # answer kind for ownwords.data.verify.grade
    files: tuple[str, ...]  # file names it has in a data directory (e.g. ../shared/data)


REGISTRY = {
    b.name: b
    for b in (
        Benchmark("aime24", ("HuggingFaceH4/aime_2024", None, "train"), "integer", ("aime2024.jsonl",)),
        Benchmark("aime25", ("opencompass/AIME2025", "AIME2025-I", "test"), "integer", ("aime2025.jsonl",)),
        Benchmark("math500", ("HuggingFaceH4/MATH-500", None, "test"), "math", ("math500.jsonl",)),
        Benchmark(
            "gpqa_diamond",
            ("Idavidrein/gpqa", "gpqa_diamond", "train"),
            "choice",
            ("gpqa_diamond.jsonl", "gpqa_diamond.csv"),
        ),
        Benchmark("gsm8k", ("openai/gsm8k", "main", "test"), "number", ("gsm8k_test.jsonl",)),
        Benchmark("amc23", ("math-ai/amc23", None, "test"), "math", ("amc23.jsonl",)),
    )
}


def _plugins() -> None:
    """Benchmarks other packages (or ownwords' own demo) register under the entry point group
    `ownwords.benchmarks`: each a mapping of Benchmark's fields."""
    from importlib.metadata import entry_points

    for point in entry_points(group="ownwords.benchmarks"):
        fields = point.load()
        REGISTRY.setdefault(fields["name"], Benchmark(**fields))


_plugins()
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Think step by step, then give the letter of the correct option within \\boxed{}, e.g. \\boxed{A}."
)


def load_benchmark(
    name: str, path: str | None = None, limit: int | None = None, instruction: bool = True
) -> list[Question]:
    """A benchmark's questions (the prompt text the model sees) with gold answers in its answer kind."""
    bench = REGISTRY[name]
    if path is None and not bench.hub[0]:
        raise UserError(f"benchmark {name!r} has no hub copy; give its file (data)")
    what = f"benchmark {name!r} data"
    if path is not None:
        rows = load_rows(path, what=what)
    else:
        rows = load_hub(what, *bench.hub, hint="give a local copy (data or data_dir)")
    source = path or bench.hub[0]
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    if bench.kind == "choice":
        return [_choice_question(source, i, row) for i, row in enumerate(rows)]
    return [_open_question(source, i, row, instruction) for i, row in enumerate(rows)]


def _field(source: str, row: dict, names: tuple[str, ...], what: str, index: int):
    for n in names:
        if n in row and row[n] is not None and str(row[n]).strip():
            return row[n]
    raise UserError(f"{source}: row {index} has no {what} (looked for {list(names)}; it has {sorted(row)})")


def _open_question(source: str, index: int, row: dict, instruction: bool = True) -> Question:
    question = _field(source, row, ("problem", "question", "Question"), "question", index)
    answer = _field(source, row, ("answer", "Answer"), "answer", index)
    qid = str(row.get("id", row.get("unique_id", index)))
    return Question(qid, f"{question}\n\n{INSTRUCTION}" if instruction else str(question), str(answer))


def _choice_question(source: str, index: int, row: dict) -> Question:
    """GPQA: the four options shuffled with a seed fixed per question, asked as letters A-D."""
    question = _field(source, row, ("Question", "question"), "question", index)
    correct = _field(source, row, ("Correct Answer",), "correct answer", index).strip()
    options = [correct] + [
        _field(source, row, (f"Incorrect Answer {i}",), f"incorrect answer {i}", index).strip()
        for i in (1, 2, 3)
    ]
    qid = str(row.get("Record ID", index))
    rng = random.Random(int.from_bytes(hashlib.sha256(qid.encode()).digest()[:8], "little"))
    rng.shuffle(options)
    letters = "ABCD"
    listed = "\n".join(f"({letter}) {text}" for letter, text in zip(letters, options, strict=True))
    return Question(
        qid, f"{question.strip()}\n\n{listed}\n\n{CHOICE_INSTRUCTION}", letters[options.index(correct)]
    )
