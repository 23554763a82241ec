"""An experiment's report: OUT/report.md, OUT/experiment.json and the plots beside them.

Accuracy per arm and benchmark is the mean over SFT seeds of pass@1 at the first evaluation
temperature, with two uncertainties: the standard deviation over seeds and the standard error over
the evaluated questions (from the evaluation, averaged over seeds), the change vs the base student,
and from round 2 on the change vs the round before. Trace statistics are given over every generated
sample and over the training set (the samples `select` chose), and the low-probability share under
the model that accepted the traces (the base student in round 1, the round before's model after).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass

from ..config import Result
from ..files import write_atomically
from ..render.experiment import accuracy_plot, report_markdown, sweep_lines, sweep_plot  # noqa: F401 (API)
from ..stages.analyze_config import AnalyzeResult
from ..stages.evaluate_config import ModelEval
from ..stages.generate_config import GenerateResult
from ..stages.select_config import SelectResult
from ..stages.train_config import TrainResult
from .plan import ModelEntry, Plan


@dataclass(eq=False)
class ReportResult(Result):
    report: str  # the path of report.md
    rows: int  # accuracy rows


def accuracy_rows(the_plan: Plan, results: dict) -> list[dict]:
    """One row per (trace set, student it was trained into) and benchmark; the base students first."""
    groups: dict[tuple, list[ModelEntry]] = defaultdict(list)
    for entry in the_plan.models.values():
        groups[(entry.trace_set, entry.student)].append(entry)
    base = {e.student: e.key for e in the_plan.models.values() if e.trace_set is None}
    rows = []
    for (label, student), entries in groups.items():
        evals: list[ModelEval] = [results[f"eval/{e.key}"] for e in entries]
        trace_set = the_plan.trace_sets.get(label)
        for bench in evals[0].benchmarks:
            per_seed = [e.pass1(bench) for e in evals]
            mean = statistics.mean(p for p, _ in per_seed)
            questions, samples = evals[0].size(bench)
            rows.append(
                dict(
                    arm=label or "base",
                    kind=trace_set.arm.kind if trace_set else "base",
                    swept=list(trace_set.arm.swept) if trace_set and trace_set.arm.swept else None,
                    rule=trace_set.arm.options.get("rule", "threshold") if trace_set else None,
                    threshold=_threshold(the_plan, label),
                    round=trace_set.round if trace_set else 0,
                    student=student,
                    cross=any(e.cross for e in entries),
                    benchmark=bench,
                    accuracy=mean,
                    seed_sd=statistics.stdev(p for p, _ in per_seed) if len(per_seed) > 1 else 0.0,
                    eval_se=statistics.mean(se for _, se in per_seed),
                    seeds=[p for p, _ in per_seed],
                    vs_base=mean - results[f"eval/{base[student]}"].pass1(bench)[0],
                    eval_questions=questions,
                    eval_samples=samples,
                    training=_training(the_plan, results, entries),
                )
            )
    _vs_round_before(rows)
    return rows


def _threshold(the_plan: Plan, label: str | None) -> float | None:
    if label is None:
        return None
    return the_plan.stage(f"generate/{label}").resolved()["threshold"]


def _training(the_plan: Plan, results: dict, entries: list[ModelEntry]) -> dict | None:
    """Examples, steps, epochs and final loss of a group's trainings (means over seeds)."""
    trained: list[TrainResult] = [results[f"train/{e.key}"] for e in entries if e.trace_set is not None]
    if not trained:
        return None
    resolved = the_plan.stage(f"train/{entries[0].key}").resolved()
    examples = trained[0].examples
    steps = statistics.mean(t.steps for t in trained)
    losses = [t.final_loss for t in trained if t.final_loss is not None]
    # by epochs, the data is seen exactly that often (an epoch's last batch may be short); by steps,
    # as often as the steps' examples cover it
    by_steps = resolved.get("max_steps", -1) > 0
    epochs = steps * resolved["effective_batch_size"] / max(examples, 1) if by_steps else resolved["num_train_epochs"]
    return dict(examples=examples, steps=steps, epochs=epochs, final_loss=statistics.mean(losses) if losses else None)


