"""`ownwords analyze`: how learnable are these traces for this student?

Scores trace sets (runs of a generation store, exported datasets, or any dataset with a prompt and a
reasoning-text column) under one or more students by teacher forcing -- per-token probability, with
the same prompt formatting as generation -- and reports the share of low-probability tokens, the
mean negative log-likelihood, where in a trace the unlikely tokens sit and which they are, a trace
sets x students matrix, plots, and an HTML view of the traces coloured by probability.

Which tokens are scored, the same in every cell: a trace's own token ids (its end-of-sequence token
included) under every model whose vocabulary they are in (its tokenizer decodes them back to the
trace's text), and its text re-tokenised, followed by the model's end-of-sequence token when the
trace ended with one, under any other. Statistics are given over every trace of a set and over its
training traces (those `select` chose; every trace of a dataset). The per-token records of
generation (which tokens were fallbacks) count only under the model that generated the traces.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ..data.questions import build_prompt, chat_messages, load_rows
from ..data.store import TraceStore
from ..errors import UserError
from ..files import check_writable, write_atomically
from ..models.facts import logits_width, padding_id
from ..models.loading import display_name, load_model, model_fingerprint
from ..render.text import token_pieces
from .analyze_config import AnalyzeConfig, AnalyzeResult  # noqa: F401 (part of this module's API)

logger = logging.getLogger(__name__)

CUTS = (1e-3, 1e-2, 1e-1)
POSITION_BINS = 10


@dataclass
class ScoredTrace:
    """One trace to score: its text, and (for store traces) the generating student's ids and records."""

    id: str
    messages: list[dict]  # the prompt as chat messages
    prefix: str  # generation prefix (text after the assistant turn's opening)
    text: str
    student: str | None = None  # the model that generated it (stored ids are its tokens)
    prompt_text: str | None = None
    token_ids: list[int] | None = None
    fallbacks: list[int] | None = None
    scores: list[float] | None = None
    question: str = ""  # the question as asked (for the trace view)
    gold: str | None = None
    verdict: dict | None = None  # what `select` decided: status, reason, answer, correct
    finish_reason: str | None = None  # eos | stop | length (None: not recorded, a finished trace)
    student_fingerprint: str | None = None  # the generating student's content fingerprint

    @property
    def training(self) -> bool:
        """Is it a training trace: chosen by `select` (a dataset's rows all are)?"""
        return self.token_ids is None or (self.verdict or {}).get("status") == "chosen"


@dataclass
class Scored:
    """A trace under one model: the tokens scored and each one's probability."""

    ids: list[int]
    probs: list[float]
    stored: bool  # the trace's own token ids (its generation records align with them)


# -- loading trace sets -------------------------------------------------------------------------


def store_sets(path: str, runs: list[str], limit: int | None) -> dict[str, list[ScoredTrace]]:
    sets = {}
    with TraceStore(path, create=False, write=False) as store:  # a foreign file is refused, untouched
        for run in runs or sorted(store.runs()):
            config = store.require_run(run)
            system = config.get("system_prompt") or None
            verdicts = store.selection(run)
            traces = []
            for s in store.samples(run):
                traces.append(
                    ScoredTrace(
                        f"{s['question_id']}#{s['sample_index']}",
                        chat_messages(s["question"], system),
                        config.get("generation_prefix") or "",
                        s["text"],
                        config.get("student"),
                        s["prompt"],
                        s["token_ids"],
                        s["fallbacks"],
                        s["scores"],
                        question=s["question"],
                        gold=s["answer"],
                        verdict=verdicts.get((s["question_id"], s["sample_index"])),
                        finish_reason=s["finish_reason"],
                        student_fingerprint=config.get("student_fingerprint"),
                    )
                )
                if limit and len(traces) >= limit:
                    break
            sets[run] = traces
    return sets


def dataset_set(source: str, config: AnalyzeConfig) -> list[ScoredTrace]:
    rows = load_rows(source, what="dataset") if not Path(source).is_dir() else _load_from_disk(source)
    for col in (config.prompt_field, config.text_field):
        if col not in rows.column_names:
            raise UserError(
                f"{source}: no column {col!r}; the columns are {rows.column_names} (name them with prompt_field / text_field)"
            )
    traces = []
    for i, row in enumerate(rows):
        prompt, text = row[config.prompt_field], row[config.text_field]
        if isinstance(prompt, str):
            prompt = chat_messages(prompt, config.system_prompt)
        if isinstance(text, list):  # conversational completion: the assistant turn's content
            text = "".join(m["content"] for m in text)
        traces.append(
            ScoredTrace(str(row.get("question_id", i)), prompt, "", text, question=prompt[-1]["content"],
                        finish_reason=row.get("finish_reason"))  # fmt: skip
        )
        if config.max_traces and len(traces) >= config.max_traces:
            break
    return traces


