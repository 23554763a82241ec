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
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .data import Question, build_prompt, load_hub, load_rows, unescape
from .engine import Engine, Request, Sampling, Trace
from .errors import UserError, check_fields
from .generate import sample_seed, trace_record
from .lm import DTYPES, check_device, load_model, model_fingerprint, stop_token_ids
from .select import thinking_markers
from .store import TraceStore
from .verify import extract_answer, grade

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Benchmark:
    name: str
    hub: tuple[str, str | None, str]  # dataset id, config, split
    kind: str  # answer kind for ownwords.verify.grade
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
        # the demo's synthetic task (ownwords.demo); local files only
        Benchmark("arithmetic", ("", None, ""), "integer", ("arithmetic_test.jsonl",)),
    )
}
INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = (
    "Think step by step, then give the letter of the correct option within \\boxed{}, e.g. \\boxed{A}."
)


@dataclass
class EvalConfig:
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
    samples: int = field(default=1, metadata={"help": "Samples per question (n)."})
    temperatures: list[str] = field(
        default_factory=lambda: ["0.7"],
        metadata={"help": "Each is a separate run, e.g. 0.6,0.8,1.0 (paper: 0.7)."},
    )
    top_p: float = field(default=0.95, metadata={"help": "Nucleus filter (paper: 0.95)."})
    max_new_tokens: int = field(default=7168, metadata={"help": "Maximum generated tokens per response."})
    thinking_budget: int | None = field(
        default=None, metadata={"help": "Cap thinking at n tokens, then close the block and answer."}
    )
    answer_tokens: int = field(
        default=1024, metadata={"help": "With a thinking budget: tokens allowed for the answer."}
    )
    generation_prefix: str = field(
        default="", metadata={"help": "Text after the assistant turn's opening, e.g. '<think>\\n'."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System prompt (none by default)."})
    instruction: bool = field(
        default=True, metadata={"help": "Append the benchmark's answer-format instruction to each question."}
    )
    batch_size: int = field(default=16, metadata={"help": "Responses generated together."})
    limit: int | None = field(
        default=None, metadata={"help": "Only the first n questions of each benchmark."}
    )
    seed: int = field(default=0, metadata={"help": "Run seed; each sample derives its own."})
    out: str = field(
        default="eval", metadata={"help": "Output directory: records, results.json, tables, chart."}
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, ..."})
    dtype: str = field(default="float32", metadata={"help": f"One of {', '.join(DTYPES)}."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        self.models, self.benchmarks = _split(self.models), _split(self.benchmarks)
        self.generation_prefix = unescape(self.generation_prefix)
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
                (self.samples >= 1, "samples", "an integer >= 1"),
                (
                    bool(self.temperatures) and all(0 <= t < math.inf for t in self.temperatures),
                    "temperatures",
                    "one or more finite values >= 0",
                ),
                (0 < self.top_p <= 1, "top_p", "in (0, 1]"),
                (self.max_new_tokens >= 1, "max_new_tokens", "an integer >= 1"),
                (self.thinking_budget is None or self.thinking_budget >= 1, "thinking_budget", ">= 1"),
                (self.answer_tokens >= 1, "answer_tokens", "an integer >= 1"),
                (self.limit is None or self.limit >= 1, "limit", "an integer >= 1"),
                (self.batch_size >= 1, "batch_size", ">= 1"),
                (self.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}"),
            ],
        )
        self.data_paths()  # validates the --data entries

    def data_paths(self) -> dict[str, str]:
        paths = {}
        for entry in self.data:
            name, sep, path = entry.partition("=")
            if not sep:
                if len(self.benchmarks) != 1:
                    raise UserError(f"--data {entry!r}: with several benchmarks write NAME=PATH")
                name, path = self.benchmarks[0], entry
            if name not in self.benchmarks:
                raise UserError(f"--data {entry!r}: {name!r} is not among --benchmarks {self.benchmarks}")
            paths[name] = path
        for name in self.benchmarks:
            if name not in paths and self.data_dir:
                found = [
                    Path(self.data_dir) / f
                    for f in REGISTRY[name].files
                    if (Path(self.data_dir) / f).exists()
                ]
                if found:
                    paths[name] = str(found[0])
        return paths


def _split(values) -> list[str]:
    """Accept both `--x a b` and `--x a,b`."""
    return [part for v in values for part in str(v).split(",") if part]


# -- benchmarks ---------------------------------------------------------------------------------


def load_benchmark(
    name: str, path: str | None = None, limit: int | None = None, instruction: bool = True
) -> list[Question]:
    """A benchmark's questions (the prompt text the model sees) with gold answers in its answer kind."""
    bench = REGISTRY[name]
    if path is None and not bench.hub[0]:
        raise UserError(f"benchmark {name!r} has no hub copy; give its file with --data")
    what = f"benchmark {name!r} data"
    if path is not None:
        rows = load_rows(path, what=what)
    else:
        rows = load_hub(what, *bench.hub, hint="give a local copy with --data or --data-dir")
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
    check_device(config.device)
    paths = config.data_paths()
    questions = {
        b: load_benchmark(b, paths.get(b), config.limit, config.instruction) for b in config.benchmarks
    }
    results = {}
    for model_name in config.models:
        results[model_name] = _evaluate_model(config, model_name, questions)
    out = Path(config.out)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(table(results, config.benchmarks) + "\n")
    if len(config.models) > 1:
        plot_comparison(results, config.benchmarks, out / "comparison.png")
    return results


def model_tag(name: str) -> str:
    return name.strip("/").replace("/", "__").lstrip(".") or "model"


def _evaluate_model(config: EvalConfig, model_name: str, questions: dict[str, list[Question]]) -> dict:
    model, tokenizer = load_model(model_name, config.device, config.dtype)
    out = Path(config.out) / model_tag(model_name)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": model_name}
    with TraceStore(out / "records.sqlite") as store:
        for bench in config.benchmarks:
            per_temperature, covered = {}, None
            for temperature in config.temperatures:
                verdicts, answers = _run(
                    config, store, model, tokenizer, bench, questions[bench], temperature
                )
                per_temperature[str(temperature)] = metrics(verdicts, answers)
                solved = [any(v) for v in verdicts]
                covered = (
                    solved if covered is None else [a or b for a, b in zip(covered, solved, strict=True)]
                )
            results[bench] = {"temperatures": per_temperature, "union_coverage": sum(covered) / len(covered)}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _run(config, store, model, tokenizer, bench, questions, temperature):
    # Records are keyed to the weights evaluated: re-saved weights at the same path are a new run.
    fingerprint = model_fingerprint(model.name_or_path)
    run = f"{bench}@T={temperature}@{fingerprint[:12]}"
    identity = dict(
        model=model.name_or_path,
        model_fingerprint=fingerprint,
        benchmark=bench,
        temperature=temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        thinking_budget=config.thinking_budget,
        answer_tokens=config.answer_tokens,
        system_prompt=config.system_prompt,
        generation_prefix=config.generation_prefix,
        seed=config.seed,
        dtype=config.dtype,
        instruction=config.instruction,
    )
    store.lock_run(run)
    store.open_run(run, identity)
    done = store.done(run)
    by_id = {q.id: q for q in questions}
    requests = [
        Request(
            q.id,
            i,
            build_prompt(tokenizer, q.question, config.system_prompt, config.generation_prefix),
            sample_seed(config.seed, f"{bench}/{temperature}/{q.id}", i),
        )
        for q in questions
        for i in range(config.samples)
        if (q.id, i) not in done
    ]
    sampling = Sampling(temperature, 0, config.top_p)
    stop_ids = stop_token_ids(model, tokenizer)
    bar = tqdm(total=len(requests), desc=run, unit="response", disable=not config.progress or None)
    for trace in _generate(config, model, tokenizer, sampling, requests):
        store.add(run, trace_record(trace, by_id[trace.request.question_id], tokenizer, stop_ids))
        bar.update()
    bar.close()
    kind = REGISTRY[bench].kind
    records, verdicts, answers = [], [], []
    samples = {(s["question_id"], s["sample_index"]): s for s in store.samples(run)}
    thinking_end = _thinking_end(tokenizer, config)
    for q in questions:
        row_v, row_a = [], []
        for i in range(config.samples):
            text = samples[(q.id, i)]["text"]
            answer = extract_answer(text, kind, thinking_end)
            verdict = bool(grade(text, q.answer, kind, thinking_end))
            row_v.append(verdict)
            row_a.append(answer)
            records.append(
                dict(
                    question_id=q.id,
                    sample_index=i,
                    response=text,
                    answer=answer,
                    gold=q.answer,
                    correct=verdict,
                )
            )
        verdicts.append(row_v)
        answers.append(row_a)
    out = Path(config.out) / model_tag(model.name_or_path) / "records"
    out.mkdir(exist_ok=True)
    (out / f"{bench}_T{temperature}.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    )
    return verdicts, answers


def _thinking_end(tokenizer, config) -> str | None:
    markers = thinking_markers(tokenizer, config.generation_prefix)
    return markers[1] if markers else None


def _generate(config, model, tokenizer, sampling, requests):
    """Traces for `requests`; with a thinking budget, rows still thinking at the cap get the block
    closed for them and continue with `answer_tokens` more (budget forcing)."""
    first_cap = config.thinking_budget or config.max_new_tokens
    engine = Engine(
        model, tokenizer, sampling=sampling, max_new_tokens=first_cap, batch_size=config.batch_size
    )
    if config.thinking_budget is None:
        yield from engine.run(requests)
        return
    markers = thinking_markers(tokenizer, config.generation_prefix)
    if markers is None:
        raise UserError(
            "--thinking-budget needs a --generation-prefix that opens a thinking block (e.g. '<think>\\n')"
        )
    close = tokenizer.encode(f"\n{markers[1]}\n\n", add_special_tokens=False)
    answer_engine = Engine(
        model, tokenizer, sampling=sampling, max_new_tokens=config.answer_tokens, batch_size=config.batch_size
    )
    cut: dict[tuple[str, int], Trace] = {}
    for trace in engine.run(requests):
        still_thinking = trace.finish_reason == "length" and markers[1] not in tokenizer.decode(
            trace.token_ids
        )
        if still_thinking:
            cut[(trace.request.question_id, trace.request.sample_index)] = trace
        else:
            yield trace
    follow = [
        Request(
            t.request.question_id,
            t.request.sample_index,
            t.request.prompt_ids + t.token_ids + close,
            t.request.seed + 1,
        )
        for t in cut.values()
    ]
    for answer in answer_engine.run(follow):
        first = cut[(answer.request.question_id, answer.request.sample_index)]
        yield _join(first, close, answer)


def _join(first: Trace, close: list[int], second: Trace) -> Trace:
    nan = float("nan")
    return Trace(
        request=first.request,
        token_ids=first.token_ids + close + second.token_ids,
        teacher_probs=first.teacher_probs + [nan] * len(close) + second.teacher_probs,
        scores=first.scores + [nan] * len(close) + second.scores,
        fallbacks=first.fallbacks + [False] * len(close) + second.fallbacks,
        trials=first.trials + [0] * len(close) + second.trials,
        finish_reason=second.finish_reason,
        wall_seconds=first.wall_seconds + second.wall_seconds,
    )


# -- reporting ----------------------------------------------------------------------------------


def table(results: dict, benchmarks: list[str]) -> str:
    """Markdown: one row per model and temperature, pass@1 ± se per benchmark, and the average."""
    head = "| model | T | " + " | ".join(benchmarks) + " | average |"
    lines = [head, "|" + "---|" * (len(benchmarks) + 3)]
    for model, res in results.items():
        for temperature in res[benchmarks[0]]["temperatures"]:
            cells = [res[b]["temperatures"][temperature] for b in benchmarks]
            avg = sum(c["pass@1"] for c in cells) / len(cells)
            shown = " | ".join(f"{100 * c['pass@1']:.1f} ± {100 * c['pass@1_se']:.1f}" for c in cells)
            lines.append(f"| {model} | {temperature} | {shown} | {100 * avg:.1f} |")
    return "\n".join(lines)


def plot_comparison(results: dict, benchmarks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(benchmarks), 3.8))
    for m, model in enumerate(models):
        temps = results[model][benchmarks[0]]["temperatures"]
        first = next(iter(temps))
        values = [100 * results[model][b]["temperatures"][first]["pass@1"] for b in benchmarks]
        errors = [100 * results[model][b]["temperatures"][first]["pass@1_se"] for b in benchmarks]
        xs = [i + (m - (len(models) - 1) / 2) * width for i in range(len(benchmarks))]
        ax.bar(xs, values, width, yerr=errors, label=Path(model).name or model, capsize=2)
    ax.set_xticks(range(len(benchmarks)), benchmarks)
    ax.set(ylabel="pass@1 (%)", title="ownwords eval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
