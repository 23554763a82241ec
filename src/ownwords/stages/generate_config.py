"""`ownwords generate`'s config and result (torch-free: `--help`, validation and experiment planning
import no model code)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..config import Result
from ..errors import UserError, check_fields
from ..options import Backend, Decoding, Progress, Prompt, Runtime, ScaleOut, Threads, resumable, unescape
from ..rsd import LOGPROBS, RULES

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
MAX_TRIALS = 1000  # each trial costs two float64 uniforms per row and step
PRESETS = {
    # The paper authors' code (DESIGN §2): T and S are the top-20 log-probabilities vLLM returned,
    # renormalised (T over the shared tokens, after taking the teacher's own top 20). Which
    # log-probabilities vLLM returned depends on its `logprobs_mode`: "raw" (the default here: before
    # temperature and top-p) or "processed" (after them), one flag away. Accepted tokens must also
    # be in the student's top 20 (acceptance_top_k), except for the baselines p_th = 0 and p_th > 1.
    "paper": dict(
        threshold=0.01,
        rule="threshold",
        trials=5,
        top_k=20,
        logprobs="raw",
        temperature=0.7,
        top_p=0.95,
        max_length=8192,
        max_new_tokens=7168,
        generation_prefix="<think>\n",
        system_prompt=DEFAULT_SYSTEM_PROMPT,
    )
}
PRESET_ACCEPTANCE_TOP_K = {"paper": 20}
# The models and the questions enter a run's identity by their content (fingerprints), not by their
# paths, so a moved or copied folder resumes and new weights at the same path do not.
BY_CONTENT = ("teacher", "student", "questions")
FINGERPRINTS = ("teacher_fingerprint", "student_fingerprint")


@dataclass
class GenerateConfig(Runtime, Backend, Threads, ScaleOut, Progress, Decoding, Prompt):
    teacher: str | None = field(
        default=None, metadata=resumable("Teacher model: hub id or local path (required).")
    )
    student: str | None = field(
        default=None, metadata=resumable("Student model: hub id or local path (required).")
    )
    questions: str | None = field(
        default=None,
        metadata=resumable("Questions: hub dataset id or local .jsonl/.json/.parquet/.csv (required)."),
    )
    split: str = field(default="train", metadata={"help": "Dataset split, for hub datasets."})
    question_field: str | None = field(
        default=None, metadata={"help": "Question column (default: question/problem/Question)."}
    )
    answer_field: str | None = field(
        default=None, metadata={"help": "Gold answer column (default: answer/solution/Correct Answer)."}
    )
    id_field: str | None = field(
        default=None, metadata={"help": "Id column (default: id/unique_id, else the row number)."}
    )
    threshold: float = field(
        default=0.01,
        metadata={
            "help": "The acceptance rule's parameter: p_th for 'threshold' (0 = teacher only, >1 = student only), "
            "k for 'rank', mass for 'nucleus', fraction for 'percentile'."
        },
    )
    rule: str = field(default="threshold", metadata={"help": f"Acceptance rule: {', '.join(RULES)}."})
    acceptance_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Also require accepted tokens in the student's top-k (0 = off; default 0, or 20 under "
            "--preset paper except for the baselines --threshold 0 and > 1)."
        },
    )
    score: str = field(
        default="raw",
        metadata={"help": "Acceptance score: 'raw' student softmax (T=1, full vocab) or 'processed' S(x)."},
    )
    trials: int = field(
        default=5, metadata={"help": "Teacher proposals tried per position before the student falls back."}
    )
    max_length: int = field(default=8192, metadata={"help": "Maximum prompt + generated tokens."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of T and S (0 = greedy)."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k filter of T and S (0 = off)."})
    logprobs: str = field(
        default="none",
        metadata={
            "help": "T and S as vLLM's top-k log-probabilities were: none (the sampler's own distribution), "
            "raw (logprobs_mode=raw_logprobs: top-k of the plain softmax), processed (processed_logprobs: "
            "temperature, top-p, then top-k)."
        },
    )
    speculate: int = field(
        default=0,
        metadata={
            "help": "Speculative RSD: the student drafts K tokens, the teacher verifies them in one pass; "
            "same distribution, fewer teacher passes (0 = off)."
        },
    )
    token_budget: int = field(
        default=0,
        metadata={
            "help": "Stop once the run holds this many generated tokens (0 = off); --samples is then a cap per "
            "question, and the samples go by index (every question's first, then every second...)."
        },
    )
    stop_strings: list[str] = field(
        default_factory=list, metadata={"help": "Stop when any of these strings is generated."}
    )
    store: str = field(
        default="ownwords.sqlite", metadata=resumable("SQLite trace store (created if missing).")
    )
    run: str = field(
        default="default", metadata=resumable("Run name inside the store; several runs may share one.")
    )
    preset: str | None = field(default=None, metadata={"help": f"Settings preset: {', '.join(PRESETS)}."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the hub (off: safetensors + library code)."}
    )
    min_vocab_overlap: float = field(
        default=0.5, metadata={"help": "Refuse tokenizer pairs sharing less than this fraction."}
    )

    def __post_init__(self) -> None:
        for name in ("teacher", "student", "questions"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        self.resolve_prompt(DEFAULT_SYSTEM_PROMPT)
        self.stop_strings = [unescape(x) for x in self.stop_strings]
        check_fields(
            self,
            [
                *self.runtime_checks(),
                *self.backend_checks(),
                *self.thread_checks(),
                *self.scale_checks(),
                *self.decoding_checks(),
                (1 <= self.trials <= MAX_TRIALS, "trials", f"an integer in [1, {MAX_TRIALS}]"),
                (self.max_length >= 2, "max_length", "an integer >= 2"),
                (0 <= self.temperature < math.inf, "temperature", "a finite number >= 0"),
                (self.top_k >= 0, "top_k", ">= 0"),
                (self.logprobs in LOGPROBS, "logprobs", f"one of {', '.join(LOGPROBS)}"),
                (
                    self.logprobs == "none" or self.top_k > 0,
                    "top_k",
                    "> 0 with logprobs raw/processed (the list's length)",
                ),
                (self.speculate >= 0, "speculate", "an integer >= 0"),
                (self.token_budget >= 0, "token_budget", "an integer >= 0"),
                (self.score in ("raw", "processed"), "score", "'raw' or 'processed'"),
                (0 <= self.min_vocab_overlap <= 1, "min_vocab_overlap", "in [0, 1]"),
                (math.isfinite(self.threshold), "threshold", "a finite number"),
                (self.acceptance_top_k is None or self.acceptance_top_k >= 0, "acceptance_top_k", ">= 0"),
                (self.preset is None or self.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}"),
            ],
        )
        self._resolve_baselines()
        try:
            self.acceptance_rule()
        except ValueError as err:
            raise UserError(f"threshold / rule: {err}") from None
        if self.backend == "vllm":
            self._check_vllm()

    @property
    def sampled_by(self) -> str | None:
        """The one model a baseline samples from: "teacher" (p_th = 0), "student" (p_th > 1), else None."""
        if self.rule == "threshold" and self.threshold == 0:
            return "teacher"
        return "student" if self.rule == "threshold" and self.threshold > 1 else None

    def _check_vllm(self) -> None:
        if self.sampled_by is None:
            raise UserError(
                f"backend vllm runs plain sampling from one model: a teacher-only (threshold 0) or self (threshold > 1) "
                f"run; this run is RSD (rule {self.rule!r}, threshold {self.threshold:g}), which needs both models at "
                "every token: use --backend hf"
            )
        if self.logprobs != "none":
            raise UserError(
                f"backend vllm samples with vLLM's own sampler; logprobs {self.logprobs!r} emulates the authors' "
                "renormalised top-k lists on the hf engine: set logprobs none (top_k then filters as usual) or use "
                "--backend hf"
            )

    def _resolve_baselines(self) -> None:
        """p_th = 0 is plain teacher sampling and p_th > 1 plain student sampling, whatever the preset
        sets; options that would make a baseline something else are refused, not reinterpreted."""
        teacher_only = self.rule == "threshold" and self.threshold == 0
        student_only = self.rule == "threshold" and self.threshold > 1
        if self.acceptance_top_k is None:
            preset_k = PRESET_ACCEPTANCE_TOP_K.get(self.preset or "", 0)
            self.acceptance_top_k = 0 if teacher_only or student_only else preset_k
        elif teacher_only and self.acceptance_top_k > 0:
            raise UserError(
                f"threshold 0 is the teacher-only baseline (every proposal accepted), but acceptance_top_k "
                f"{self.acceptance_top_k} would reject proposals outside the student's top-k; drop "
                "acceptance_top_k for the baseline, or use a threshold > 0"
            )

    def acceptance_rule(self):
        from ..rsd.sampling import AcceptanceRule

        return AcceptanceRule(self.rule, self.threshold, self.acceptance_top_k)

    def sampling(self):
        from ..decoding.engine import Sampling

        return Sampling(self.temperature, self.top_k, self.top_p, self.logprobs)

    def engine(self, student, student_tokenizer, teacher, alignment, **changes):
        """The Engine these settings describe, on loaded models; `changes`: Engine arguments to override."""
        from ..decoding.engine import RSD, Engine

        settings = dict(
            sampling=self.sampling(), rsd=RSD(self.acceptance_rule(), self.trials, self.score),
            max_new_tokens=self.max_new_tokens, max_length=self.max_length, stop_strings=tuple(self.stop_strings),
            batch_size=self.batch_size, speculate=self.speculate,
        )  # fmt: skip
        return Engine(student, student_tokenizer, teacher, alignment, **(settings | changes))


@dataclass(eq=False)
class GenerateResult(Result):
    """A run's totals after `generate` (also `<store>.<run>.summary.json`)."""

    run: str
    store: str
    samples: int  # every sample of the run so far
    questions: int
    tokens: int
    fallback_rate: float
    finish_reasons: dict
    new_samples: int = 0  # made by this call
    new_tokens: int = 0
    wall_seconds: float = 0.0
    tokens_per_second: float = 0.0
    engine: dict = field(default_factory=dict)  # forward passes, tokens, drafts proposed and accepted
