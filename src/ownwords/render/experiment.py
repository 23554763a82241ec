"""An experiment's report.md and plots from its summary (experiment.json's content): pure functions of
plain data."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..files import display_name
from .text import cell, code, plot_text, pyplot

COLOURS = {"base": "#9e9e9e", "teacher": "#d9534f", "rsd": "#337ab7", "self": "#5cb85c", "mask": "#f0ad4e",
           "onpolicy": "#8e44ad"}  # fmt: skip


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _interval(interval) -> str:
    return "–" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f}"


def report_markdown(summary: dict, plots: list[Path]) -> str:
    """report.md from an experiment's summary (experiment.json's content)."""
    config = summary["config"]
    first = summary["accuracy"][0] if summary["accuracy"] else {}
    lines = [
        f"# Experiment: {cell(summary['name'])}",
        "",
        f"Teacher {code(config['teacher'])}; student(s) {', '.join(code(s) for s in config['students'])}; questions "
        f"{code(config['questions'])}; {config['seeds']} SFT seed(s), {config['rounds']} round(s). Training: "
        f"{summary['budget']}. Evaluation: {first.get('eval_questions', '–')} questions × "
        f"{first.get('eval_samples', '–')} sample(s) per benchmark.",
        "",
    ]
    for o in summary["overlap"]:
        lines += [f"**Warning:** {o['questions']} training questions are also {cell(o['benchmark'])} evaluation "
                  "questions; those are not held out.", ""]  # fmt: skip
    lines += [
        "## Accuracy",
        "",
        "pass@1 (the first evaluation temperature): mean over SFT seeds ± standard deviation over seeds; "
        "± standard error over the evaluated questions; change vs the base student (and vs the round before).",
        "",
        "| arm | kind | student | benchmark | accuracy | 95% interval | ± sd (seeds) | ± se (questions) | vs base "
        "| vs round before | training examples | epochs | final loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["accuracy"]:
        t = r["training"] or {}
        loss = "–" if t.get("final_loss") is None else f"{t['final_loss']:.3f}"
        epochs = "–" if not t else f"{t['epochs']:.1f}"
        arm = cell(r["arm"]) + (f" ({cell(r['chosen']['option'])} = {r['chosen']['value']}, chosen on dev)"
                                if r.get("chosen") else "")  # fmt: skip
        lines.append(
            f"| {arm} | {r['kind']} | {cell(r['student'])} | {cell(r['benchmark'])} | {_pct(r['accuracy'])} | "
            f"{_interval(r.get('interval'))} | {100 * r['seed_sd']:.1f} | {100 * r['eval_se']:.1f} | {_signed(r['vs_base'])} | "
            f"{_signed(r['vs_round_before'])} | {t.get('examples', '–')} | {epochs} | {loss} |"
        )
    lines += differences_table(summary.get("comparisons", []))
    lines += chosen_table(summary.get("chosen_on_dev", []), summary["config"].get("dev_fraction"))
    lines += [
        "",
        "## Trace sets",
        "",
        "Over every generated sample, and over the training set (the samples `select` chose: one per covered "
        f"question). Low-probability tokens: the share the model that accepted the traces gives under "
        f"{summary['threshold']:g}.",
        "",
        "| trace set | kind | accepted by | correct / generated | questions covered | fallback rate (all / training) "
        "| tokens (all / training) | low-probability tokens (all / training) | generate s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in summary["traces"]:
        seconds = "–" if t["generate_seconds"] is None else f"{t['generate_seconds']:.1f}"
        fallback = " / ".join("–" if v is None else f"{v:.3f}" for v in (t["fallback_rate"], t["training_fallback_rate"]))
        lines.append(
            f"| {cell(t['trace_set'])} | {t['kind']} | {cell(t['acceptor'])} | {t['correct']} / {t['generated']} | "
            f"{t['covered']} / {t['questions']} | {fallback} | {t['tokens']} / {t['training_tokens']} | "
            f"{_pct(t['low_probability'])} / {_pct(t['training_low_probability'])} | {seconds} |"
        )
    scorers = sorted({s for row in summary["low_probability"].values() for s in row})
    lines += [
        "",
        "## Low-probability tokens: trace sets × models",
        "",
        "Each trace set (every sample) scored under each base student and each round's accepting model.",
        "",
        "| trace set | " + " | ".join(code(display_name(s)) for s in scorers) + " |",
        "|---|" + "---|" * len(scorers),
        *[
            f"| {cell(label)} | " + " | ".join(_pct(row.get(s)) for s in scorers) + " |"
            for label, row in summary["low_probability"].items()
        ],
        "",
        "## Cost per stage (seconds, summed)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in summary["costs"].items()],
        "",
        "## Plots",
        "",
        *[f"![{p.stem}]({p.name})" for p in plots],
        "",
        "* [low-probability tokens, trace sets × models](analysis/matrix.png), "
        "[token probability histogram](analysis/histogram.png), [where the unlikely tokens are](analysis/position.png)",
        "* the traces token by token: [analysis/traces.html](analysis/traces.html)",
        "* training loss per model: `models/*/loss.png`; stage records: `stages/`; versions and the resolved "
        "config: `experiment.json`",
        "",
    ]
    return "\n".join(lines)


def differences_table(comparisons: list[dict]) -> list[str]:
    """The compact table: every arm vs the base student, every RSD arm vs every control, with 95% paired
    bootstrap intervals over questions x seeds x samples (experiment/stats.py)."""
    if not comparisons:
        return []
    return [
        "",
        "## Which differences are real",
        "",
        "Accuracy difference (points) with its 95% paired bootstrap interval over questions × seeds × samples "
        f"({comparisons[0]['resamples']} resamples, seeded); **bold**: the interval excludes 0.",
        "",
        "| comparison | student | benchmark | difference | 95% interval |",
        "|---|---|---|---|---|",
        *[_difference_line(c) for c in comparisons],
    ]


def chosen_table(chosen: list[dict], fraction: float | None) -> list[str]:
    """Each sweep's dev accuracies and the value chosen there (the only value evaluated on test)."""
    if not chosen:
        return []
    lines = ["", "## Chosen on the dev split", "",
             f"{fraction:g} of the training questions held out (no trace was generated for them); each sweep's "
             "arms evaluated there, pass@1 mean over seeds; only the chosen arm is evaluated on the test benchmarks.",
             "", "| sweep | dev benchmark | arm | dev accuracy | chosen |", "|---|---|---|---|---|"]  # fmt: skip
    for c in chosen:
        for arm, accuracy in c["dev_accuracy"].items():
            mark = "**yes**" if arm == c["arm"] else ""
            lines.append(f"| {cell(c['name'])} | {cell(c['benchmark'])} | {cell(arm)} | {_pct(accuracy)} | {mark} |")
    return lines