def _vs_round_before(rows: list[dict]) -> None:
    """From round 2 on: the change vs the same arm's round before (same student, same benchmark)."""
    index = {(r["arm"], r["student"], r["benchmark"]): r for r in rows}
    for r in rows:
        r["vs_round_before"] = None
        if r["round"] >= 2:
            before = r["arm"].rsplit(".r", 1)[0] + (f".r{r['round'] - 1}" if r["round"] > 2 else "")
            previous = index.get((before, r["student"], r["benchmark"]))
            if previous is not None:
                r["vs_round_before"] = r["accuracy"] - previous["accuracy"]


def trace_rows(the_plan: Plan, results: dict) -> list[dict]:
    analysis: AnalyzeResult = results["analyze"]
    rows = []
    for label, trace_set in the_plan.trace_sets.items():
        gen: GenerateResult = results[f"generate/{label}"]
        sel: SelectResult = results[f"select/{label}"]
        acceptor = the_plan.models[trace_set.acceptor]
        scored = analysis.summary.get(label, {}).get(acceptor.path, {})
        rows.append(
            dict(
                trace_set=label,
                kind=trace_set.arm.kind,
                acceptor=acceptor.key,
                correct=sel.samples_passed,
                generated=sel.samples,
                covered=sel.questions_covered,
                questions=sel.questions,
                training_examples=sel.samples_kept,
                fallback_rate=gen.fallback_rate,
                training_fallback_rate=sel.kept_fallback_rate,
                tokens=gen.tokens,
                training_tokens=sel.kept_tokens,
                generate_seconds=_seconds(the_plan, f"generate/{label}"),
                low_probability=scored.get("under_threshold"),
                training_low_probability=scored.get("training_under_threshold"),
            )
        )
    return rows


def _seconds(the_plan: Plan, stage: str) -> float | None:
    stamp = the_plan.out / "stages" / f"{stage}.json"
    try:
        return json.loads(stamp.read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return None


def stage_costs(the_plan: Plan) -> dict[str, float]:
    costs: dict[str, float] = defaultdict(float)
    for stage in the_plan.stages:
        seconds = _seconds(the_plan, stage.name)
        if seconds is not None:
            costs[stage.kind] += seconds
    return dict(costs)


def budget(the_plan: Plan) -> str:
    """How the arms' training budgets compare: fixed steps, or fixed epochs."""
    trains = [s for s in the_plan.stages if s.kind == "train"]
    if not trains:
        return "no training"
    resolved = trains[0].resolved()
    if resolved.get("max_steps", -1) and resolved["max_steps"] > 0:
        return (f"every training runs {resolved['max_steps']} optimizer steps, so arms with fewer examples see "
                "them for more epochs")  # fmt: skip
    return f"every training runs {resolved['num_train_epochs']:g} epochs over its own examples (steps vary)"


def write_report(the_plan: Plan, results: dict, environment: dict) -> ReportResult:
    out = the_plan.out
    accuracy, traces = accuracy_rows(the_plan, results), trace_rows(the_plan, results)
    analysis: AnalyzeResult = results["analyze"]
    config = dataclasses.asdict(the_plan.config)
    summary = dict(
        name=the_plan.config.name or the_plan.out.name,
        accuracy=accuracy,
        traces=traces,
        low_probability=analysis.matrix,
        training_low_probability=analysis.training_matrix,
        threshold=analysis.threshold,
        budget=budget(the_plan),
        overlap=results.get("overlap", []),
        costs=stage_costs(the_plan),
        config=config,
        versions=environment,
    )
    plots = [accuracy_plot(accuracy, out / "accuracy.png"), sweep_plot(accuracy, out / "sweep.png")]
    write_atomically(out / "experiment.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_atomically(out / "report.md", report_markdown(summary, [p for p in plots if p]))
    return ReportResult(report=str(out / "report.md"), rows=len(accuracy))
