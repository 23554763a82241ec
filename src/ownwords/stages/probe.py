"""`ownwords probe`: will this teacher-student pair work, and what will the run cost -- answered in
minutes, before GPU-days are spent.

With the same options as `generate` (the run you intend), it reports:

* vocabulary: shared / student-only / teacher-only tokens and padded logit columns, the special tokens
  of each side and how each student-only one reaches the teacher, the overlap against the floor;
* templates: one question through both chat templates (and the generation prefix), their difference;
* acceptance: on a short teacher-only run over a sample of the questions, the share of teacher tokens
  the student scores under each p_th and the fallback rate RSD is expected to have at each, E[(1 -
  T(A))^N] over every position of those traces (T and a(x) at each); then a short real RSD run at the
  configured p_th, to check the estimate against what happens;
* cost: tokens/s of plain (and speculative) RSD measured here at the configured batch size, both models'
  KV bytes per token, the memory the configured rows x length need against what the device has, and
  the projected wall time of the configured run, on one device and on N workers;
* a verdict: OK, or the first blocking problem and the option that fixes it (the command exits 1).
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from ..data.questions import build_prompt, chat_messages, load_questions
from ..decoding.engine import RSD, Request
from ..decoding.records import sample_seed
from ..decoding.slots import FREE_SHARE, free_memory, kv_bytes_per_token
from ..files import check_writable, write_atomically
from ..models.facts import logits_width
from ..models.loading import check_device, load_model, set_cpu_threads
from ..rsd.sampling import AcceptanceRule
from ..rsd.vocab import align_vocabularies
from .probe_config import ProbeConfig, ProbeResult

logger = logging.getLogger(__name__)

WEEK = 7 * 24 * 3600
DISAGREE = 4  # standard errors apart: the estimate from teacher traces does not describe RSD's


def probe(config: ProbeConfig) -> ProbeResult:
    """Load the pair and the questions as `generate` would, and probe them (writes probe.json, probe.md)."""
    check_device(config.device)
    check_writable(config.out, "out")
    if not config.device.startswith("cuda"):
        set_cpu_threads(config.threads)
    questions = load_questions(config.questions, config.question_field, config.answer_field, config.id_field,
                               config.split)[: config.limit]  # fmt: skip
    student, s_tok = load_model(config.student, config.device, config.dtype, config.trust_remote_code)
    teacher, t_tok = load_model(config.teacher, config.device, config.dtype, config.trust_remote_code)
    return probe_pair(config, student, s_tok, teacher, t_tok, questions)


def probe_pair(config: ProbeConfig, student, s_tok, teacher, t_tok, questions) -> ProbeResult:
    """The probe on loaded models: every check that needs no generation first, then the short runs."""
    start = time.perf_counter()
    width = logits_width(student), logits_width(teacher)
    alignment = align_vocabularies(s_tok, t_tok, *width, min_overlap=0.0)
    blocking, warnings = [], []
    vocabulary = vocabulary_report(alignment, s_tok, t_tok, *width)
    if vocabulary["overlap"] < config.min_vocab_overlap:
        blocking.append(
            f"the tokenizers share {vocabulary['shared']} tokens, {vocabulary['overlap']:.1%} of the smaller side, under "
            f"the floor of {config.min_vocab_overlap:.0%} (--min-vocab-overlap; the teacher could only propose that share)"
        )
    templates = template_report(s_tok, t_tok, questions[0].question, config)
    if not templates["same"]:
        warnings.append("the two chat templates render the prompt differently (see Templates)")
    prompts = [build_prompt(s_tok, q.question, config.system_prompt or None, config.generation_prefix) for q in questions]
    memory = memory_report(config.engine(student, s_tok, teacher, alignment), max(map(len, prompts)), student.device)
    if memory["needed"] > FREE_SHARE * memory["free"]:
        blocking.append(
            f"the KV cache of {config.batch_size} rows x {memory['capacity']} tokens needs {memory['needed'] / 2**30:.2f} "
            f"GiB, the device has {memory['free'] / 2**30:.2f} GiB free (--batch-size, --max-length)"
        )
    acceptance, cost = {}, {"memory": memory}
    if not blocking:  # generation only for a pair that can run
        models = student, s_tok, teacher, alignment
        sample = list(zip(questions, prompts, strict=True))[: config.sample_questions]
        acceptance = measure_acceptance(config, models, sample)
        cost |= measure_cost(config, models, sample, len(questions), acceptance)
        real = acceptance["real_rsd"]
        gap = abs(acceptance["expected_fallback_rate"] - real["fallback_rate"])
        if gap > DISAGREE * math.hypot(acceptance["expected_error"], real["error"]):
            warnings.append(
                f"RSD's traces leave the teacher's: the fallback rate expected from teacher traces "
                f"({acceptance['expected_fallback_rate']:.0%}) is not what RSD does ({real['fallback_rate']:.0%}); "
                "plan with the real run's"
            )
        if real["fallback_rate"] > 0.5:
            warnings.append(
                f"RSD falls back on {acceptance['real_rsd']['fallback_rate']:.0%} of tokens at this p_th: a run of "
                "fallbacks is a self run at RSD's price, and select's max_fallback_rate (0.5) drops such traces "
                "(a lower --threshold)"
            )
        if max(cost["projected_seconds"].values()) > WEEK:
            warnings.append("the configured run would take more than a week here (--workers, a faster device)")
    verdict = "OK" if not blocking else f"blocked: {blocking[0]}"
    result = ProbeResult(verdict, bool(blocking), warnings, vocabulary, templates, acceptance, cost,
                         time.perf_counter() - start)  # fmt: skip
    out = Path(config.out)
    write_atomically(out / "probe.json", json.dumps(result.to_json(), indent=2, default=str) + "\n")
    write_atomically(out / "probe.md", page(result, config))
    return result


def vocabulary_report(alignment, s_tok, t_tok, s_width: int, t_width: int) -> dict:
    """Token counts of both sides, their special tokens, and how each student-only one reaches the teacher."""
    shared = alignment.shared
    student_only = sorted(set(range(alignment.student_size)) - set(alignment.student_ids.tolist()))
    special = lambda tok: sorted(set(tok.all_special_tokens) | set(tok.get_added_vocab()))  # noqa: E731
    shown = [i for i in student_only if s_tok.convert_ids_to_tokens(i) in special(s_tok)] or student_only[:20]
    reaches = {s_tok.convert_ids_to_tokens(i): t_tok.convert_ids_to_tokens(alignment.to_teacher([i])) for i in shown[:40]}
    return dict(
        shared=shared,
        student_only=len(student_only),
        teacher_only=alignment.teacher_size - shared,
        student_tokens=alignment.student_size,
        teacher_tokens=alignment.teacher_size,
        student_padded_columns=s_width - alignment.student_size,
        teacher_padded_columns=t_width - alignment.teacher_size,
        overlap=min(shared / alignment.student_size, shared / alignment.teacher_size),
        student_special=special(s_tok),
        teacher_special=special(t_tok),
        student_only_as_teacher_tokens=reaches,
    )


def template_report(s_tok, t_tok, question: str, config: ProbeConfig) -> dict:
    """One question through both chat templates, with the generation prefix."""
    messages = chat_messages(question, config.system_prompt or None)
    texts = [tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + config.generation_prefix
             for tok in (s_tok, t_tok)]  # fmt: skip
    diff = list(difflib.unified_diff(texts[1].splitlines(), texts[0].splitlines(), "teacher", "student", lineterm=""))
    return dict(student=texts[0], teacher=texts[1], same=texts[0] == texts[1], diff=diff)


def memory_report(engine, longest_prompt: int, device: torch.device) -> dict:
    needs = engine.kv_bytes(longest_prompt)
    return dict(
        capacity=engine.capacities(longest_prompt)[0],
        student_bytes_per_token=kv_bytes_per_token(engine.student),
        teacher_bytes_per_token=kv_bytes_per_token(engine.teacher) if engine.teacher is not None else 0,
        needed=sum(needs.values()),
        free=free_memory(device),
    )


class _Misses:
    """Per trace, (1 - T(A))^N at every position the engine stepped: the chance RSD falls back there."""

    def __init__(self, rules: dict, trials: int):
        self.rules, self.trials = rules, trials
        self.chance: dict = {key: defaultdict(list) for key in rules}

    def __call__(self, requests, proposal, scores) -> None:
        for key, rule in self.rules.items():
            accepted = (proposal.probs * rule.on_support(proposal, scores)).sum(-1).double()  # T(A): [B]
            for request, p in zip(requests, ((1 - accepted).clamp(0, 1) ** self.trials).tolist(), strict=True):
                self.chance[key][(request.question_id, request.sample_index)].append(p)

    def rate(self, key) -> tuple[float, float]:
        """The expected fallback rate over all positions, and its standard error with traces as the units."""
        return ratio([sum(c) for c in self.chance[key].values()], [len(c) for c in self.chance[key].values()])

    def first(self, key) -> float:
        """The expected fallback rate at each trace's first position (where every run has the same prefix)."""
        return statistics.fmean(c[0] for c in self.chance[key].values())