def _load_from_disk(path: str):
    from datasets import load_from_disk

    return load_from_disk(path)


def trace_sets(config: AnalyzeConfig) -> dict[str, list[ScoredTrace]]:
    """Every set by a unique name: a store's runs by run name, datasets by file name; a dataset whose
    name is taken is named with its folder too (`exp2/rsd`), and the clash is logged."""
    sets: dict[str, list[ScoredTrace]] = {}
    if config.store:
        sets.update(store_sets(config.store, config.runs, config.max_traces))
    for source in config.datasets:
        path = Path(source)
        name = path.stem or source
        if name in sets:
            name = f"{path.parent.name}/{path.stem}" if path.parent.name else name
            n = 2
            while name in sets:
                name, n = f"{path.parent.name}/{path.stem}#{n}", n + 1
            logger.warning("analyze: another trace set is already named %r; %s is named %r", path.stem, source, name)
        sets[name] = dataset_set(source, config)
    return sets


# -- scoring ------------------------------------------------------------------------------------


def scored_tokens(trace: ScoredTrace, tokenizer) -> tuple[list[int], list[int], bool]:
    """(prompt ids, trace ids, stored) of a trace under a model's tokenizer: the stored ids when the
    tokenizer reads them as the trace's text, else the text re-tokenised + its EOS (see the module)."""
    if trace.token_ids is not None and trace.prompt_text is not None:
        ended = trace.finish_reason == "eos"
        body = trace.token_ids[:-1] if ended else trace.token_ids
        if tokenizer.decode(body, skip_special_tokens=False) == trace.text:
            return tokenizer(trace.prompt_text, add_special_tokens=False).input_ids, trace.token_ids, True
    prompt = build_prompt(tokenizer, trace.messages[-1]["content"], _system(trace.messages), trace.prefix)
    ids = tokenizer(trace.text, add_special_tokens=False).input_ids
    if trace.finish_reason in ("eos", None) and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return prompt, ids, False


def score_set(traces: list[ScoredTrace], model, tokenizer, model_name: str, config: AnalyzeConfig) -> list[Scored]:
    """Every trace of a set under `model` (teacher forcing, batched and KV-cached in chunks)."""
    from ..decoding.scoring import score_tokens

    vocab = min(len(tokenizer), logits_width(model))
    pad = padding_id(model, tokenizer)
    inputs = [scored_tokens(t, tokenizer) for t in traces]
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]) + len(inputs[i][1]))
    probs: list[list[float]] = [[] for _ in inputs]
    batches = range(0, len(order), config.batch_size)
    for b in tqdm(batches, desc=f"score under {display_name(model_name)}", unit="batch", disable=None):
        idx = [i for i in order[b : b + config.batch_size] if inputs[i][1]]
        if idx:
            scored = score_tokens(
                model, vocab, pad, [inputs[i][0] for i in idx], [inputs[i][1] for i in idx], config.chunk
            )
            for i, p in zip(idx, scored, strict=True):
                probs[i] = p
    return [Scored(ids, p, stored) for (_, ids, stored), p in zip(inputs, probs, strict=True)]


def own_student(trace: ScoredTrace, model_name: str, fingerprint: str) -> bool:
    """Was the trace generated (and its tokens accepted) by this very model? By content: a moved or
    copied model is the same model."""
    if trace.token_ids is None or trace.student is None:
        return False
    if trace.student_fingerprint is not None:
        return trace.student_fingerprint == fingerprint
    a, b = Path(trace.student).expanduser(), Path(model_name).expanduser()  # a run stored before fingerprints
    return a.resolve() == b.resolve() if a.exists() and b.exists() else trace.student == model_name


def _system(messages: list[dict]) -> str | None:
    return messages[0]["content"] if messages and messages[0]["role"] == "system" else None


# -- statistics ---------------------------------------------------------------------------------


