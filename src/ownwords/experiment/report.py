"""An experiment's report: OUT/report.md, OUT/experiment.json and the plots beside them.

Accuracy per arm and benchmark is the mean over SFT seeds of pass@1 at the first evaluation
temperature, with two uncertainties: the standard deviation over seeds and the standard error over
the evaluated questions (from the evaluation, averaged over seeds), and the change vs the student it
was trained from.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from .plan import Plan


def accuracy_rows(the_plan: Plan, results: dict) -> list[dict]:
    """One row per (arm, student it was trained into) and benchmark; the base students first."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for key, info in the_plan.models.items():
        groups[(info["arm"], info["student"])].append(key)
    base = {info["student"]: key for key, info in the_plan.models.items() if info["arm"] is None}
    rows = []
    for (arm, student), keys in groups.items():
        evals = [results[f"eval/{k}"] for k in keys]
        for bench in _benchmarks(evals[0]):
            per_seed = [_pass1(e, bench) for e in evals]
            mean = statistics.mean(p for p, _ in per_seed)
            base_mean = _pass1(results[f"eval/{base[student]}"], bench)[0]
            trace_set = the_plan.trace_sets.get(arm, {})
            rows.append(
                dict(
                    arm=arm or "base",
                    kind=trace_set.get("kind", "base"),
                    swept=trace_set.get("swept"),
                    rule=trace_set.get("rule"),
                    threshold=trace_set.get("threshold"),
                    round=trace_set.get("round", 0),
                    student=student,
                    benchmark=bench,
                    accuracy=mean,
                    seed_sd=statistics.stdev(p for p, _ in per_seed) if len(per_seed) > 1 else 0.0,
                    eval_se=statistics.mean(se for _, se in per_seed),
                    seeds=[p for p, _ in per_seed],
                    vs_base=mean - base_mean,
                )
            )
    return rows


def _benchmarks(result: dict) -> list[str]:
    return [k for k, v in result.items() if isinstance(v, dict) and "temperatures" in v]


def _pass1(result: dict, bench: str) -> tuple[float, float]:
    first = next(iter(result[bench]["temperatures"].values()))
    return first["pass@1"], first["pass@1_se"]


def trace_rows(the_plan: Plan, results: dict) -> list[dict]:
    matrix = results["analyze"]["matrix"]
    rows = []
    for label, info in the_plan.trace_sets.items():
        gen, sel = results[f"generate/{label}"], results[f"select/{label}"]
        own = _student_path(the_plan, info["student"])
        rows.append(
            dict(
                trace_set=label,
                kind=info["kind"],
                correct=sel["samples_passed"],
                generated=sel["samples"],
                covered=sel["questions_covered"],
                questions=sel["questions"],
                fallback_rate=gen.get("fallback_rate"),
                tokens=gen.get("tokens"),
                generate_seconds=results_seconds(the_plan, f"generate/{label}"),
                low_probability=matrix.get(label, {}).get(own),
            )
        )
    return rows


def _student_path(the_plan: Plan, tag: str) -> str:
    return next(i["path"] for i in the_plan.models.values() if i["arm"] is None and i["student"] == tag)


def results_seconds(the_plan: Plan, stage: str) -> float | None:
    stamp = Path(the_plan.config.out) / "stages" / f"{stage}.json"
    return json.loads(stamp.read_text())["seconds"] if stamp.is_file() else None


def stage_costs(the_plan: Plan) -> dict[str, float]:
    costs: dict[str, float] = defaultdict(float)
    for stage in the_plan.stages:
        seconds = results_seconds(the_plan, stage.name)
        if seconds is not None:
            costs[stage.kind] += seconds
    return dict(costs)


