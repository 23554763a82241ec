"""`ownwords analyze`: how learnable are these traces for this student?

Scores trace sets (runs of a generation store, exported datasets, or any dataset with a prompt and a
reasoning-text column) under one or more students by teacher forcing -- per-token probability, with
the same prompt formatting as generation -- and reports the share of low-probability tokens, the
mean negative log-likelihood, where in a trace the unlikely tokens sit and which they are, a trace
sets x students matrix, plots, and an HTML view of the traces coloured by probability.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..data.questions import build_prompt, chat_messages, load_rows
from ..data.store import TraceStore
from ..decoding.cache import logits_width, padding_id
from ..decoding.scoring import score_tokens
from ..errors import UserError
from ..models.loading import DTYPES, display_name, load_model

logger = logging.getLogger(__name__)

CUTS = (1e-3, 1e-2, 1e-1)
POSITION_BINS = 10


@dataclass
class AnalyzeConfig:
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
        default="prompt", metadata={"help": "Dataset column: chat messages or a question."}
    )
    text_field: str = field(
        default="completion", metadata={"help": "Dataset column: the trace (text, or messages)."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "For datasets whose prompt is a bare question."}
    )
    threshold: float = field(default=0.01, metadata={"help": "p_th: a token under it is 'low probability'."})
    max_traces: int | None = field(default=None, metadata={"help": "At most n traces per set."})
    batch_size: int = field(default=8, metadata={"help": "Traces scored together."})
    chunk: int = field(
        default=512, metadata={"help": "Long traces are scored in chunks of this many tokens (KV-cached)."}
    )
    html_traces: int = field(
        default=400,
        metadata={
            "help": "Traces per set in the HTML view (0: all; each token is a span, so big sets make big pages)."
        },
    )
    out: str = field(default="analysis", metadata={"help": "Output directory."})
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, ..."})
    dtype: str = field(default="float32", metadata={"help": f"One of {', '.join(DTYPES)}."})

    def __post_init__(self) -> None:
        if not self.students:
            raise UserError("students is required (one or more models)")
        if not self.store and not self.datasets:
            raise UserError("nothing to analyse: give a store (with runs) and/or datasets")
        if self.runs and not self.store:
            raise UserError("runs needs a store")
        if not 0 < self.threshold <= 1:
            raise UserError(f"threshold is {self.threshold}; expected a probability in (0, 1]")
        if self.chunk < 1 or self.batch_size < 1:
            raise UserError("chunk and batch_size must be >= 1")
        if self.max_traces is not None and self.max_traces < 1:
            raise UserError(f"max_traces is {self.max_traces}; expected >= 1")


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
                messages = chat_messages(s["question"], system)
                traces.append(
                    ScoredTrace(
                        f"{s['question_id']}#{s['sample_index']}",
                        messages,
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
            ScoredTrace(str(row.get("question_id", i)), prompt, "", text, question=prompt[-1]["content"])
        )
        if config.max_traces and len(traces) >= config.max_traces:
            break
    return traces


def _load_from_disk(path: str):
    from datasets import load_from_disk

    return load_from_disk(path)


# -- scoring ------------------------------------------------------------------------------------


def score_set(
    traces: list[ScoredTrace], model, tokenizer, model_name: str, config: AnalyzeConfig
) -> list[list[float]]:
    """Per-token probabilities of each trace under `model`; stored ids are used when the model is the
    trace's own student, otherwise prompt and text are re-tokenised with the model's chat template."""
    vocab = min(len(tokenizer), logits_width(model))
    pad = padding_id(model, tokenizer)
    inputs = []
    for t in traces:
        if own_tokens(t, model_name):
            prompt = tokenizer(t.prompt_text, add_special_tokens=False).input_ids
            inputs.append((prompt, t.token_ids))
        else:
            prompt = build_prompt(tokenizer, t.messages[-1]["content"], _system(t.messages), t.prefix)
            inputs.append((prompt, tokenizer(t.text, add_special_tokens=False).input_ids))
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]) + len(inputs[i][1]))
    out: list[list[float]] = [[] for _ in inputs]
    batches = range(0, len(order), config.batch_size)
    for b in tqdm(batches, desc=f"score under {display_name(model_name)}", unit="batch", disable=None):
        idx = [i for i in order[b : b + config.batch_size] if inputs[i][1]]
        if idx:
            scored = score_tokens(
                model, vocab, pad, [inputs[i][0] for i in idx], [inputs[i][1] for i in idx], config.chunk
            )
            for i, p in zip(idx, scored, strict=True):
                out[i] = p
    return out


def own_tokens(trace: ScoredTrace, model_name: str) -> bool:
    """Was the trace generated by this very model (so its stored token ids and records apply)?"""
    if trace.token_ids is None or trace.student is None:
        return False
    a, b = Path(trace.student).expanduser(), Path(model_name).expanduser()
    return a.resolve() == b.resolve() if a.exists() and b.exists() else trace.student == model_name


def _system(messages: list[dict]) -> str | None:
    return messages[0]["content"] if messages and messages[0]["role"] == "system" else None


# -- statistics ---------------------------------------------------------------------------------


def statistics(
    traces: list[ScoredTrace],
    probs: list[list[float]],
    tokenizer,
    threshold: float,
    token_ids: list[list[int]],
    own: list[bool],
) -> dict:
    """Summary of one trace set under one student; `own[i]`: trace i was generated by this student
    (so its fallback records apply to these very tokens)."""
    flat = [p for row in probs for p in row]
    if not flat:
        raise UserError("no tokens to analyse (every trace is empty)")
    n = len(flat)
    low = Counter()
    profile = [[0, 0] for _ in range(POSITION_BINS)]  # [low, all] per relative-position bin
    for ids, row in zip(token_ids, probs, strict=True):
        for j, (tok, p) in enumerate(zip(ids, row, strict=False)):
            b = min(POSITION_BINS - 1, j * POSITION_BINS // max(len(row), 1))
            profile[b][1] += 1
            if p < threshold:
                profile[b][0] += 1
                low[tok] += 1
    # Where the generation records apply (the student scoring its own traces): tokens it accepted.
    accepted = [
        p
        for t, row, mine in zip(traces, probs, own, strict=True)
        if mine
        for p, f in zip(row, t.fallbacks, strict=True)
        if not f
    ]
    per_trace = []
    for t, row, mine in zip(traces, probs, own, strict=True):
        entry = dict(
            id=t.id,
            tokens=len(row),
            under_threshold=sum(p < threshold for p in row) / max(len(row), 1),
            mean_nll=-sum(math.log(max(p, 1e-45)) for p in row) / max(len(row), 1),
        )
        if mine:
            entry["fallback_rate"] = sum(t.fallbacks) / max(len(t.fallbacks), 1)
        per_trace.append(entry)
    return dict(
        traces=len(traces),
        tokens=n,
        under_threshold=sum(p < threshold for p in flat) / n,
        **{f"under_{c:g}": sum(p < c for p in flat) / n for c in CUTS},
        mean_nll=-sum(math.log(max(p, 1e-45)) for p in flat) / n,
        accepted_under_threshold=sum(p < threshold for p in accepted) / len(accepted) if accepted else None,
        low_share_by_position=[lo / al if al else 0.0 for lo, al in profile],
        top_low_tokens=[(tokenizer.decode([tok]), count) for tok, count in low.most_common(20)],
        histogram_log10=_histogram(flat),
        per_trace=per_trace,
    )


def _histogram(probs: list[float], lo: float = -8.0, bins: int = 32) -> dict:
    counts = [0] * bins
    for p in probs:
        x = math.log10(max(p, 10**lo))
        counts[min(bins - 1, int((x - lo) / -lo * bins))] += 1
    return dict(lo=lo, hi=0.0, counts=counts)


# -- the command --------------------------------------------------------------------------------


def analyze(config: AnalyzeConfig) -> dict:
    sets: dict[str, list[ScoredTrace]] = {}
    if config.store:
        sets.update(store_sets(config.store, config.runs, config.max_traces))
    for source in config.datasets:
        sets[Path(source).stem or source] = dataset_set(source, config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {name: {} for name in sets}
    shown: dict[str, tuple] = {}
    for student in config.students:
        model, tokenizer = load_model(student, config.device, config.dtype)
        for name, traces in sets.items():
            probs = score_set(traces, model, tokenizer, student, config)
            own = [own_tokens(t, student) for t in traces]
            ids = [
                t.token_ids if mine else tokenizer(t.text, add_special_tokens=False).input_ids
                for t, mine in zip(traces, own, strict=True)
            ]
            results[name][student] = statistics(traces, probs, tokenizer, config.threshold, ids, own)
            shown.setdefault(name, (student, traces, probs, ids, tokenizer))
    matrix = {
        name: {s: r["under_threshold"] for s, r in by_student.items()} for name, by_student in results.items()
    }
    analysis = dict(threshold=config.threshold, students=config.students, sets=results, matrix=matrix)
    (out / "analysis.json").write_text(json.dumps(analysis, indent=2, ensure_ascii=False) + "\n")
    _plots(analysis, out)
    (out / "traces.html").write_text(trace_html(shown, config))
    (out / "report.md").write_text(report(analysis))
    return analysis


def matrix_table(analysis: dict) -> str:
    """Markdown: trace sets x students, the share of tokens under p_th."""
    students = analysis["students"]
    lines = [
        f"| trace set | {' | '.join(display_name(s) + ' < p_th' for s in students)} |",
        "|---|" + "---|" * len(students),
    ]
    for name, row in analysis["matrix"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[s]:.2f}%" for s in students) + " |")
    return "\n".join(lines)


def report(analysis: dict) -> str:
    th = analysis["threshold"]
    lines = [
        "# ownwords analyze",
        "",
        f"Share of trace tokens each student gives probability under p_th = {th:g}, and mean NLL.",
        "",
        "| trace set | student | traces | tokens | < p_th | < 1e-3 | < 1e-2 | < 1e-1 | mean NLL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_student in analysis["sets"].items():
        for student, r in by_student.items():
            lines.append(
                f"| {name} | {display_name(student)} | {r['traces']} | {r['tokens']} | {100 * r['under_threshold']:.2f}% | "
                f"{100 * r['under_0.001']:.2f}% | {100 * r['under_0.01']:.2f}% | {100 * r['under_0.1']:.2f}% | {r['mean_nll']:.3f} |"
            )
    lines += [
        "",
        "![token probabilities](histogram.png)",
        "",
        "![by position](position.png)",
        "",
        "![trace sets x students](matrix.png)",
        "",
        "ScoredTrace view: [traces.html](traces.html)",
        "",
        "## Most frequent low-probability tokens",
        "",
    ]
    for name, by_student in analysis["sets"].items():
        for student, r in by_student.items():
            tokens = ", ".join(f"`{t!r}` ({c})" for t, c in r["top_low_tokens"][:10])
            lines.append(f"* {name} under {display_name(student)}: {tokens or 'none'}")
    return "\n".join(lines) + "\n"


def _plots(analysis: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_h, ax_h = plt.subplots(figsize=(6.5, 3.8))
    fig_p, ax_p = plt.subplots(figsize=(6.5, 3.8))
    for name, by_student in analysis["sets"].items():
        for student, r in by_student.items():
            label = f"{name} | {display_name(student)}"
            h = r["histogram_log10"]
            step = (h["hi"] - h["lo"]) / len(h["counts"])
            total = max(sum(h["counts"]), 1)
            ax_h.step(
                [h["lo"] + step * i for i in range(len(h["counts"]))],
                [c / total for c in h["counts"]],
                where="post",
                label=label,
            )
            bins = len(r["low_share_by_position"])
            ax_p.plot(
                [(i + 0.5) / bins for i in range(bins)], r["low_share_by_position"], marker=".", label=label
            )
    ax_h.axvline(math.log10(analysis["threshold"]), color="grey", linestyle="--", linewidth=1)
    ax_h.set(
        xlabel="log10 student probability of the trace token",
        ylabel="share of tokens",
        title="Token probabilities",
    )
    ax_p.set(
        xlabel="relative position in the trace",
        ylabel=f"share under p_th={analysis['threshold']:g}",
        title="Where the unlikely tokens are",
    )
    for fig, ax, name in ((fig_h, ax_h, "histogram.png"), (fig_p, ax_p, "position.png")):
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
    _matrix_plot(plt, analysis, out / "matrix.png")


def _matrix_plot(plt, analysis: dict, path: Path) -> None:
    """Trace sets x students heat map: the share of tokens under p_th, written in every cell."""
    sets, students = list(analysis["matrix"]), analysis["students"]
    values = [[100 * analysis["matrix"][s][m] for m in students] for s in sets]
    top = max(max(row) for row in values) or 1.0
    fig, ax = plt.subplots(figsize=(max(4.5, 2.5 + 1.8 * len(students)), 1.8 + 0.7 * len(sets)))
    image = ax.imshow(values, cmap="Reds", aspect="auto", vmin=0, vmax=max(top, 1.0))
    for i, row in enumerate(values):
        for j, v in enumerate(row):  # light text on dark cells
            ax.text(
                j,
                i,
                f"{v:.1f}%",
                ha="center",
                va="center",
                fontsize=11,
                color="white" if v > 0.55 * top else "black",
            )
    ax.set_xticks(range(len(students)), [display_name(m) for m in students])
    ax.set_yticks(range(len(sets)), sets)
    ax.set_xlabel("scored under student")
    ax.set_ylabel("trace set")
    ax.set_title(f"Trace tokens the student gives under p_th = {analysis['threshold']:g}")
    fig.colorbar(image, ax=ax, label="% of trace tokens under p_th")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


STYLE = """
body{font-family:system-ui,sans-serif;max-width:96em;margin:1.5em auto;padding:0 1em;color:#222}
nav{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(28em,1fr));gap:1em}
.trace{border:1px solid #ddd;border-radius:6px;padding:.6em}
.meta{font-size:13px;color:#444}.ok{color:#17803d;font-weight:600}.bad{color:#b3261e;font-weight:600}
pre{white-space:pre-wrap;font-size:13px;line-height:1.7;color:#111}
span.t{border-radius:2px}span.fb{outline:1.5px solid #1f5fbf;outline-offset:-1px}
span.prefix{color:#777;font-style:italic}.legend span{padding:0 .4em}
"""
SCRIPT = """
const pages=[...document.querySelectorAll('section.q')],pick=document.getElementById('pick');
function show(i){i=Math.max(0,Math.min(pages.length-1,i));pages.forEach((p,j)=>p.hidden=j!==i);pick.value=i;}
pick.onchange=()=>show(+pick.value);
document.getElementById('prev').onclick=()=>show(+pick.value-1);
document.getElementById('next').onclick=()=>show(+pick.value+1);
document.onkeydown=e=>{if(e.key==='ArrowLeft')show(+pick.value-1);if(e.key==='ArrowRight')show(+pick.value+1);};
show(0);
"""


def trace_html(shown: dict, config: AnalyzeConfig) -> str:
    """One page per question, its traces from every set side by side: the question, the gold answer,
    each trace's extracted answer and selection status, and its tokens coloured by the student's
    probability (fallback tokens boxed; hover for the probability)."""
    pages: dict[str, list[str]] = {}  # question -> one card per trace
    asked: dict[str, tuple[str, str | None]] = {}
    for name, (student, traces, probs, ids, tokenizer) in shown.items():
        limit = config.html_traces or len(traces)
        for t, row, tok_ids in list(zip(traces, probs, ids, strict=True))[:limit]:
            key = t.id.split("#", 1)[0]
            asked.setdefault(key, (t.question, t.gold))
            pages.setdefault(key, []).append(
                _trace_card(name, student, t, row, tok_ids, tokenizer, config.threshold)
            )
    options = "".join(f"<option value='{i}'>{html.escape(q[:90])}</option>" for i, q in enumerate(asked))
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>ownwords traces</title><style>{STYLE}</style>",
        "<h1>ownwords traces</h1><p class='legend'>Background: the student's probability of each token "
        f"(white = likely, red = under p_th = {config.threshold:g}). <span class='fb'>Boxed</span>: a fallback token "
        "the student wrote itself. <span class='prefix'>Grey</span>: the generation prefix. Hover a token for its "
        "probability; arrow keys page through the questions.</p>",
        f"<nav><button id='prev'>&larr;</button> <select id='pick'>{options}</select> "
        f"<button id='next'>&rarr;</button> {len(asked)} questions</nav>",
    ]
    for key, cards in pages.items():
        question, gold = asked[key]
        parts.append(
            f"<section class='q'><h2>{html.escape(key)}</h2><p>{html.escape(question)}</p>"
            f"<p class='meta'>gold answer: <b>{html.escape(str(gold))}</b></p><div class='grid'>{''.join(cards)}</div></section>"
        )
    return "\n".join([*parts, f"<script>{SCRIPT}</script>"]) + "\n"


def _trace_card(
    name: str, student: str, t: ScoredTrace, row: list[float], tok_ids: list[int], tokenizer, threshold: float
) -> str:
    verdict = t.verdict or {}
    correct = verdict.get("correct")
    mark = (
        ""
        if correct is None
        else ("<span class='ok'>correct</span>" if correct else "<span class='bad'>wrong</span>")
    )
    status = verdict.get("status", "not selected yet")
    if verdict.get("reason"):
        status += f" ({verdict['reason']})"
    meta = (
        f"extracted answer: <b>{html.escape(str(verdict.get('answer')))}</b> {mark} &middot; selection: {html.escape(status)}"
        f" &middot; {len(row)} tokens, {sum(p < threshold for p in row)} under p_th"
    )
    spans = [f"<span class='prefix'>{html.escape(t.prefix)}</span>"] if t.prefix else []
    own = own_tokens(t, student)
    for j, (tok, p) in enumerate(zip(tok_ids, row, strict=False)):
        fallback = own and j < len(t.fallbacks) and t.fallbacks[j]
        strength = min(1.0, max(0.0, -math.log10(max(p, 1e-12)) / -math.log10(threshold) / 1.5))
        spans.append(
            f"<span class='t{' fb' if fallback else ''}' style='background:rgba(235,60,50,{0.75 * strength:.2f})' "
            f"title='p={p:.4g}'>{html.escape(tokenizer.decode([tok]))}</span>"
        )
    return (
        f"<div class='trace'><h3>{html.escape(name)} &middot; {html.escape(t.id)} "
        f"<small>under {html.escape(display_name(student))}</small></h3><p class='meta'>{meta}</p>"
        f"<pre>{''.join(spans)}</pre></div>"
    )
