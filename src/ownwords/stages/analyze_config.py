"""`ownwords analyze`'s config and result (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Result
from ..errors import UserError, check_fields
from ..options import Decoding, Prompt, Runtime, Threads, operational, override


@dataclass
class AnalyzeConfig(Runtime, Threads, Prompt):
    students: list[str] = field(
        default_factory=list,
        metadata={"help": "Students to score under (required).", "aliases": ["--student"]},
    )
    store: str | None = field(default=None, metadata={"help": "A generation store; its runs are trace sets."})
    runs: list[str] = field(
        default_factory=list, metadata={"help": "Runs of --store to analyse (default: all)."}
    )
    datasets: list[str] = field(
        default_factory=list,
        metadata={"help": "Exported datasets or any dataset (file or hub id) with prompt and text."},
    )
    prompt_field: str = field(
        default="prompt", metadata={"help": "Dataset column: chat messages or a question (then system_prompt)."}
    )
    text_field: str = field(
        default="completion", metadata={"help": "Dataset column: the trace (text, or messages)."}
    )
    threshold: float = field(default=0.01, metadata={"help": "p_th: a token under it is 'low probability'."})
    max_traces: int | None = field(default=None, metadata={"help": "At most n traces per set."})
    batch_size: int = override(Decoding, "batch_size", 8)  # whole traces: fewer together than in decoding
    chunk: int = field(
        default=512, metadata=operational("Long traces are scored in chunks of this many tokens (KV-cached).")
    )
    html_traces: int = field(
        default=400,
        metadata={
            "help": "Traces per set in the HTML view (0: all; each token is a span, so big sets make big pages)."
        },
    )
    out: str = field(default="analysis", metadata={"help": "Output directory."})

    def __post_init__(self) -> None:
        if not self.students:
            raise UserError("students is required (one or more models)")
        if not self.store and not self.datasets:
            raise UserError("nothing to analyse: give a store (with runs) and/or datasets")
        if self.runs and not self.store:
            raise UserError("runs needs a store")
        self.resolve_prompt(None)
        check_fields(
            self,
            [
                *self.runtime_checks(),
                *self.thread_checks(),
                (0 < self.threshold <= 1, "threshold", "a probability in (0, 1]"),
                (self.chunk >= 1, "chunk", "an integer >= 1"),
                (self.batch_size >= 1, "batch_size", "an integer >= 1"),
                (self.max_traces is None or self.max_traces >= 1, "max_traces", "an integer >= 1"),
                (self.html_traces >= 0, "html_traces", "an integer >= 0 (0: all)"),
            ],
        )


@dataclass(eq=False)
class AnalyzeResult(Result):
    """Trace sets scored under students. sets: set -> student -> statistics (analysis.json);
    matrix / training_matrix: set -> student -> share of tokens under p_th (every trace / the training
    traces); summary: set -> student -> the tokens and shares an experiment's report reads."""

    threshold: float
    students: list
    sets: dict
    matrix: dict
    training_matrix: dict
    summary: dict
    shown_traces: int = 0
