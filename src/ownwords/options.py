"""Options more than one stage has, each declared once: small dataclasses that stage configs inherit
(composition, with the flags as flat as ever: `--device`, `--threads`), so a flag means the same, with
the same help and the same checks, in every command.

Two marks in a field's metadata say what the machinery may ignore: ``operational`` -- it changes no
output (threads, progress bars, parallelism, batch sizes: a sample does not depend on its batch-mates),
so a cached experiment stage is not redone for it; ``resumable`` -- a run may be resumed with another
value (where it is written, how many samples it has, the device), so the store does not refuse it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DTYPES = ("float32", "bfloat16", "float16")
STAGE_DEFAULT = "default"  # a system prompt of "default": the stage's own (generate: the paper's, eval: none)


def operational(help: str, **more) -> dict:
    return {"help": help, "operational": True, **more}


def resumable(help: str, **more) -> dict:
    return {"help": help, "resumable": True, **more}


def override(group, name: str, default):
    """A shared option with another default in one stage: its one declaration (type, help, marks:
    the same metadata object), only the default differs."""
    canonical = group.__dataclass_fields__[name]
    return field(default=default, metadata=canonical.metadata)


def marked(cls, mark: str) -> set[str]:
    """The fields of config class `cls` marked `mark` in their metadata (and those it lists itself in
    `also_<mark>`: fields it inherits from a library's config, such as TRL's)."""
    own = {f.name for f in dataclasses.fields(cls) if f.metadata.get(mark)}
    return own | set(getattr(cls, f"also_{mark}", ()))


@dataclass
class Runtime:
    device: str = field(default="cpu", metadata=resumable("cpu, cuda, cuda:1, mps ..."))
    dtype: str = field(default="float32", metadata={"help": f"Model dtype: {', '.join(DTYPES)}."})

    def runtime_checks(self) -> list[tuple[bool, str, str]]:
        return [(self.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}")]


BACKENDS = ("hf", "vllm")


@dataclass
class Backend:
    backend: str = field(
        default="hf",
        metadata={
            "help": "hf: ownwords' engine (RSD and everything else); vllm: vLLM, for plain sampling from one model "
            "(evaluation, teacher-only and self runs; RSD needs both models at every token and stays on hf)."
        },
    )

    def backend_checks(self) -> list[tuple[bool, str, str]]:
        return [(self.backend in BACKENDS, "backend", f"one of {', '.join(BACKENDS)}")]


@dataclass
class Threads:
    threads: int = field(
        default=0,
        metadata=operational("torch CPU threads (0: the cores other work leaves free; each Ray worker: 1 unless set)."),
    )

    def thread_checks(self) -> list[tuple[bool, str, str]]:
        return [(self.threads >= 0, "threads", "an integer >= 0 (0: the free cores)")]


@dataclass
class ScaleOut:
    workers: int = field(
        default=1,
        metadata=operational(
            "Ray workers, each with its models on its own device (one GPU each with --device cuda); 1: this "
            "process alone, no Ray."
        ),
    )
    ray_address: str | None = field(
        default=None, metadata=operational("Join this Ray cluster (`ray start --head`); default: a local instance.")
    )

    def scale_checks(self) -> list[tuple[bool, str, str]]:
        return [(self.workers >= 1, "workers", "an integer >= 1")]


@dataclass
class Progress:
    progress: bool = field(default=True, metadata=operational("Show progress bars."))


@dataclass
class Decoding:
    """How many samples, how long, from which questions: generation and evaluation alike."""

    samples: int = field(default=1, metadata=resumable("Samples per question (n)."))
    max_new_tokens: int = field(default=7168, metadata={"help": "Maximum tokens generated per sample."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus filter (1 = off; the paper: 0.95)."})
    seed: int = field(
        default=0, metadata={"help": "Run seed; each sample's seed derives from (seed, question id, sample index)."}
    )
    limit: int | None = field(default=None, metadata=resumable("Only the first n questions (of each benchmark)."))
    batch_size: int = field(
        default=16, metadata=operational("Sequences run together (generated, or scored).", resumable=True)
    )

    def decoding_checks(self) -> list[tuple[bool, str, str]]:
        return [
            (self.samples >= 1, "samples", "an integer >= 1"),
            (self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
            (self.limit is None or self.limit >= 1, "limit", "an integer >= 1"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
        ]


@dataclass
class Prompt:
    system_prompt: str | None = field(
        default=STAGE_DEFAULT,
        metadata={
            "help": "System prompt ('' for none; 'default': generate's is the paper's step-by-step prompt, eval's "
            "and analyze's none)."
        },
    )
    generation_prefix: str = field(
        default="",
        metadata={
            "help": "Text after the assistant turn's opening, e.g. '<think>\\n' (\\n and \\t are read as escapes)."
        },
    )

    def resolve_prompt(self, default: str | None) -> None:
        if self.system_prompt == STAGE_DEFAULT:
            self.system_prompt = default
        self.generation_prefix = unescape(self.generation_prefix)


def unescape(text: str) -> str:
    """`\\n` and `\\t` written as two characters (a shell's "<think>\\n") -> newline and tab. Used for
    generation prefixes and stop strings, where a literal backslash-n is never what was meant."""
    return text.replace("\\n", "\n").replace("\\t", "\t")