def write_report(the_plan: Plan, results: dict) -> dict:
    out = Path(the_plan.config.out)
    accuracy, traces = accuracy_rows(the_plan, results), trace_rows(the_plan, results)
    summary = dict(
        accuracy=accuracy,
        traces=traces,
        low_probability=results["analyze"]["matrix"],
        threshold=results["analyze"]["threshold"],
        costs=stage_costs(the_plan),
    )
    plots = [_accuracy_plot(accuracy, out / "accuracy.png")]
    plots.append(_sweep_plot(accuracy, out / "sweep.png"))
    (out / "experiment.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(the_plan, summary, [p for p in plots if p]))
    return dict(report=str(out / "report.md"), rows=len(accuracy))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def report_markdown(the_plan: Plan, summary: dict, plots: list[Path]) -> str:
    config = the_plan.config
    lines = [
        f"# Experiment: {Path(config.out).name}",
        "",
        f"Teacher `{config.teacher}`; student(s) {', '.join(f'`{s}`' for s in config.students)}; questions "
        f"`{config.questions}`; {config.seeds} SFT seed(s), {config.rounds} round(s).",
        "",
        "## Accuracy",
        "",
        "pass@1 (the first evaluation temperature): mean over SFT seeds ± standard deviation over seeds; "
        "± standard error over the evaluated questions; change vs the base student.",
        "",
        "| arm | kind | student | benchmark | accuracy | ± sd (seeds) | ± se (questions) | vs base |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["accuracy"]:
        lines.append(
            f"| {r['arm']} | {r['kind']} | {r['student']} | {r['benchmark']} | {_pct(r['accuracy'])} | "
            f"{100 * r['seed_sd']:.1f} | {100 * r['eval_se']:.1f} | {100 * r['vs_base']:+.1f} |"
        )
    lines += [
        "",
        "## Trace sets",
        "",
        f"Low-probability tokens: the share of a set's tokens its own student gives under {summary['threshold']}.",
        "",
        "| trace set | kind | correct / generated | questions covered | fallback rate | tokens | "
        "generate s | low-probability tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in summary["traces"]:
        fallback = "–" if t["fallback_rate"] is None else f"{t['fallback_rate']:.3f}"
        seconds = "–" if t["generate_seconds"] is None else f"{t['generate_seconds']:.1f}"
        lines.append(
            f"| {t['trace_set']} | {t['kind']} | {t['correct']} / {t['generated']} | {t['covered']} / "
            f"{t['questions']} | {fallback} | {t['tokens']} | {seconds} | {_pct(t['low_probability'])} |"
        )
    students = sorted({s for row in summary["low_probability"].values() for s in row})
    lines += [
        "",
        "## Low-probability tokens: trace sets × students",
        "",
        "Each trace set scored under each student (the model-specificity table when there are several).",
        "",
        "| trace set | " + " | ".join(f"`{Path(s).name}`" for s in students) + " |",
        "|---|" + "---|" * len(students),
        *[
            f"| {label} | " + " | ".join(_pct(row.get(s)) for s in students) + " |"
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
        "* [low-probability tokens, trace sets × students](analysis/matrix.png), "
        "[token probability histogram](analysis/histogram.png), [where the unlikely tokens are](analysis/position.png)",
        "* the traces token by token: [analysis/traces.html](analysis/traces.html)",
        "* training loss per model: `models/*/loss.png`; stage records: `stages/`",
        "",
    ]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_plot(accuracy: list[dict], path: Path) -> Path:
    """Per benchmark, one bar per (arm, student): mean over seeds ± sd, each seed a dot."""
    plt = _plt()
    benches = sorted({r["benchmark"] for r in accuracy})
    fig, axes = plt.subplots(
        1, len(benches), figsize=(max(5.5, 1.1 * len(accuracy) / len(benches) + 2), 4), squeeze=False
    )
    colours = {"base": "#9e9e9e", "teacher": "#d9534f", "rsd": "#337ab7", "self": "#5cb85c"}
    for ax, bench in zip(axes[0], benches, strict=True):
        rows = [r for r in accuracy if r["benchmark"] == bench]
        for x, r in enumerate(rows):
            mean, sd = 100 * r["accuracy"], 100 * r["seed_sd"]
            ax.bar(x, mean, 0.6, yerr=sd, capsize=4, color=colours.get(r["kind"], "#777777"))
            ax.plot([x] * len(r["seeds"]), [100 * s for s in r["seeds"]], "k.", alpha=0.6)
            ax.text(x, mean + sd + 1, f"{mean:.1f}", ha="center", fontsize=8)
        names = [
            r["arm"] if len({q["student"] for q in rows}) == 1 else f"{r['arm']}\n→{r['student']}"
            for r in rows
        ]
        ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
        ax.set(title=bench, ylabel="pass@1 (%)")
        ax.set_ylim(0, min(100, max(100 * r["accuracy"] + 100 * r["seed_sd"] for r in rows) + 12))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _sweep_plot(accuracy: list[dict], path: Path) -> Path | None:
    """Accuracy against the swept value, one line per (benchmark, student), the base student dashed.
    A threshold sweep also places every other RSD arm of the same rule at its threshold."""
    swept = {r["swept"][0] for r in accuracy if r["swept"]}
    if not swept:
        return None
    option = sorted(swept)[0]
    lines: dict[tuple, list] = defaultdict(list)
    base = {(r["benchmark"], r["student"]): r["accuracy"] for r in accuracy if r["kind"] == "base"}
    rules = {r["rule"] for r in accuracy if r["swept"] and r["swept"][0] == option}
    for r in accuracy:
        if r["round"] != 1:
            continue
        if r["swept"] and r["swept"][0] == option:
            lines[(r["benchmark"], r["student"])].append((float(r["swept"][1]), r))
        elif option == "threshold" and r["kind"] == "rsd" and not r["swept"] and r["rule"] in rules:
            lines[(r["benchmark"], r["student"])].append((float(r["threshold"]), r))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (bench, student), points in sorted(lines.items()):
        points.sort(key=lambda p: p[0])
        xs, rows = [p[0] for p in points], [p[1] for p in points]
        line = ax.errorbar(
            xs, [100 * r["accuracy"] for r in rows], yerr=[100 * r["seed_sd"] for r in rows], marker="o",
            capsize=3, label=f"{bench} ({student})",
        )  # fmt: skip
        if (bench, student) in base:
            ax.axhline(100 * base[(bench, student)], ls="--", color=line[0].get_color(), alpha=0.6)
        if min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
    ax.set(xlabel=option, ylabel="pass@1 (%)", title=f"{option} sweep (dashed: the base student)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
