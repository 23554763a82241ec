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
    html_traces: int = field(default=12, metadata={"help": "Traces per set shown in the HTML view."})
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


# -- loading trace sets -------------------------------------------------------------------------


def store_sets(path: str, runs: list[str], limit: int | None) -> dict[str, list[ScoredTrace]]:
    sets = {}
    with TraceStore(path, create=False, write=False) as store:  # a foreign file is refused, untouched
        for run in runs or sorted(store.runs()):
            config = store.require_run(run)
            system = config.get("system_prompt") or None
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
        traces.append(ScoredTrace(str(row.get("question_id", i)), prompt, "", text))
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
    sets, students = list(analysis["matrix"]), analysis["students"]
    values = [[100 * analysis["matrix"][s][m] for m in students] for s in sets]
    fig, ax = plt.subplots(figsize=(1.5 + 1.6 * len(students), 1.2 + 0.6 * len(sets)))
    image = ax.imshow(values, cmap="Reds", aspect="auto")
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.1f}%", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(students)), [Path(m).name or m for m in students], rotation=20)
    ax.set_yticks(range(len(sets)), sets)
    ax.set_title(f"tokens under p_th={analysis['threshold']:g}")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "matrix.png", dpi=120)
    plt.close(fig)


def trace_html(shown: dict, config: AnalyzeConfig) -> str:
    """Traces token by token, coloured by student probability; fallback tokens boxed; hover = probability."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>ownwords traces</title><style>",
        "body{font-family:sans-serif;max-width:70em;margin:2em auto}pre{white-space:pre-wrap;font-size:13px;line-height:1.6}",
        "span.t{border-radius:2px}span.fb{outline:1.5px solid #1f5fbf}.legend span{padding:0 .4em}</style>",
        f"<h1>ownwords traces</h1><p class='legend'>Background: student probability of each token (white = likely, "
        f"red = under p_th = {config.threshold:g}). <span class='fb'>Boxed</span>: fallback tokens the student wrote itself. "
        "Hover a token for its probability.</p>",
    ]
    for name, (student, traces, probs, ids, tokenizer) in shown.items():
        parts.append(
            f"<h2>{html.escape(name)} <small>scored under {html.escape(display_name(student))}</small></h2>"
        )
        for t, row, tok_ids in list(zip(traces, probs, ids, strict=True))[: config.html_traces]:
            spans = []
            for j, (tok, p) in enumerate(zip(tok_ids, row, strict=False)):
                fallback = own_tokens(t, student) and j < len(t.fallbacks) and t.fallbacks[j]
                strength = min(
                    1.0, max(0.0, -math.log10(max(p, 1e-12)) / -math.log10(config.threshold) / 1.5)
                )
                color = f"rgba(220,40,40,{strength:.2f})"
                spans.append(
                    f"<span class='t{' fb' if fallback else ''}' style='background:{color}' title='p={p:.4g}'>"
                    f"{html.escape(tokenizer.decode([tok]))}</span>"
                )
            parts.append(f"<h3>{html.escape(t.id)}</h3><pre>{''.join(spans)}</pre>")
    return "\n".join(parts) + "\n"