def ratio(sums: list[float], counts: list[int]) -> tuple[float, float]:
    """sum(sums) / sum(counts) and the ratio estimator's standard error over the units (traces): the
    positions of one trace are not independent, its traces are."""
    total, n = sum(sums), sum(counts)
    if n == 0:
        return math.nan, math.nan
    r = total / n
    spread = sum((s - r * c) ** 2 for s, c in zip(sums, counts, strict=True))
    units = len(counts)
    return r, math.sqrt(spread * units / max(units - 1, 1)) / n


def measure_acceptance(config: ProbeConfig, models, sample) -> dict:
    """Teacher-only traces of the sample, with T and a(x) at every position: the share of teacher tokens
    under each p_th and RSD's expected fallback rate there; then a real RSD run at the configured rule
    (observed the same way: what it should fall back on at its own positions, against what it did)."""
    student, s_tok, teacher, alignment = models
    rules = {p: AcceptanceRule("threshold", p, config.acceptance_top_k) for p in config.thresholds}
    rules["configured"] = config.acceptance_rule()
    teacher_view = _Misses(rules, config.trials)
    teacher_only = config.engine(student, s_tok, teacher, alignment, rsd=RSD(AcceptanceRule("threshold", 0.0)),
                                 max_new_tokens=config.probe_tokens, observer=teacher_view, speculate=0)  # fmt: skip
    traces = list(teacher_only.run(_requests(config, sample)))
    scores = [a for t in traces for a in t.scores]
    by_threshold = {
        str(p): dict(teacher_tokens_under=sum(a < p for a in scores) / max(len(scores), 1),
                     expected_fallback_rate=teacher_view.rate(p)[0])
        for p in config.thresholds
    }  # fmt: skip
    rsd_view = _Misses({"configured": rules["configured"]}, config.trials)
    real = config.engine(student, s_tok, teacher, alignment, max_new_tokens=config.probe_tokens, speculate=0,
                         observer=rsd_view)  # fmt: skip
    begin = time.perf_counter()
    rsd = list(real.run(_requests(config, sample)))
    seconds = time.perf_counter() - begin
    fell, fell_error = ratio([sum(t.fallbacks) for t in rsd], [len(t.token_ids) for t in rsd])
    expected, expected_error = teacher_view.rate("configured")
    first = [t.fallbacks[0] for t in rsd if t.fallbacks]
    return dict(
        questions=len(sample),
        teacher_tokens=len(scores),
        by_threshold=by_threshold,
        expected_fallback_rate=expected,
        expected_error=expected_error,
        real_rsd=dict(
            fallback_rate=fell, error=fell_error, at_own_positions=rsd_view.rate("configured")[0],
            tokens=sum(len(t.token_ids) for t in rsd), samples=len(rsd), seconds=seconds,
        ),  # fmt: skip
        # at the first token both runs have the same prefix, the prompt: there the estimate must hold
        first_token=dict(expected=teacher_view.first("configured"), fallback_rate=statistics.fmean(first),
                         samples=len(first)),  # fmt: skip
        mean_length=sum(len(t.token_ids) for t in rsd) / max(len(rsd), 1),
        cut=sum(t.finish_reason == "length" for t in rsd) / max(len(rsd), 1),
    )


