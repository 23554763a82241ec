"""`ownwords generate`: RSD traces for a question set, written to a resumable trace store."""

from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from ..config import to_dict
from ..data.questions import Question, build_prompt, load_questions, questions_fingerprint
from ..data.store import StoreError, TraceStore
from ..decoding.engine import Engine, Request
from ..decoding.pool import WorkerPool, engine_or_pool
from ..decoding.records import sample_seed, trace_record
from ..errors import UserError
from ..files import write_atomically
from ..models.loading import check_device, load_pair, load_tokenizer, model_fingerprint
from ..options import marked
from .generate_config import (  # noqa: F401 (the config, presets and result are part of this module's API)
    BY_CONTENT,
    DEFAULT_SYSTEM_PROMPT,
    FINGERPRINTS,
    PRESETS,
    GenerateConfig,
    GenerateResult,
)

logger = logging.getLogger(__name__)

# What a resume may change: what changes no sample, and where and how much it writes (the models
# and questions by path: their content is fingerprinted).
RESUMABLE = tuple(sorted(marked(GenerateConfig, "operational") | marked(GenerateConfig, "resumable")))
# Options added after runs were stored: at their default they stay out of a run's identity (such a run
# was made with that default), so the stores of an earlier version resume.
ADDED_LATER = {"backend": "hf", "token_budget": 0}


def generate(config: GenerateConfig) -> GenerateResult:
    """Generate every missing sample of the run into the store; returns the run's summary.

    Inputs are checked before anything is written: the questions, then an existing store (foreign,
    read-only, locked by another process, or holding this run with another config or other
    questions), then the models. A new store is created only once all of them are good."""
    if config.workers == 1:  # here, not in the config: a GPU recipe must load on any machine
        check_device(config.device)  # (with workers, each worker checks its own device)
    if config.backend == "vllm":  # installed, before anything is read or written
        from ..decoding.vllm import vllm_version

        vllm_version()
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
        if config.token_budget and store.summary(config.run)["tokens"] >= config.token_budget:
            requests = []  # the budget is spent: nothing more to generate
        written = write_traces(config, store, engine, requests, {q.id: q for q in questions}, s_tok)
        summary = GenerateResult(**store.summary(config.run), **written, engine=dict(engine.stats))
    finally:
        if isinstance(engine, WorkerPool):
            engine.close()
        if store is not None:
            store.close()
    write_atomically(summary_path(config.store, config.run), json.dumps(summary.to_json(), indent=2) + "\n")
    logger.info("run %r: %d samples in %s", config.run, summary.samples, Path(config.store).resolve())
    return summary


def run_identity(config: GenerateConfig, questions: list[Question]) -> dict:
    """What a run's samples depend on: its settings (the backend among them, and vLLM's version for
    its runs), and the content of its models and questions."""
    identity = to_dict(config) | dict(
        questions_sha256=questions_fingerprint(questions),
        teacher_fingerprint=model_fingerprint(config.teacher),
        student_fingerprint=model_fingerprint(config.student),
    )
    for key, default in ADDED_LATER.items():  # a run stored before the option existed resumes
        if identity[key] == default:
            del identity[key]
    if config.backend == "vllm":
        from ..decoding.vllm import vllm_version

        identity["vllm_version"] = vllm_version()
    return identity


def identity_exempt(stored: dict | None) -> tuple[str, ...]:
    """The keys a resume may change. A run stored before models had fingerprints is checked by its
    model paths, as it was made."""
    if stored is None or "student_fingerprint" in stored:
        return RESUMABLE
    return tuple(k for k in RESUMABLE if k not in BY_CONTENT[:2]) + FINGERPRINTS


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
    engine = engine_or_pool(partial(build_engine, config), config)
    if not isinstance(engine, WorkerPool):
        return engine, engine.tokenizer
    tokenizer = load_tokenizer(config.student, config.trust_remote_code)
    engine.start()  # every worker has loaded the pair, or the error names the one that could not
    return engine, tokenizer


