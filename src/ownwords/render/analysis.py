"""`ownwords analyze`'s outputs from its results: report.md, the plots, and traces.html."""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..files import display_name
from .text import cell, plot_text, pyplot, token_pieces

MAX_LINES = 6  # a line plot with more lines than this is a heat map (readable at any experiment size)


def matrix_table(analysis: dict) -> str:
    """Markdown: trace sets x students, the share of tokens under p_th."""
    students = analysis.students
    lines = [
        f"| trace set | {' | '.join(cell(display_name(s)) + ' < p_th' for s in students)} |",
        "|---|" + "---|" * len(students),
    ]
    for name, row in analysis.matrix.items():
        lines.append(f"| {cell(name)} | " + " | ".join(f"{100 * row[s]:.2f}%" for s in students) + " |")
    return "\n".join(lines)


def report(analysis: dict) -> str:
    th = analysis.threshold
    lines = [
        "# ownwords analyze",
        "",
        f"Share of trace tokens each student gives probability under p_th = {th:g}, and mean NLL; over every "
        "trace of a set, and (training) over the traces `select` chose.",
        "",
        "| trace set | student | traces | tokens | < p_th | < 1e-3 | < 1e-2 | < 1e-1 | mean NLL | training traces | training < p_th |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by_student in analysis.sets.items():
        for student, r in by_student.items():
            t = r["training"]
            training = "–" if t["under_threshold"] is None else f"{100 * t['under_threshold']:.2f}%"
            lines.append(
                f"| {cell(name)} | {cell(display_name(student))} | {r['traces']} | {r['tokens']} | "
                f"{100 * r['under_threshold']:.2f}% | {100 * r['under_0.001']:.2f}% | {100 * r['under_0.01']:.2f}% | "
                f"{100 * r['under_0.1']:.2f}% | {r['mean_nll']:.3f} | {t['traces']} | {training} |"
            )
    lines += [
        "",
        "![token probabilities](histogram.png)",
        "",
        "![by position](position.png)",
        "",
        "![trace sets x students](matrix.png)",
        "",
        "Trace view: [traces.html](traces.html)",
        "",
        "## Most frequent low-probability tokens",
        "",
    ]
    for name, by_student in analysis.sets.items():
        for student, r in by_student.items():
            tokens = ", ".join(f"`{t!r}` ({c})" for t, c in r["top_low_tokens"][:10])
            lines.append(f"* {cell(name)} under {cell(display_name(student))}: {tokens or 'none'}")
    return "\n".join(lines) + "\n"


# -- plots ----------------------------------------------------------------------------------------


def write_plots(analysis: dict, out: Path) -> None:
    plt = pyplot()
    students, sets = analysis.students, list(analysis.sets)
    threshold = analysis.threshold
    h = next(iter(analysis.sets[sets[0]].values()))["histogram_log10"]
    step = (h["hi"] - h["lo"]) / len(h["counts"])
    edges = [h["lo"] + step * i for i in range(len(h["counts"]) + 1)]

    def histogram(r):
        total = max(sum(r["histogram_log10"]["counts"]), 1)
        return [c / total for c in r["histogram_log10"]["counts"]]

    _panels(plt, analysis, out / "histogram.png", histogram, edges,
            "log10 student probability of the trace token", "share of tokens", "Token probabilities",
            marker=math.log10(threshold))  # fmt: skip
    bins = len(analysis.sets[sets[0]][students[0]]["low_share_by_position"])
    _panels(plt, analysis, out / "position.png", lambda r: r["low_share_by_position"],
            [i / bins for i in range(bins + 1)], "relative position in the trace", f"share under p_th={threshold:g}",
            "Where the unlikely tokens are")  # fmt: skip
    matrix_plot(plt, analysis, out / "matrix.png")


def _panels(plt, analysis, path, values, edges, xlabel, ylabel, title, marker=None) -> None:
    """One panel per student; in each, one line per trace set, or a heat map (sets x bins) when the
    sets are too many for a legend."""
    students, sets = analysis.students, list(analysis.sets)
    cols = min(3, len(students))
    rows = -(-len(students) // cols)
    heat = len(sets) > MAX_LINES
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(
        5.2 * cols + 2.5, (max(3.2, 0.28 * len(sets) + 1.6) if heat else 3.6) * rows))  # fmt: skip
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)]
    for ax, student in zip(axes.flat, students, strict=False):
        grid = [values(analysis.sets[name][student]) for name in sets]
        if heat:
            image = ax.imshow(grid, aspect="auto", cmap="Reds", extent=(edges[0], edges[-1], len(sets) - 0.5, -0.5))
            ax.set_yticks(range(len(sets)), [plot_text(n) for n in sets], fontsize=7)
            fig.colorbar(image, ax=ax, label=ylabel)
        else:
            for name, row in zip(sets, grid, strict=True):
                ax.plot(centres, row, marker=".", label=plot_text(name))
            ax.set_ylabel(ylabel)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        if marker is not None:
            ax.axvline(marker, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel(xlabel)
        ax.set_title(plot_text(f"under {display_name(student)}", 40), fontsize=9)
    for ax in list(axes.flat)[len(students):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def matrix_plot(plt, analysis: dict, path: Path) -> None:
    """Trace sets x students heat map: the share of tokens under p_th, written in every cell."""
    sets, students = list(analysis.matrix), analysis.students
    values = [[100 * analysis.matrix[s][m] for m in students] for s in sets]
    top = max(max(row) for row in values) or 1.0
    fig, ax = plt.subplots(figsize=(max(5.5, 3.0 + 1.6 * len(students)), 2.2 + 0.45 * len(sets)))
    image = ax.imshow(values, cmap="Reds", aspect="auto", vmin=0, vmax=max(top, 1.0))
    for i, row in enumerate(values):
        for j, v in enumerate(row):  # light text on dark cells
            ax.text(j, i, f"{v:.1f}%", ha="center", va="center", fontsize=9 if len(sets) < 20 else 6,
                    color="white" if v > 0.55 * top else "black")  # fmt: skip
    ax.set_xticks(range(len(students)), [plot_text(display_name(m), 18) for m in students], fontsize=8)
    ax.set_yticks(range(len(sets)), [plot_text(s) for s in sets], fontsize=8)
    ax.set_xlabel("scored under student")
    ax.set_ylabel("trace set")
    ax.set_title(plot_text(f"Trace tokens the student gives under p_th = {analysis['threshold']:g}", 40))
    fig.colorbar(image, ax=ax, label="% of trace tokens under p_th")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the trace view -------------------------------------------------------------------------------

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


def trace_html(shown: list[tuple], threshold: float, totals: dict[str, int]) -> str:
    """One page per question, its traces from every set under every student side by side: the
    question, the gold answer, each trace's extracted answer and selection status, and its tokens
    coloured by the student's probability (fallback tokens boxed; hover for the probability).
    shown: (set, student, traces, scored, own, tokenizer); totals: every set's size."""
    pages: dict[str, list[str]] = {}  # question -> one card per trace and student
    asked: dict[str, tuple[str, str | None]] = {}
    counts: dict[str, int] = {}
    for name, student, traces, scored, own, tokenizer in shown:
        counts[name] = len(traces)
        for t, s, mine in zip(traces, scored, own, strict=True):
            key = t.id.split("#", 1)[0]
            asked.setdefault(key, (t.question, t.gold))
            text = token_pieces(s.ids, tokenizer)
            fallbacks = t.fallbacks if mine and s.stored else None
            pages.setdefault(key, []).append(_trace_card(name, student, t, s.probs, text, fallbacks, threshold))
    cut = [f"{n}: the first {counts[n]} of {totals[n]}" for n in counts if counts[n] < totals[n]]
    options = "".join(f"<option value='{i}'>{html.escape(q[:90])}</option>" for i, q in enumerate(asked))
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>ownwords traces</title><style>{STYLE}</style>",
        "<h1>ownwords traces</h1><p class='legend'>Background: the student's probability of each token "
        f"(white = likely, red = under p_th = {threshold:g}). <span class='fb'>Boxed</span>: a fallback token "
        "the student wrote itself. <span class='prefix'>Grey</span>: the generation prefix. Hover a token for its "
        "probability; arrow keys page through the questions.</p>",
    ]
    if cut:
        parts.append(f"<p class='meta'>Shown: {html.escape('; '.join(cut))} traces (analyze's html_traces).</p>")
    parts.append(
        f"<nav><button id='prev'>&larr;</button> <select id='pick'>{options}</select> "
        f"<button id='next'>&rarr;</button> {len(asked)} questions</nav>"
    )
    for key, cards in pages.items():
        question, gold = asked[key]
        parts.append(
            f"<section class='q'><h2>{html.escape(key)}</h2><p>{html.escape(question)}</p>"
            f"<p class='meta'>gold answer: <b>{html.escape(str(gold))}</b></p><div class='grid'>{''.join(cards)}</div></section>"
        )
    return "\n".join([*parts, f"<script>{SCRIPT}</script>"]) + "\n"


def _trace_card(name, student, t, probs, text, fallbacks, threshold: float) -> str:
    verdict = t.verdict or {}
    correct = verdict.get("correct")
    mark = "" if correct is None else ("<span class='ok'>correct</span>" if correct else "<span class='bad'>wrong</span>")
    status = verdict.get("status", "not selected yet") if t.token_ids is not None else "a dataset's trace"
    if verdict.get("reason"):
        status += f" ({verdict['reason']})"
    meta = (
        f"extracted answer: <b>{html.escape(str(verdict.get('answer')))}</b> {mark} &middot; selection: {html.escape(status)}"
        f" &middot; {len(probs)} tokens, {sum(p < threshold for p in probs)} under p_th"
    )
    spans = [f"<span class='prefix'>{html.escape(t.prefix)}</span>"] if t.prefix else []
    for j, (piece, p) in enumerate(zip(text, probs, strict=True)):
        fallback = fallbacks is not None and j < len(fallbacks) and fallbacks[j]
        strength = min(1.0, max(0.0, -math.log10(max(p, 1e-12)) / -math.log10(threshold) / 1.5))
        spans.append(
            f"<span class='t{' fb' if fallback else ''}' style='background:rgba(235,60,50,{0.75 * strength:.2f})' "
            f"title='p={p:.4g}'>{html.escape(piece)}</span>"
        )
    return (
        f"<div class='trace'><h3>{html.escape(name)} &middot; {html.escape(t.id)} "
        f"<small>under {html.escape(display_name(student))}</small></h3><p class='meta'>{meta}</p>"
        f"<pre>{''.join(spans)}</pre></div>"
    )
