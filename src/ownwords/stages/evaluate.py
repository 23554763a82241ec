"""`ownwords eval`: reasoning benchmarks on the generation engine (student-only mode).

pass@1 averaged over n samples per question (with its standard error over questions), unbiased
pass@k, majority vote, several temperatures with their union coverage, and an optional thinking
budget (s1's budget forcing). Records are kept in a resumable SQLite store, one run per
(benchmark, temperature); responses without an extractable answer are counted, not hidden.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm.auto import tqdm

from ..data.benchmarks import REGISTRY, load_benchmark
from ..data.questions import Question, build_prompt, questions_fingerprint, thinking_markers
from ..data.store import TraceStore
from ..data.verify import extract_answer, grade
from ..decoding.budget import generate_with_budget
from ..decoding.engine import Engine, Request, Sampling
from ..decoding.pool import engine_or_pool
from ..decoding.records import sample_seed, trace_record
from ..errors import UserError
from ..files import check_writable, write_atomically
from ..models.loading import check_device, display_name, load_model, load_tokenizer, model_fingerprint
from ..render.evaluation import group_seeds, plot_comparison, table  # noqa: F401 (part of this module's API)
from .evaluate_config import EvalConfig  # noqa: E402,F401 (the config is part of this module's API)

logger = logging.getLogger(__name__)


# -- metrics ------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), for n samples with c correct."""
    if k > n:
        raise UserError(f"pass@{k} needs at least {k} samples per question, got n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def metrics(verdicts: list[list[bool]], answers: list[list[str | None]]) -> dict:
    """verdicts / answers: one list of n per question. pass@1 (mean, standard error over questions),
    pass@k for k = 2, 4, ... <= n, majority vote over the extracted answers, and the no-answer count."""
    n = len(verdicts[0])
    per_question = [sum(v) / n for v in verdicts]
    q = len(per_question)
    mean = sum(per_question) / q
    se = math.sqrt(sum((p - mean) ** 2 for p in per_question) / (q - 1) / q) if q > 1 else 0.0
    out = {"questions": q, "samples": n, "pass@1": mean, "pass@1_se": se}
    k = 2
    while k <= n:
        out[f"pass@{k}"] = sum(pass_at_k(n, sum(v), k) for v in verdicts) / q
        k *= 2
    out[f"maj@{n}"] = sum(_majority(v, a) for v, a in zip(verdicts, answers, strict=True)) / q
    out["no_answer"] = sum(a is None for row in answers for a in row)
    return out


def _majority(verdicts: list[bool], answers: list[str | None]) -> bool:
    """Is the most frequent extracted answer (first seen on ties) a correct one?"""
    keyed = [(a.replace(" ", ""), v) for a, v in zip(answers, verdicts, strict=True) if a is not None]
    if not keyed:
        return False
    top = Counter(a for a, _ in keyed).most_common(1)[0][0]
    return next(v for a, v in keyed if a == top)


# -- running ------------------------------------------------------------------------------------


def evaluate(config: EvalConfig) -> dict:
    """Evaluate every model on every benchmark; returns {model: results}. Writes DIR/<model>/..."""
    if config.workers == 1:  # with workers, each worker checks its own device
        check_device(config.device)
    if config.backend == "vllm":  # installed, before anything is read or written
        from ..decoding.vllm import vllm_version

        vllm_version()
    paths = config.data_paths()
    questions = {
        b: load_benchmark(b, paths.get(b), config.limit, config.instruction) for b in config.benchmarks
    }
    for bench, asked in questions.items():  # records are keyed by question id
        seen = Counter(q.id for q in asked)
        twice = [qid for qid, n in seen.items() if n > 1]
        if twice:
            raise UserError(
                f"benchmark {bench!r} ({paths.get(bench) or 'from the hub'}): question id {twice[0]!r} appears "
                f"{seen[twice[0]]} times ({len(twice)} ids repeat); every question needs its own id"
            )
    check_writable(config.out, "out")
    results = {}
    for model_name in config.models:
        results[model_name] = _evaluate_model(config, model_name, questions)
    out = Path(config.out)
    write_atomically(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_atomically(out / "table.md", table(results, config.benchmarks) + "\n")
    if len(config.models) > 1:
        plot_comparison(results, config.benchmarks, out / "comparison.png")
    return results


def model_tag(name: str) -> str:
    """A model's folder under --out: readable, and one per name (`x/m` and `x__m` are two folders)."""
    readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", display_name(name)).lstrip("._-") or "model"
    return f"{readable[:48]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def temperature_key(temperature: float) -> str:
    """How a temperature names its results, records and runs, everywhere: "0.7", "0.0"."""
    return str(float(temperature))


@dataclass
class _EvalModel:
    """A model under evaluation: what it is, and the markers its template gives."""

    name: str
    model: object
    tokenizer: object
    fingerprint: str  # keys its records: new weights at the same path are a new run
    thinking_end: str | None


def _evaluate_model(config: EvalConfig, model_name: str, questions: dict[str, list[Question]]) -> dict:
    if config.workers > 1 or config.backend == "vllm":  # the workers (or vLLM) hold the model; this process
        # writes, so it needs the tokenizer
        model, tokenizer = None, load_tokenizer(model_name)
    else:
        model, tokenizer = load_model(model_name, config.device, config.dtype)
    markers = thinking_markers(tokenizer, config.generation_prefix)
    if config.thinking_budget is not None and markers is None:
        raise UserError(
            "thinking_budget needs a generation_prefix that opens a thinking block (e.g. '<think>\\n')"
        )
    subject = _EvalModel(model_name, model, tokenizer, model_fingerprint(model_name), markers and markers[1])
    out = Path(config.out) / model_tag(model_name)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": model_name}
    with TraceStore(out / "records.sqlite") as store:
        for bench in config.benchmarks:
            per_temperature, covered = {}, [False] * len(questions[bench])
            for temperature in config.temperatures:
                run = _generate_run(config, store, subject, bench, questions[bench], temperature)
                verdicts, answers = _grade_run(config, store, subject, bench, questions[bench], run)
                per_temperature[temperature_key(temperature)] = metrics(verdicts, answers) | {
                    # the paired bootstrap of an experiment's report resamples these
                    "correct_per_question": {q.id: sum(v) for q, v in zip(questions[bench], verdicts, strict=True)}
                }
                covered = [c or any(v) for c, v in zip(covered, verdicts, strict=True)]
            results[bench] = {"temperatures": per_temperature, "union_coverage": sum(covered) / len(covered)}
    write_atomically(out / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def _generate_run(config, store: TraceStore, subject: _EvalModel, bench: str, questions, temperature) -> str:
    """Generate the run's missing responses into the store; returns the run's name."""
    key = temperature_key(temperature)
    identity = _identity(config, subject, bench, temperature)
    # one run per model and settings: records made otherwise are another run's, never mixed in
    named = {k: v for k, v in identity.items() if k != "model"}  # the model by content, not by path
    settings = hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()
    run = f"{bench}@T={key}@{settings[:12]}"
    store.lock_run(run)
    asked = questions_fingerprint(questions)
    stored = store.runs().get(run)
    if stored is not None and stored.get("questions_sha256") != asked:  # an edited benchmark file
        dropped = store.keep_questions(run, {q.id: (q.question, q.answer) for q in questions}, asked)
        logger.info("eval %s: %d responses to changed or removed questions are asked again", run, dropped)
    store.open_run(run, identity | {"questions_sha256": asked}, ignore=("questions_sha256", "model"))
    done = store.done(run)
    tok = subject.tokenizer
    requests = [
        Request(
            q.id,
            i,
            build_prompt(tok, q.question, config.system_prompt, config.generation_prefix),
            sample_seed(config.seed, f"{bench}/{temperature}/{q.id}", i),
        )
        for q in questions
        for i in range(config.samples)
        if (q.id, i) not in done
    ]
    sampling = Sampling(temperature, 0, config.top_p)
    budget = config.thinking_budget or config.max_new_tokens
    # without a cap, room for the longest prompt and a whole response (the engine's own default is 8192)
    room = config.max_length or max((len(r.prompt_ids) for r in requests), default=0) + budget
    thinking = _engine(config, subject, sampling, budget, room)
    answer = (
        _engine(config, subject, sampling, config.answer_tokens, room + config.answer_tokens + 16)
        if config.thinking_budget
        else None
    )
    traces = generate_with_budget(thinking, requests, answer, tok, subject.thinking_end)
    by_id = {q.id: q for q in questions}
    for trace in tqdm(
        traces, total=len(requests), desc=run, unit="response", disable=not config.progress or None
    ):
        store.add(run, trace_record(trace, by_id[trace.request.question_id], tok))
    return run


def _engine(config: EvalConfig, subject: _EvalModel, sampling: Sampling, max_new_tokens: int, max_length: int):
    """A student-only engine here (on the model this process loaded), or a pool of Ray workers each
    loading the model; with the vllm backend, vLLM's engine (here, or one per Ray worker)."""
    build = vllm_student_engine if config.backend == "vllm" else student_engine
    factory = partial(build, subject.name, config.device, config.dtype, sampling, max_new_tokens,
                      config.batch_size, max_length)  # fmt: skip
    if config.backend == "vllm":
        return engine_or_pool(factory, config)

    def local() -> Engine:
        return Engine(subject.model, subject.tokenizer, sampling=sampling, max_new_tokens=max_new_tokens,
                      max_length=max_length, batch_size=config.batch_size)  # fmt: skip

    return engine_or_pool(factory, config, local)


def student_engine(
    name: str, device: str, dtype: str, sampling: Sampling, max_new_tokens: int, batch_size: int, max_length: int
) -> Engine:
    """The model loaded into a student-only engine (what each Ray worker builds)."""
    model, tokenizer = load_model(name, device, dtype)
    return Engine(model, tokenizer, sampling=sampling, max_new_tokens=max_new_tokens, max_length=max_length,
                  batch_size=batch_size)  # fmt: skip


def vllm_student_engine(
    name: str, device: str, dtype: str, sampling: Sampling, max_new_tokens: int, batch_size: int, max_length: int
):
    """The model in vLLM's engine, with the records the hf engine writes (what each Ray worker builds)."""
    from ..decoding.vllm import STUDENT, VLLMEngine, stop_ids

    tokenizer = load_tokenizer(name)
    return VLLMEngine(name, tokenizer, sampling, STUDENT, max_new_tokens, max_length, (), batch_size, dtype,
                      stop_ids(name, tokenizer), device)  # fmt: skip


def _identity(config: EvalConfig, subject: _EvalModel, bench: str, temperature: float) -> dict:
    """What a run's records depend on: a resume with any of it changed is refused (a vLLM run also
    names the backend and vLLM's version; an hf run's identity is what it was before backends)."""
    if config.backend == "vllm":
        from ..decoding.vllm import vllm_version

        return _hf_identity(config, subject, bench, temperature) | dict(backend="vllm", vllm_version=vllm_version())
    return _hf_identity(config, subject, bench, temperature)


def _hf_identity(config: EvalConfig, subject: _EvalModel, bench: str, temperature: float) -> dict:
    return dict(
        model=subject.name,
        model_fingerprint=subject.fingerprint,
        benchmark=bench,
        temperature=temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        max_length=config.max_length,
        thinking_budget=config.thinking_budget,
        answer_tokens=config.answer_tokens,
        system_prompt=config.system_prompt,
        generation_prefix=config.generation_prefix,
        seed=config.seed,
        dtype=config.dtype,
        instruction=config.instruction,
    )


def _grade_run(config, store: TraceStore, subject: _EvalModel, bench: str, questions, run: str):
    """Grade every stored response of the run; writes records/<bench>_T<t>.jsonl; returns the verdicts
    and extracted answers, one list of n per question."""
    kind = REGISTRY[bench].kind
    samples = {(s["question_id"], s["sample_index"]): s for s in store.samples(run)}
    records, verdicts, answers = [], [], []
    for q in questions:
        texts = [samples[(q.id, i)]["text"] for i in range(config.samples)]
        answers.append([extract_answer(t, kind, subject.thinking_end) for t in texts])
        verdicts.append([bool(grade(t, q.answer, kind, subject.thinking_end)) for t in texts])
        records += [
            dict(question_id=q.id, sample_index=i, response=t, answer=a, gold=q.answer, correct=v)
            for i, (t, a, v) in enumerate(zip(texts, answers[-1], verdicts[-1], strict=True))
        ]
    out = Path(config.out) / model_tag(subject.name) / "records"
    out.mkdir(exist_ok=True)
    temperature = store.runs()[run]["temperature"]
    write_atomically(
        out / f"{bench}_T{temperature_key(temperature)}.jsonl",
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
    )
    return verdicts, answers
