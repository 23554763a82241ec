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
from .plan import ModelEntry, Plan, TraceSet
from .stats import Outcomes, accuracy_interval, paired_bootstrap, seed_of


@dataclass(eq=False)
class ReportResult(Result):
    report: str  # the path of report.md
    rows: int  # accuracy rows


def accuracy_rows(the_plan: Plan, results: dict, outcomes: dict | None = None) -> list[dict]:
    """One row per (trace set, student it was trained into) and benchmark; the base students first; a
    sweep chosen on dev is one row, its chosen arm's. `outcomes`, when given, receives each row's
    per-question results by (arm, student, benchmark)."""
    base = {e.student: e.key for e in the_plan.models.values() if e.arm is None}
    rows = []
    for label, student, entries, evals, chosen in _groups(the_plan, results):
        trace_set = the_plan.trace_sets.get(entries[0].trace_set)
        for bench in evals[0].benchmarks:
            per_seed = [e.pass1(bench) for e in evals]
            mean = statistics.mean(p for p, _ in per_seed)
            questions, samples = evals[0].size(bench)
            outcome = _outcome(evals, bench)
            if outcomes is not None and outcome is not None:
                outcomes[(label, student, bench)] = outcome
            rows.append(
                dict(
                    arm=label,
                    kind=trace_set.arm.kind if trace_set else "onpolicy" if label != "base" else "base",
                    policy=_policy(the_plan, trace_set),
                    swept=list(trace_set.arm.swept) if trace_set and trace_set.arm.swept and not chosen else None,
                    chosen=chosen,
                    rule=trace_set.arm.options.get("rule", "threshold") if trace_set else None,
                    threshold=_threshold(the_plan, trace_set),
                    round=trace_set.round if trace_set else 0,
                    student=student,
                    cross=any(e.cross for e in entries),
                    benchmark=bench,
                    accuracy=mean,
                    seed_sd=statistics.stdev(p for p, _ in per_seed) if len(per_seed) > 1 else 0.0,
                    eval_se=statistics.mean(se for _, se in per_seed),
                    interval=None if outcome is None else accuracy_interval(outcome, seed_of(label, student, bench)),
                    seeds=[p for p, _ in per_seed],
                    vs_base=mean - results[f"eval/{base[student]}"].pass1(bench)[0],
                    eval_questions=questions,
                    eval_samples=samples,
                    training=_training(the_plan, results, entries),
                )
            )
    _vs_round_before(rows)
    return rows


def _groups(the_plan: Plan, results: dict):
    """(row label, student, model entries, their test evaluations, the dev choice or None) per row."""
    on_dev = {key: c for c in the_plan.choices.values() for _, seeds in c.arms.values() for key in seeds.values()}
    groups: dict[tuple, list[ModelEntry]] = defaultdict(list)
    for entry in the_plan.models.values():
        if entry.key not in on_dev:  # an onpolicy arm has no trace set
            groups[(entry.trace_set or entry.arm or "base", entry.student)].append(entry)
    for (label, student), entries in groups.items():
        yield label, student, entries, [results[f"eval/{e.key}"] for e in entries], None
    for name, choice in the_plan.choices.items():
        chosen = results[f"choose/{name}"]
        seeds = choice.arms[chosen.arm][1]
        entries = [the_plan.models[k] for k in seeds.values()]
        evals = [results[f"eval/{name}-chosen-seed{seed}"] for seed in seeds]
        yield name, entries[0].student, entries, evals, chosen.to_json()


def _outcome(evals: list[ModelEval], bench: str) -> Outcomes | None:
    """Correct samples per seed and question (None for an evaluation made before they were recorded)."""
    try:
        per_seed = [e.correct(bench) for e in evals]
    except KeyError:
        return None
    questions = sorted(per_seed[0][0])
    return Outcomes.of([c for c, _ in per_seed], per_seed[0][1], questions)


def comparisons(rows: list[dict], outcomes: dict) -> list[dict]:
    """Per benchmark and student: every arm against the base student, and every RSD arm against every
    control (the arms of other kinds), each with its 95% paired bootstrap interval."""
    out = []
    for r in rows:
        if r["kind"] == "base" or r["cross"]:
            continue
        others = [("base", "base")] + (
            [(c["arm"], c["kind"]) for c in rows if c["kind"] not in ("base", "rsd") and not c["cross"]
             and (c["student"], c["benchmark"]) == (r["student"], r["benchmark"])]
            if r["kind"] == "rsd" else []
        )  # fmt: skip
        for other, kind in others:
            a, b = outcomes.get((r["arm"], r["student"], r["benchmark"])), outcomes.get((other, r["student"], r["benchmark"]))
            if a is None or b is None or a.correct.shape[1] != b.correct.shape[1]:
                continue
            d = paired_bootstrap(a, b, seed_of(r["arm"], other, r["student"], r["benchmark"]))
            out.append(dict(arm=r["arm"], against=other, against_kind=kind, student=r["student"], benchmark=r["benchmark"],
                            difference=d.difference, low=d.low, high=d.high, excludes_zero=d.excludes_zero,
                            resamples=d.resamples))  # fmt: skip
    return out


def _threshold(the_plan: Plan, trace_set: TraceSet | None) -> float | None:
    return None if trace_set is None else the_plan.stage(f"generate/{trace_set.label}").resolved()["threshold"]


def _policy(the_plan: Plan, trace_set: TraceSet | None) -> str | None:
    """How the trace set's training examples were chosen (select's policy)."""
    return None if trace_set is None else the_plan.stage(f"select/{trace_set.label}").resolved()["policy"]


def _training(the_plan: Plan, results: dict, entries: list[ModelEntry]) -> dict | None:
    """Examples, steps, epochs and final loss of a group's trainings (means over seeds)."""
    trained: list[TrainResult] = [results[e.maker[0]] for e in entries if e.maker]
    if not trained:
        return None
    resolved = the_plan.stage(entries[0].maker[0]).resolved()
    examples = trained[0].examples
    steps = statistics.mean(t.steps for t in trained)
    losses = [t.final_loss for t in trained if t.final_loss is not None]
    # by epochs, the data is seen exactly that often (an epoch's last batch may be short); by steps,
    # as often as the steps' examples cover it
    by_steps = resolved.get("max_steps", -1) > 0
    epochs = steps * resolved["effective_batch_size"] / max(examples, 1) if by_steps else resolved["num_train_epochs"]
    masked = [t.masked_tokens / t.supervised_tokens for t in trained if getattr(t, "supervised_tokens", 0)]
    return dict(examples=examples, steps=steps, epochs=epochs, final_loss=statistics.mean(losses) if losses else None,
                masked=statistics.mean(masked) if masked else None)  # fmt: skip


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
    outcomes: dict = {}
    accuracy, traces = accuracy_rows(the_plan, results, outcomes), trace_rows(the_plan, results)
    analysis: AnalyzeResult = results["analyze"]
    config = dataclasses.asdict(the_plan.config)
    summary = dict(
        name=the_plan.config.name or the_plan.out.name,
        accuracy=accuracy,
        comparisons=comparisons(accuracy, outcomes),
        chosen_on_dev=[dict(name=name, **results[f"choose/{name}"].to_json()) for name in the_plan.choices],
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
