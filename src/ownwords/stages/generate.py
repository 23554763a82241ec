"""`ownwords generate`: RSD traces for a question set, written to a resumable trace store."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from ..config import to_dict
from ..data.questions import Question, build_prompt, load_questions, questions_fingerprint, unescape
from ..data.store import StoreError, TraceStore
from ..decoding.engine import RSD, Engine, Request, Sampling
from ..decoding.pool import WorkerPool
from ..decoding.records import sample_seed, trace_record
from ..errors import UserError, check_fields
from ..files import write_atomically
from ..models.loading import (
    DTYPES,
    check_device,
    load_pair,
    load_tokenizer,
    model_fingerprint,
    set_cpu_threads,
)
from ..rsd.sampling import LOGPROBS, RULES, AcceptanceRule

logger = logging.getLogger(__name__)

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
# Settings that do not change what a sample is; a run may be resumed with other values. The models
# and the questions enter a run's identity by their content (fingerprints), not by their paths, so a
# moved or copied folder resumes and new weights at the same path do not.
OPERATIONAL = (
    "batch_size",
    "store",
    "limit",
    "samples",
    "device",
    "run",
    "progress",
    "workers",
    "ray_address",
    "threads",
    "teacher",
    "student",
    "questions",
)
FINGERPRINTS = ("teacher_fingerprint", "student_fingerprint")
PRESET_ACCEPTANCE_TOP_K = {"paper": 20}


@dataclass
class GenerateConfig:
    teacher: str | None = field(
        default=None, metadata={"help": "Teacher model: hub id or local path (required)."}
    )
    student: str | None = field(
        default=None, metadata={"help": "Student model: hub id or local path (required)."}
    )
    questions: str | None = field(
        default=None,
        metadata={"help": "Questions: hub dataset id or local .jsonl/.json/.parquet/.csv (required)."},
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
    samples: int = field(default=1, metadata={"help": "Samples per question."})
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
    max_new_tokens: int = field(default=7168, metadata={"help": "Maximum tokens generated per sample."})
    max_length: int = field(default=8192, metadata={"help": "Maximum prompt + generated tokens."})
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature of T and S (0 = greedy)."}
    )
    top_p: float = field(default=0.95, metadata={"help": "Nucleus filter of T and S (1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k filter of T and S (0 = off)."})
    logprobs: str = field(
        default="none",
        metadata={
            "help": "T and S as vLLM's top-k log-probabilities were: none (the sampler's own distribution), "
            "raw (logprobs_mode=raw_logprobs: top-k of the plain softmax), processed (processed_logprobs: "
            "temperature, top-p, then top-k)."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Samples generated together."})
    speculate: int = field(
        default=0,
        metadata={
            "help": "Speculative RSD: the student drafts K tokens, the teacher verifies them in one pass; "
            "same distribution, fewer teacher passes (0 = off)."
        },
    )
    seed: int = field(
        default=0,
        metadata={"help": "Run seed; each sample's seed derives from (seed, question id, sample index)."},
    )
    system_prompt: str | None = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "System prompt ('' for none)."}
    )
    generation_prefix: str = field(
        default="",
        metadata={
            "help": "Text after the assistant turn's opening, e.g. '<think>\\n' (\\n and \\t are read as escapes)."
        },
    )
    stop_strings: list[str] = field(
        default_factory=list, metadata={"help": "Stop when any of these strings is generated."}
    )
    store: str = field(
        default="ownwords.sqlite", metadata={"help": "SQLite trace store (created if missing)."}
    )
    run: str = field(
        default="default", metadata={"help": "Run name inside the store; several runs may share one."}
    )
    preset: str | None = field(default=None, metadata={"help": f"Settings preset: {', '.join(PRESETS)}."})
    limit: int | None = field(default=None, metadata={"help": "Only the first n questions."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, cuda:1, ..."})
    dtype: str = field(default="float32", metadata={"help": f"Model dtype: {', '.join(DTYPES)}."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Allow model code from the hub (off: safetensors + library code)."}
    )
    min_vocab_overlap: float = field(
        default=0.5, metadata={"help": "Refuse tokenizer pairs sharing less than this fraction."}
    )
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    workers: int = field(
        default=1,
        metadata={
            "help": "Ray workers, each with both models on its own device (one GPU each with --device cuda); "
            "1: this process alone, no Ray."
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "Join this Ray cluster (`ray start --head`); default: a local instance."},
    )
    threads: int = field(
        default=0,
        metadata={"help": "torch CPU threads (0: the free cores; each Ray worker: 1 unless set)."},
    )

    def __post_init__(self) -> None:
        for name in ("teacher", "student", "questions"):
            if not getattr(self, name):
                raise UserError(f"{name} is required")
        self.generation_prefix = unescape(self.generation_prefix)
        self.stop_strings = [unescape(x) for x in self.stop_strings]
        check_fields(
            self,
            [
                (self.samples >= 1, "samples", "an integer >= 1"),
                (1 <= self.trials <= MAX_TRIALS, "trials", f"an integer in [1, {MAX_TRIALS}]"),
                (self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1"),
                (self.max_length >= 2, "max_length", "an integer >= 2"),
                (0 <= self.temperature < math.inf, "temperature", "a finite number >= 0"),
                (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
                (self.top_k >= 0, "top_k", ">= 0"),
                (self.logprobs in LOGPROBS, "logprobs", f"one of {', '.join(LOGPROBS)}"),
                (
                    self.logprobs == "none" or self.top_k > 0,
                    "top_k",
                    "> 0 with logprobs raw/processed (the list's length)",
                ),
                (self.batch_size >= 1, "batch_size", "an integer >= 1"),
                (self.speculate >= 0, "speculate", "an integer >= 0"),
                (self.score in ("raw", "processed"), "score", "'raw' or 'processed'"),
                (self.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}"),
                (0 <= self.min_vocab_overlap <= 1, "min_vocab_overlap", "in [0, 1]"),
                (self.limit is None or self.limit >= 1, "limit", "an integer >= 1"),
                (self.workers >= 1, "workers", "an integer >= 1"),
                (self.threads >= 0, "threads", "an integer >= 0 (0: torch's default)"),
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

    def acceptance_rule(self) -> AcceptanceRule:
        return AcceptanceRule(self.rule, self.threshold, self.acceptance_top_k)

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p, self.logprobs)


def generate(config: GenerateConfig) -> dict:
    """Generate every missing sample of the run into the store; returns the run's summary.

    Inputs are checked before anything is written: the questions, then an existing store (foreign,
    read-only, locked by another process, or holding this run with another config or other
    questions), then the models. A new store is created only once all of them are good."""
    if config.workers == 1:  # here, not in the config: a GPU recipe must load on any machine
        check_device(config.device)  # (with workers, each worker checks its own device)
    questions = load_questions(
        config.questions, config.question_field, config.answer_field, config.id_field, config.split
    )
    identity = run_identity(config, questions)
    questions = questions[: config.limit]  # the fingerprint covers the whole set: --limit may change
    store = open_run_store(config, identity) if Path(config.store).is_file() else None
    engine = None
    try:
        engine, s_tok = open_engine(config)
        store = store or open_run_store(config, identity)
        exempt = identity_exempt(store.runs().get(config.run))
        store.open_run(config.run, identity, ignore=exempt)  # inputs are valid: register the run
        requests = plan_requests(config, questions, s_tok, store.done(config.run))
        logger.info(
            "run %r: %d samples to generate, %d already in %s",
            config.run,
            len(requests),
            len(questions) * config.samples - len(requests),
            config.store,
        )
        written = write_traces(config, store, engine, requests, {q.id: q for q in questions}, s_tok)
        summary = store.summary(config.run) | written | {"engine": engine.stats}
    finally:
        if isinstance(engine, WorkerPool):
            engine.close()
        if store is not None:
            store.close()
    write_atomically(summary_path(config.store, config.run), json.dumps(summary, indent=2) + "\n")
    logger.info("run %r: %d samples in %s", config.run, summary["samples"], Path(config.store).resolve())
    return summary


def run_identity(config: GenerateConfig, questions: list[Question]) -> dict:
    """What a run's samples depend on: its settings, and the content of its models and questions."""
    return to_dict(config) | dict(
        questions_sha256=questions_fingerprint(questions),
        teacher_fingerprint=model_fingerprint(config.teacher),
        student_fingerprint=model_fingerprint(config.student),
    )