def measure_cost(config: ProbeConfig, models, sample, n_questions: int, acceptance: dict) -> dict:
    """Tokens/s of plain (and speculative) RSD at the configured batch size, and the projected run."""
    student, s_tok, teacher, alignment = models
    requests = _requests(config, sample, config.batch_size)  # one full batch
    modes = {"plain": 0} | ({"speculative": config.speculate} if config.speculate else {})
    speeds = {
        mode: _speed(config.engine(student, s_tok, teacher, alignment, max_new_tokens=config.probe_tokens, speculate=k),
                     requests)
        for mode, k in modes.items()
    }  # fmt: skip
    # the sample's traces were cut at probe_tokens: most of them cut, a trace is as long as max_new_tokens
    length = config.max_new_tokens if acceptance["cut"] > 0.5 else acceptance["mean_length"]
    tokens = n_questions * config.samples * length
    best = max(speeds.values())
    workers = sorted({1, config.workers})
    return dict(
        tokens_per_second=speeds,
        expected_tokens_per_trace=length,
        projected_tokens=tokens,
        projected_seconds={str(w): tokens / best / w for w in workers},
    )


def _speed(engine, requests) -> float:
    start = time.perf_counter()
    tokens = sum(len(t.token_ids) for t in engine.run(requests))
    return tokens / max(time.perf_counter() - start, 1e-9)