def build_engine(config: GenerateConfig) -> Engine:
    """Both models loaded and aligned, in an engine (in this process, or in each Ray worker); with
    the vllm backend, vLLM's engine on the one model the run samples from."""
    if config.backend == "vllm":
        return vllm_engine(config)
    student, s_tok, teacher, alignment = load_pair(
        config.teacher, config.student, config.device, config.dtype, config.trust_remote_code, config.min_vocab_overlap
    )
    return config.engine(student, s_tok, teacher, alignment)


def vllm_engine(config: GenerateConfig):
    """A teacher-only or self run on vLLM. The traces are the student's token ids: a teacher-only run
    needs a teacher every one of whose tokens the student has under the same id (the hf engine would
    drop the others after top-p; vLLM cannot), so its ids are the student's."""
    from ..decoding.vllm import Role, VLLMEngine, stop_ids

    s_tok = load_tokenizer(config.student, config.trust_remote_code)
    model = config.teacher if config.sampled_by == "teacher" else config.student
    if config.sampled_by == "teacher":
        student_vocab = s_tok.get_vocab()
        foreign = [t for t, i in load_tokenizer(model, config.trust_remote_code).get_vocab().items()
                   if student_vocab.get(t) != i]  # fmt: skip
        if foreign:
            raise UserError(
                f"backend vllm samples the teacher's whole vocabulary, and {len(foreign)} of the teacher's tokens "
                f"(e.g. {foreign[:3]}) are not the student's under the same id: the traces could not be written in "
                "the student's tokens; use --backend hf for this pair"
            )
        role = Role("teacher_probs", False, 1)  # every proposal accepted at its first trial
    else:
        role = Role("scores", True, config.trials)  # RSD's records with nothing accepted: all fallbacks
    return VLLMEngine(model, s_tok, config.sampling(), role, config.max_new_tokens, config.max_length,
                      tuple(config.stop_strings), config.batch_size, config.dtype, stop_ids(config.student, s_tok),
                      config.device)  # fmt: skip


def plan_requests(
    config: GenerateConfig, questions: list[Question], tokenizer, done: set[tuple[str, int]]
) -> list[Request]:
    """One request per (question, sample index) not yet in the store, each with its own seed; under a
    token budget, by sample index first (the budget spreads over the questions)."""
    system = config.system_prompt or None
    prompts = {q.id: build_prompt(tokenizer, q.question, system, config.generation_prefix) for q in questions}
    pairs = [(q, i) for q in questions for i in range(config.samples) if (q.id, i) not in done]
    if config.token_budget:
        pairs.sort(key=lambda pair: pair[1])  # stable: questions in order within an index
    return [Request(q.id, i, prompts[q.id], sample_seed(config.seed, q.id, i)) for q, i in pairs]


def write_traces(config, store: TraceStore, engine, requests, by_id: dict, tokenizer) -> dict:
    """Run the engine and write each trace as it finishes; returns this call's counts."""
    started, tokens, fallbacks, empty, written = time.perf_counter(), 0, 0, [], 0
    held = store.summary(config.run)["tokens"] if config.token_budget else 0
    bar = tqdm(total=len(requests), desc="generate", unit="sample", disable=not config.progress or None)
    for trace in engine.run(requests):
        if not trace.token_ids:
            empty.append(trace.request.question_id)
        store.add(config.run, trace_record(trace, by_id[trace.request.question_id], tokenizer))
        tokens, fallbacks, written = tokens + len(trace.token_ids), fallbacks + sum(trace.fallbacks), written + 1
        if config.token_budget and held + tokens >= config.token_budget:
            break  # within one trace of the budget; the traces still running are not kept
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
        new_samples=written,
        new_tokens=tokens,
        wall_seconds=wall,
        tokens_per_second=tokens / max(wall, 1e-9),
    )
