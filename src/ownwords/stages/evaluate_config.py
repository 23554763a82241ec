"""`ownwords eval`'s config (torch-free: `--help`, validation and experiment planning import no model code)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Result
from ..data.benchmarks import REGISTRY
from ..errors import UserError, check_fields
from ..options import Backend, Decoding, Progress, Prompt, Runtime, ScaleOut, Threads


@dataclass
class EvalConfig(Runtime, Backend, Threads, ScaleOut, Progress, Decoding, Prompt):
    models: list[str] = field(
        default_factory=list,
        metadata={"help": "Models to evaluate: hub ids or local paths (required).", "aliases": ["--model"]},
    )
    benchmarks: list[str] = field(
        default_factory=lambda: ["math500"],
        metadata={"help": f"Any of {', '.join(REGISTRY)} (space- or comma-separated)."},
    )
    data: list[str] = field(
        default_factory=list, metadata={"help": "Local files: PATH (one benchmark) or NAME=PATH."}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "A folder holding the benchmarks under their usual file names."}
    )
    temperatures: list[str] = field(
        default_factory=lambda: ["0.7"],
        metadata={"help": "Each is a separate run, e.g. 0.6,0.8,1.0 (paper: 0.7)."},
    )
    max_length: int | None = field(
        default=None,
        metadata={"help": "Cap on prompt + response tokens (default: none; every response may take max_new_tokens)."},
    )
    thinking_budget: int | None = field(
        default=None, metadata={"help": "Cap thinking at n tokens, then close the block and answer."}
    )
    answer_tokens: int = field(
        default=1024, metadata={"help": "With a thinking budget: tokens allowed for the answer."}
    )
    instruction: bool = field(
        default=True, metadata={"help": "Append the benchmark's answer-format instruction to each question."}
    )
    out: str = field(
        default="eval", metadata={"help": "Output directory: records, results.json, tables, chart."}
    )

    def __post_init__(self) -> None:
        self.models, self.benchmarks = _split(self.models), _split(self.benchmarks)
        self.resolve_prompt(None)
        try:
            self.temperatures = [float(t) for t in _split(self.temperatures)]
        except ValueError:
            raise UserError(f"temperatures {self.temperatures!r}: expected numbers, e.g. 0.6,0.8") from None
        if not self.models:
            raise UserError("models is required (one or more models)")
        unknown = [b for b in self.benchmarks if b not in REGISTRY]
        if unknown:
            raise UserError(f"unknown benchmark(s) {unknown}; expected any of {', '.join(REGISTRY)}")
        check_fields(
            self,
            [
                *self.runtime_checks(),
                *self.backend_checks(),
                *self.thread_checks(),
                *self.scale_checks(),
                *self.decoding_checks(),
                (
                    bool(self.temperatures) and all(0 <= t < math.inf for t in self.temperatures),
                    "temperatures",
                    "one or more finite values >= 0",
                ),
                (self.max_length is None or self.max_length >= 2, "max_length", "an integer >= 2"),
                (self.thinking_budget is None or self.thinking_budget >= 1, "thinking_budget", ">= 1"),
                (self.answer_tokens >= 1, "answer_tokens", "an integer >= 1"),
            ],
        )
        self.data_paths()  # validates the --data entries

    def data_paths(self) -> dict[str, str]:
        paths = {}
        for entry in self.data:
            name, sep, path = entry.partition("=")
            if not sep:
                if len(self.benchmarks) != 1:
                    raise UserError(f"data {entry!r}: with several benchmarks write NAME=PATH")
                name, path = self.benchmarks[0], entry
            if name not in self.benchmarks:
                raise UserError(f"data {entry!r}: {name!r} is not among the benchmarks {self.benchmarks}")
            paths[name] = path
        for name in self.benchmarks:
            if name not in paths and self.data_dir:
                found = [Path(self.data_dir) / f for f in REGISTRY[name].files if (Path(self.data_dir) / f).exists()]
                if found:
                    paths[name] = str(found[0])
        return paths


def _split(values) -> list[str]:
    """Accept both `--x a b` and `--x a,b`."""
    return [part for v in values for part in str(v).split(",") if part]


@dataclass(eq=False)
class ModelEval(Result):
    """One model's evaluation: benchmark -> {"temperatures": {T: metrics}, "union_coverage": ...}
    (results.json writes it as {"model": ..., <benchmark>: ...})."""

    model: str
    benchmarks: dict

    @classmethod
    def of(cls, results: dict) -> ModelEval:
        return cls(results["model"], {k: v for k, v in results.items() if k != "model"})

    def pass1(self, benchmark: str) -> tuple[float, float]:
        """pass@1 and its standard error at the first evaluation temperature."""
        first = next(iter(self.benchmarks[benchmark]["temperatures"].values()))
        return first["pass@1"], first["pass@1_se"]

    def correct(self, benchmark: str) -> tuple[dict[str, int], int]:
        """({question id: correct samples}, samples per question) at the first temperature."""
        first = next(iter(self.benchmarks[benchmark]["temperatures"].values()))
        return first["correct_per_question"], first["samples"]

    def size(self, benchmark: str) -> tuple[int, int]:
        """(questions, samples per question) at the first temperature."""
        first = next(iter(self.benchmarks[benchmark]["temperatures"].values()))
        return first["questions"], first["samples"]