def identity_exempt(stored: dict | None) -> tuple[str, ...]:
    """The keys a resume may change. A run stored before models had fingerprints is checked by its
    model paths, as it was made."""
    if stored is None or "student_fingerprint" in stored:
        return OPERATIONAL
    return tuple(k for k in OPERATIONAL if k not in ("teacher", "student")) + FINGERPRINTS


def summary_path(store: str, run: str) -> Path:
    return Path(f"{store}.{run}.summary.json")


def open_run_store(config: GenerateConfig, identity: dict) -> TraceStore:
    """The store, locked for this run and checked against it: a changed config or an edited
    question file is refused (and the store closed again)."""
    store = TraceStore(config.store)  # refuses a foreign or read-only store
    try:
        store.lock_run(config.run)
        stored = store.runs().get(config.run)
        if stored is not None and stored.get("questions_sha256") != identity["questions_sha256"]:
            raise StoreError(
                f"questions {config.questions!r} changed since run {config.run!r} of store {config.store!r} "
                "was started (their content fingerprint differs); resuming would mix two versions of the "
                "questions in one run: restore the file, or start another run"
            )
        store.check_run(config.run, identity, ignore=identity_exempt(stored))
    except BaseException:
        store.close()
        raise
    return store


def open_engine(config: GenerateConfig):
    """(engine, student tokenizer): the engine in this process, or a pool of Ray workers each holding
    the pair (then this process loads the tokenizer only, and stays the only writer)."""
    if config.workers > 1:
        pool = WorkerPool(
            partial(build_engine, config),
            config.workers,
            chunk=2 * config.batch_size,
            num_gpus=1 if config.device.startswith("cuda") else 0,
            threads=config.threads or 1,
            address=config.ray_address,
        )
        tokenizer = load_tokenizer(config.student, config.trust_remote_code)
        pool.start()  # every worker has loaded the pair, or the error names the one that could not
        return pool, tokenizer
    if not config.device.startswith("cuda"):
        set_cpu_threads(config.threads)
    engine = build_engine(config)
    return engine, engine.tokenizer


