"""`ownwords eval`'s outputs from its results: the markdown table and the chart across models."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from ..files import display_name
from .text import cell, plot_text, pyplot


def table(results: dict, benchmarks: list[str]) -> str:
    """Markdown: one row per model and temperature, pass@1 ± se per benchmark, and the average."""
    head = "| model | T | " + " | ".join(benchmarks) + " | average |"
    lines = [head, "|" + "---|" * (len(benchmarks) + 3)]
    for model, res in results.items():
        for temperature in res[benchmarks[0]]["temperatures"]:
            cells = [res[b]["temperatures"][temperature] for b in benchmarks]
            avg = sum(c["pass@1"] for c in cells) / len(cells)
            shown = " | ".join(f"{100 * c['pass@1']:.1f} ± {100 * c['pass@1_se']:.1f}" for c in cells)
            lines.append(f"| {cell(display_name(model))} | {temperature} | {shown} | {100 * avg:.1f} |")
    return "\n".join(lines)


def group_seeds(models: list[str]) -> dict[str, list[str]]:
    """{arm: models}: models whose readable names differ only by a trailing "-seed<N>" are one arm."""
    arms: dict[str, list[str]] = {}
    for model in models:
        arms.setdefault(re.sub(r"-seed\d+$", "", display_name(model)), []).append(model)
    return arms


def plot_comparison(results: dict, benchmarks: list[str], path: Path) -> None:
    plt = pyplot()
    # One bar per model, or per arm: models whose names differ only by a trailing "-seed<N>" are one
    # arm (mean over seeds, error bar = their standard deviation, each seed a dot); a lone model's
    # error bar is its standard error over questions. One set of bars per temperature when several.
    temperatures = list(results[next(iter(results))][benchmarks[0]]["temperatures"])
    arms = group_seeds(list(results))
    bars = [(arm, t) for arm in arms for t in temperatures]
    width = 0.8 / len(bars)
    fig, ax = plt.subplots(figsize=(3.5 + 1.0 * len(benchmarks) * max(1, len(bars) / 3), 4.0))
    for k, (arm, t) in enumerate(bars):
        xs = [i + (k - (len(bars) - 1) / 2) * width for i in range(len(benchmarks))]
        per_seed = [[100 * results[m][b]["temperatures"][t]["pass@1"] for m in arms[arm]] for b in benchmarks]
        means = [sum(v) / len(v) for v in per_seed]
        if len(arms[arm]) > 1:
            errors = [statistics.stdev(v) for v in per_seed]
            label = f"{arm} ({len(arms[arm])} seeds)"
        else:
            errors = [100 * results[arms[arm][0]][b]["temperatures"][t]["pass@1_se"] for b in benchmarks]
            label = arm
        label += f", T={t}" if len(temperatures) > 1 else ""
        ax.bar(xs, means, width, yerr=errors, label=plot_text(label), capsize=3)
        if len(arms[arm]) > 1:
            for x, values in zip(xs, per_seed, strict=True):
                ax.plot([x] * len(values), values, "k.", alpha=0.6)
    ax.set_xticks(range(len(benchmarks)), [plot_text(b) for b in benchmarks])
    shown = f"T = {temperatures[0]}" if len(temperatures) == 1 else "several temperatures"
    ax.set(ylabel="pass@1 (%): ± sd over seeds, or ± standard error", title=f"ownwords eval ({shown})")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