def _requests(config: ProbeConfig, sample, rows: int | None = None) -> list[Request]:
    """One request per question of the sample (or `rows` of them, cycling through the sample)."""
    rows = rows or len(sample)
    return [Request(q.id, i // len(sample), prompt, sample_seed(config.seed, q.id, i // len(sample)))
            for i, (q, prompt) in zip(range(rows), itertools.cycle(sample))]  # fmt: skip


# -- the page --------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _percent(rate: float, error: float) -> str:
    return f"{100 * rate:.1f}% ± {100 * error:.1f}%"


def page(result: ProbeResult, config: ProbeConfig) -> str:
    """probe.md: one readable page."""
    from ..render.text import cell, code

    v, t = result.vocabulary, result.templates
    lines = [
        f"# ownwords probe: {cell(config.teacher)} -> {cell(config.student)}",
        "",
        f"**Verdict: {cell(result.verdict)}**",
        *[f"* warning: {cell(w)}" for w in result.warnings],
        "",
        "## Vocabulary",
        "",
        "| | student | teacher |",
        "|---|---|---|",
        f"| tokens (tokenizer) | {v['student_tokens']} | {v['teacher_tokens']} |",
        f"| padded logit columns | {v['student_padded_columns']} | {v['teacher_padded_columns']} |",
        f"| only on this side | {v['student_only']} | {v['teacher_only']} |",
        f"| special / added tokens | {', '.join(code(s) for s in v['student_special'][:12])} | "
        f"{', '.join(code(s) for s in v['teacher_special'][:12])} |",
        "",
        f"Shared: {v['shared']} tokens ({v['overlap']:.1%} of the smaller side; floor {config.min_vocab_overlap:.0%}).",
        "",
        *[f"* student-only {code(s)} reaches the teacher as {' '.join(code(p) for p in pieces)}"
          for s, pieces in v["student_only_as_teacher_tokens"].items()],  # fmt: skip
        "",
        "## Templates",
        "",
        "The same for both sides." if t["same"] else "The two sides render the prompt differently:",
        "",
        "```",
        *(t["student"].splitlines() if t["same"] else t["diff"]),
        "```",
        "",
    ]
    a = result.acceptance
    if a:
        real = a["real_rsd"]
        lines += [
            "## Acceptance",
            "",
            f"A teacher-only run of {a['teacher_tokens']} tokens over {a['questions']} questions, scored by the "
            "student at every position (the expected fallback rate: the mean of (1 - T(A))^N there):",
            "",
            f"| p_th | teacher tokens under p_th | expected fallback rate (N = {config.trials}) |",
            "|---|---|---|",
            *[f"| {p} | {100 * r['teacher_tokens_under']:.1f}% | {100 * r['expected_fallback_rate']:.1f}% |"
              for p, r in a["by_threshold"].items()],  # fmt: skip
            "",
            f"At the configured rule ({config.rule} {config.threshold:g}): expected fallback rate "
            f"{_percent(a['expected_fallback_rate'], a['expected_error'])}; a real RSD run of {real['tokens']} tokens "
            f"fell back on {_percent(real['fallback_rate'], real['error'])} (at its own positions it should have: "
            f"{100 * real['at_own_positions']:.1f}%). At the first token (the same prefix in both runs): expected "
            f"{100 * a['first_token']['expected']:.1f}%, real {100 * a['first_token']['fallback_rate']:.1f}%. "
            "Errors: one standard error, the traces as units.",
            "",
        ]
    c = result.cost
    m = c["memory"]
    lines += [
        "## Cost",
        "",
        f"KV cache: {m['student_bytes_per_token']} + {m['teacher_bytes_per_token']} bytes per token (student + teacher); "
        f"{config.batch_size} rows x {m['capacity']} tokens need {m['needed'] / 2**30:.2f} GiB of "
        f"{m['free'] / 2**30:.2f} GiB free.",
        "",
    ]
    if "tokens_per_second" in c:
        speeds = ", ".join(f"{k} {s:.1f} tok/s" for k, s in c["tokens_per_second"].items())
        lines += [
            f"Measured here at batch {config.batch_size}: {speeds}. The configured run: about {c['projected_tokens']:.0f} "
            f"tokens ({c['expected_tokens_per_trace']:.0f} per trace), "
            + ", ".join(f"{_duration(s)} on {w} worker(s)" for w, s in c["projected_seconds"].items()) + ".",
            "",
        ]
    lines.append(f"(The probe took {result.seconds:.0f} s.)")
    return "\n".join(lines) + "\n"