def statistics(traces: list[ScoredTrace], scored: list[Scored], tokenizer, threshold: float, own: list[bool]) -> dict:
    """Summary of one trace set under one student; `own[i]`: trace i was generated by this student
    (so its fallback records apply to these very tokens). `training`: the same over its training traces."""
    flat = [p for s in scored for p in s.probs]
    if not flat:
        raise UserError("no tokens to analyse (every trace is empty)")
    low: Counter = Counter()
    profile = [[0, 0] for _ in range(POSITION_BINS)]  # [low, all] per relative-position bin
    for s in scored:
        lows = [j for j, p in enumerate(s.probs) if p < threshold]
        for j in range(len(s.probs)):
            profile[min(POSITION_BINS - 1, j * POSITION_BINS // len(s.probs))][1] += 1
        for j in lows:
            profile[min(POSITION_BINS - 1, j * POSITION_BINS // len(s.probs))][0] += 1
        if lows:
            text = token_pieces(s.ids, tokenizer)
            low.update(text[j] for j in lows if text[j])
    # Where the generation records apply (the student scoring its own traces): tokens it accepted.
    accepted = [
        p
        for t, s, mine in zip(traces, scored, own, strict=True)
        if mine and s.stored
        for p, f in zip(s.probs, t.fallbacks, strict=True)
        if not f
    ]
    per_trace = []
    for t, s, mine in zip(traces, scored, own, strict=True):
        entry = dict(id=t.id, tokens=len(s.probs), under_threshold=_share(s.probs, threshold), mean_nll=_nll(s.probs))
        if mine:
            entry["fallback_rate"] = sum(t.fallbacks) / max(len(t.fallbacks), 1)
        per_trace.append(entry)
    training = [s.probs for t, s in zip(traces, scored, strict=True) if t.training]
    return dict(
        traces=len(traces),
        tokens=len(flat),
        under_threshold=_share(flat, threshold),
        **{f"under_{c:g}": _share(flat, c) for c in CUTS},
        mean_nll=_nll(flat),
        accepted_under_threshold=_share(accepted, threshold) if accepted else None,
        low_share_by_position=[lo / al if al else 0.0 for lo, al in profile],
        top_low_tokens=low.most_common(20),
        histogram_log10=_histogram(flat),
        training=dict(
            traces=len(training),
            tokens=sum(map(len, training)),
            under_threshold=_share([p for row in training for p in row], threshold) if training else None,
        ),
        per_trace=per_trace,
    )


def _share(probs: list[float], cut: float) -> float:
    return sum(p < cut for p in probs) / max(len(probs), 1)


def _nll(probs: list[float]) -> float:
    return -sum(math.log(max(p, 1e-45)) for p in probs) / max(len(probs), 1)


def _histogram(probs: list[float], lo: float = -8.0, bins: int = 32) -> dict:
    counts = [0] * bins
    for p in probs:
        x = math.log10(max(p, 10**lo))
        counts[min(bins - 1, int((x - lo) / -lo * bins))] += 1
    return dict(lo=lo, hi=0.0, counts=counts)


# -- the command --------------------------------------------------------------------------------


def analyze(config: AnalyzeConfig) -> AnalyzeResult:
    """Score every set under every student; writes analysis.json, report.md, the plots and
    traces.html to OUT; returns the analysis (``matrix``: the share under p_th of every trace,
    ``training_matrix``: of the training traces; set -> student -> share)."""
    from ..render.analysis import report, trace_html, write_plots

    sets = trace_sets(config)
    out = Path(config.out)
    check_writable(out, "out")
    results: dict[str, dict[str, dict]] = {name: {} for name in sets}
    shown = []  # (set, student, traces, scored, own, tokenizer) for the trace view
    for student in config.students:
        model, tokenizer = load_model(student, config.device, config.dtype)
        fingerprint = model_fingerprint(student)
        for name, traces in sets.items():
            scored = score_set(traces, model, tokenizer, student, config)
            own = [own_student(t, student, fingerprint) for t in traces]
            results[name][student] = statistics(traces, scored, tokenizer, config.threshold, own)
            limit = config.html_traces or len(traces)
            shown.append((name, student, traces[:limit], scored[:limit], own[:limit], tokenizer))
        del model
    matrix = {name: {s: r["under_threshold"] for s, r in row.items()} for name, row in results.items()}
    training = {name: {s: r["training"]["under_threshold"] for s, r in row.items()} for name, row in results.items()}
    analysis = AnalyzeResult(threshold=config.threshold, students=config.students, sets=results, matrix=matrix,
                             training_matrix=training, summary=_summary(results), shown_traces=config.html_traces)  # fmt: skip
    write_atomically(out / "analysis.json", json.dumps(analysis.to_json(), indent=2, ensure_ascii=False) + "\n")
    write_plots(analysis, out)
    write_atomically(out / "traces.html", trace_html(shown, config.threshold, {n: len(t) for n, t in sets.items()}))
    write_atomically(out / "report.md", report(analysis))
    return analysis


def _summary(results: dict) -> dict:
    """Per set and student, what an experiment's report reads: tokens and shares, all and training."""
    return {
        name: {
            student: dict(tokens=r["tokens"], under_threshold=r["under_threshold"], traces=r["traces"],
                          training_tokens=r["training"]["tokens"], training_traces=r["training"]["traces"],
                          training_under_threshold=r["training"]["under_threshold"])  # fmt: skip
            for student, r in row.items()
        }
        for name, row in results.items()
    }
