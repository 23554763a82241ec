"""`ownwords generate`: RSD traces for a question set, written to a resumable trace store."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .config import to_dict
from .data import build_prompt, load_questions
from .engine import RSD, Engine, Request, Sampling, Trace
from .lm import DTYPES, load_pair
from .sampling import RULES, AcceptanceRule
from .store import TraceStore

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
PRESETS = {
    # The paper authors' code (DESIGN §2). vLLM returned top-20 log-probabilities computed *before*
    # temperature and top-p, so the preset builds T and S from the raw logits' top-20 (`raw_logprobs`);
    # `--raw-logprobs false` applies temperature 0.7 / top-p 0.95 first instead.
    "paper": dict(
        threshold=0.01,
        rule="threshold",
        trials=5,
        top_k=20,
        acceptance_top_k=20,
        raw_logprobs=True,
        temperature=0.7,
        top_p=0.95,
        max_length=8192,
        max_new_tokens=7168,
        generation_prefix="<think>\n",
        system_prompt=DEFAULT_SYSTEM_PROMPT,
    )
}
# Settings that do not change what a sample is; a run may be resumed with other values.
OPERATIONAL = ("batch_size", "store", "limit", "samples", "device", "run", "progress")


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
    acceptance_top_k: int = field(
        default=0, metadata={"help": "Also require accepted tokens in the student's top-k (0 = off)."}
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
    raw_logprobs: bool = field(
        default=False, metadata={"help": "Build T and S from raw logits (temperature and top-p not applied)."}
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
        default="", metadata={"help": "Text after the assistant turn's opening, e.g. '<think>\\n'."}
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

    def __post_init__(self) -> None:
        for name in ("teacher", "student", "questions"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required")
        checks = [
            (self.samples >= 1, "samples", "an integer >= 1"),
            (self.trials >= 1, "trials", "an integer >= 1"),
            (self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1"),
            (self.max_length >= 2, "max_length", "an integer >= 2"),
            (self.temperature >= 0, "temperature", ">= 0"),
            (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
            (self.top_k >= 0, "top_k", ">= 0"),
            (self.batch_size >= 1, "batch_size", "an integer >= 1"),
            (self.speculate >= 0, "speculate", "an integer >= 0"),
            (self.score in ("raw", "processed"), "score", "'raw' or 'processed'"),
            (self.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}"),
            (0 <= self.min_vocab_overlap <= 1, "min_vocab_overlap", "in [0, 1]"),
            (self.limit is None or self.limit >= 1, "limit", "an integer >= 1"),
            (math.isfinite(self.threshold), "threshold", "a finite number"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(
                    f"--{name.replace('_', '-')} is {getattr(self, name)!r}; expected {expected}"
                )
        try:
            self.acceptance_rule()
        except ValueError as err:
            raise ValueError(f"--threshold / --rule: {err}") from None

    def acceptance_rule(self) -> AcceptanceRule:
        return AcceptanceRule(self.rule, self.threshold, self.acceptance_top_k)

    def sampling(self) -> Sampling:
        return Sampling(self.temperature, self.top_k, self.top_p, self.raw_logprobs)


def sample_seed(run_seed: int, question_id: str, sample_index: int) -> int:
    """A sample's own seed: stable across runs, machines and Python versions (no `hash()`)."""
    digest = hashlib.sha256(f"{run_seed}\x00{question_id}\x00{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def generate(config: GenerateConfig) -> dict:
    """Generate every missing sample of the run into the store; returns the run's summary."""
    store = TraceStore(config.store)
    try:
        return _generate(config, store)
    finally:
        store.close()


def _generate(config: GenerateConfig, store: TraceStore) -> dict:
    store.check_run(config.run, to_dict(config), ignore=OPERATIONAL)  # refuse early, before loading models
    questions = load_questions(
        config.questions,
        config.question_field,
        config.answer_field,
        config.id_field,
        config.split,
        config.limit,
    )
    student, s_tok, teacher, alignment = load_pair(
        config.teacher,
        config.student,
        config.device,
        config.dtype,
        config.trust_remote_code,
        config.min_vocab_overlap,
    )
    engine = Engine(
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
    store.open_run(config.run, to_dict(config), ignore=OPERATIONAL)  # inputs are valid: register the run
    system = config.system_prompt or None
    done = store.done(config.run)
    by_id = {q.id: q for q in questions}
    requests = [
        Request(
            q.id,
            i,
            build_prompt(s_tok, q.question, system, config.generation_prefix),
            sample_seed(config.seed, q.id, i),
        )
        for q in questions
        for i in range(config.samples)
        if (q.id, i) not in done
    ]
    logger.info(
        "run %r: %d samples to generate, %d already in %s", config.run, len(requests), len(done), config.store
    )
    started, tokens, fallbacks = time.perf_counter(), 0, 0
    bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not config.progress or None)
    for trace in engine.run(requests):
        store.add(config.run, trace_record(trace, by_id[trace.request.question_id], s_tok, engine.stop_ids))
        tokens, fallbacks = tokens + len(trace.token_ids), fallbacks + sum(trace.fallbacks)
        elapsed = time.perf_counter() - started
        bar.set_postfix(tok_s=f"{tokens / elapsed:.0f}", fallback=f"{fallbacks / max(tokens, 1):.3f}")
        bar.update()
    bar.close()
    summary = summarize(store, config.run)
    summary.update(
        engine=engine.stats,
        new_samples=len(requests),
        new_tokens=tokens,
        wall_seconds=time.perf_counter() - started,
        tokens_per_second=tokens / max(time.perf_counter() - started, 1e-9),
    )
    Path(f"{config.store}.summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def trace_record(trace: Trace, question, tokenizer, stop_ids: set[int]) -> dict:
    """The store row of a finished trace; text is decoded once, here, without the closing EOS."""
    ids = trace.token_ids
    body = ids[:-1] if trace.finish_reason == "eos" and ids and ids[-1] in stop_ids else ids
    return dict(
        question_id=question.id,
        sample_index=trace.request.sample_index,
        seed=trace.request.seed,
        question=question.question,
        answer=question.answer,
        prompt=tokenizer.decode(trace.request.prompt_ids, skip_special_tokens=False),
        text=tokenizer.decode(body, skip_special_tokens=False),
        token_ids=ids,
        teacher_probs=[None if math.isnan(p) else p for p in trace.teacher_probs],
        scores=trace.scores,
        fallbacks=[int(f) for f in trace.fallbacks],
        trials=trace.trials,
        n_tokens=len(ids),
        n_fallbacks=sum(trace.fallbacks),
        finish_reason=trace.finish_reason,
        wall_seconds=trace.wall_seconds,
    )


def summarize(store: TraceStore, run: str) -> dict:
    """Totals over every sample of `run` in the store."""
    row = store.db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT question_id), COALESCE(SUM(n_tokens), 0), COALESCE(SUM(n_fallbacks), 0) "
        "FROM samples WHERE run = ?",
        (run,),
    ).fetchone()
    reasons = dict(
        store.db.execute(
            "SELECT finish_reason, COUNT(*) FROM samples WHERE run = ? GROUP BY 1", (run,)
        ).fetchall()
    )
    samples, questions, tokens, fallbacks = row
    return dict(
        run=run,
        store=str(store.path),
        samples=samples,
        questions=questions,
        tokens=tokens,
        fallback_rate=fallbacks / tokens if tokens else 0.0,
        finish_reasons=reasons,
    )