def _difference_line(c: dict) -> str:
    bold = (lambda x: f"**{x}**") if c["excludes_zero"] else (lambda x: x)
    return (f"| {bold(cell(c['arm']) + ' − ' + cell(c['against']))} | {cell(c['student'])} | {cell(c['benchmark'])} | "
            f"{bold(_signed(c['difference']))} | [{_signed(c['low'])}, {_signed(c['high'])}] |")  # fmt: skip


def accuracy_plot(accuracy: list[dict], path: Path) -> Path:
    """Per benchmark a panel (at most 3 per row): one bar per (arm, student) with its 95% bootstrap
    interval (questions x seeds; before those were recorded: the sd over seeds, or the se over
    questions for one seed) as its error bar and each seed a dot; a legend of kinds."""
    plt = pyplot()
    benches = sorted({r["benchmark"] for r in accuracy})
    per_bench = max(len([r for r in accuracy if r["benchmark"] == b]) for b in benches)
    cols = min(3, len(benches))
    rows = -(-len(benches) // cols)
    width = min(7.5, 1.6 + 0.42 * per_bench)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(width * cols, 4.4 * rows))
    for ax, bench in zip(axes.flat, benches, strict=False):
        bars = [r for r in accuracy if r["benchmark"] == bench]
        several = len({r["student"] for r in bars}) > 1
        for x, r in enumerate(bars):
            mean = 100 * r["accuracy"]
            if r.get("interval"):
                error = [[mean - 100 * r["interval"][0]], [100 * r["interval"][1] - mean]]
            else:
                error = 100 * (r["seed_sd"] if len(r["seeds"]) > 1 else r["eval_se"])
            ax.bar(x, mean, 0.7, yerr=error, capsize=3, color=COLOURS.get(r["kind"], "#777777"))
            ax.plot([x] * len(r["seeds"]), [100 * s for s in r["seeds"]], "k.", alpha=0.6, markersize=4)
        names = [plot_text(f"{r['arm']} → {r['student']}" if several else r["arm"]) for r in bars]
        ax.set_xticks(range(len(bars)), names, rotation=45, ha="right", fontsize=7)
        ax.set(title=plot_text(bench), ylabel="pass@1 (%)")
        ax.set_ylim(0, min(100, max(100 * r["accuracy"] for r in bars) * 1.2 + 8))
    for ax in list(axes.flat)[len(benches):]:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, list(COLOURS), loc="upper right", fontsize=8, title="kind (bars: 95% bootstrap interval)",
               title_fontsize=7)  # fmt: skip
    fig.tight_layout(rect=(0, 0, 0.85 if cols == 1 else 0.92, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_lines(accuracy: list[dict]) -> tuple[str | None, dict[tuple, list[tuple[float, dict]]]]:
    """The swept option, and per (benchmark, student) the points (value, row) of its curve: the
    round-1 arms trained into their own student (a cross-trained row is not on that student's curve).
    A threshold sweep also places every other RSD arm of the same rule at its threshold."""
    swept = {r["swept"][0] for r in accuracy if r["swept"]}
    if not swept:
        return None, {}
    option = sorted(swept)[0]
    lines: dict[tuple, list] = defaultdict(list)
    rules = {r["rule"] for r in accuracy if r["swept"] and r["swept"][0] == option}
    for r in accuracy:
        if r["round"] != 1 or r["cross"]:
            continue
        if r["swept"] and r["swept"][0] == option and isinstance(r["swept"][1], int | float):
            lines[(r["benchmark"], r["student"])].append((float(r["swept"][1]), r))
        elif option == "threshold" and r["kind"] == "rsd" and not r["swept"] and r["rule"] in rules:
            lines[(r["benchmark"], r["student"])].append((float(r["threshold"]), r))
    return option, {key: sorted(points, key=lambda p: p[0]) for key, points in lines.items()}


def sweep_plot(accuracy: list[dict], path: Path) -> Path | None:
    """Accuracy against the swept value (`sweep_lines`), one line per (benchmark, student), the base
    student dashed."""
    option, lines = sweep_lines(accuracy)
    if not lines:
        return None
    base = {(r["benchmark"], r["student"]): r["accuracy"] for r in accuracy if r["kind"] == "base"}
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for (bench, student), points in sorted(lines.items()):
        xs, rows = [p[0] for p in points], [p[1] for p in points]
        line = ax.errorbar(
            xs, [100 * r["accuracy"] for r in rows], yerr=[100 * r["seed_sd"] for r in rows], marker="o",
            capsize=3, label=plot_text(f"{bench} ({student})"),
        )  # fmt: skip
        if (bench, student) in base:
            ax.axhline(100 * base[(bench, student)], ls="--", color=line[0].get_color(), alpha=0.6)
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
    ax.set(xlabel=plot_text(option), ylabel="pass@1 (%)", title=plot_text(f"{option} sweep (dashed: the base student)"))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