def build_engine(config: GenerateConfig) -> Engine:
    """Both models loaded and aligned, in an engine (in this process, or in each Ray worker)."""
    student, s_tok, teacher, alignment = load_pair(
        config.teacher,
        config.student,
        config.device,
        config.dtype,
        config.trust_remote_code,
        config.min_vocab_overlap,
    )
    return Engine(
        student,
        s_tok,
        teacher,
        alignment,
        sampling=config.sampling(),
        rsd=RSD(config.acceptance_rule(), config.trials, config.score),
        max_new_tokens=config.max_new_tokens,
        max_length=config.max_length,
        stop_strings=tuple(config.stop_strings),
        batch_size=config.batch_size,
        speculate=config.speculate,
    )


def plan_requests(
    config: GenerateConfig, questions: list[Question], tokenizer, done: set[tuple[str, int]]
) -> list[Request]:
    """One request per (question, sample index) not yet in the store, each with its own seed."""
    system = config.system_prompt or None
    return [
        Request(
            q.id,
            i,
            build_prompt(tokenizer, q.question, system, config.generation_prefix),
            sample_seed(config.seed, q.id, i),
        )
        for q in questions
        for i in range(config.samples)
        if (q.id, i) not in done
    ]


def write_traces(config, store: TraceStore, engine, requests, by_id: dict, tokenizer) -> dict:
    """Run the engine and write each trace as it finishes; returns this call's counts."""
    started, tokens, fallbacks, empty = time.perf_counter(), 0, 0, []
    bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not config.progress or None)
    for trace in engine.run(requests):
        if not trace.token_ids:
            empty.append(trace.request.question_id)
        store.add(config.run, trace_record(trace, by_id[trace.request.question_id], tokenizer))
        tokens, fallbacks = tokens + len(trace.token_ids), fallbacks + sum(trace.fallbacks)
        bar.set_postfix(
            tok_s=f"{tokens / (time.perf_counter() - started):.0f}",
            fallback=f"{fallbacks / max(tokens, 1):.3f}",
        )
        bar.update()
    bar.close()
    if empty:
        logger.warning(
            "run %r: %d samples had a prompt that leaves no room under max_length %d (questions %s); they are "
            "stored with no tokens: raise max_length", config.run, len(empty), config.max_length,
            ", ".join(sorted(set(empty))[:5]),
        )  # fmt: skip
    wall = time.perf_counter() - started
    return dict(
        new_samples=len(requests),
        new_tokens=tokens,
        wall_seconds=wall,
        tokens_per_second=tokens / max(wall, 1e-9),
    )
