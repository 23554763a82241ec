"""Run an experiment's stages, each once: a stage whose config and inputs are unchanged is skipped.

Each finished stage leaves a stamp, OUT/stages/<stage>.json: its digest (see `plan.digest`), its
config, its result and its wall time. A stage runs again when it has no stamp (never run, or killed),
a damaged one, another digest (edited, or an input changed), or when what it wrote is gone (a deleted
model folder or store). Generation and evaluation resume inside their stores and keep every sample
still asked the same way; a training restarts from its base model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
from pathlib import Path

from ..data.store import StoreError, TraceStore, hold_lock
from ..errors import UserError
from ..files import check_writable, write_atomically
from .plan import ExperimentConfig, Plan, Stage, digest, load_experiment, plan

logger = logging.getLogger(__name__)


def experiment(config: str | Path | ExperimentConfig) -> dict:
    """Run (or resume, or bring up to date) the experiment a YAML describes; returns its summary
    (also OUT/experiment.json, next to OUT/report.md)."""
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config)
    the_plan = plan(config)  # every stage's config is checked before anything runs
    out = the_plan.out
    _make_folder(out)
    lock = out / ".experiment.lock"  # one runner per experiment folder at a time
    busy = UserError(
        f"experiment folder {str(out)!r} is in use by another `ownwords experiment` (lock {str(lock)!r}); "
        "wait for it to finish"
    )
    with hold_lock(lock, busy) or contextlib.nullcontext():  # a file handle closes (unlocks) on exit
        overlaps = check_overlap(the_plan)
        digests, results, log = {}, {"overlap": overlaps}, []
        for stage in the_plan.stages:
            digests[stage.name] = digest(stage, digests, out)
            status, results[stage.name], seconds = _bring_up_to_date(stage, digests[stage.name], the_plan, results)
            log.append(dict(stage=stage.name, status=status, seconds=seconds))
            logger.info("experiment %s: %-8s %s (%.1f s)", out, status, stage.name, seconds)
    return json.loads((out / "experiment.json").read_text()) | {"this_run": log}


def _make_folder(out: Path) -> None:
    check_writable(out, "experiment folder")


def stamp_path(the_plan: Plan, stage: str) -> Path:
    return the_plan.out / "stages" / f"{stage}.json"


def read_stamp(path: Path) -> dict | None:
    """A stage's stamp, or None when there is none, or it is damaged (then the stage runs again)."""
    if not path.is_file():
        return None
    try:
        stamp = json.loads(path.read_text())
        if not isinstance(stamp, dict) or not {"digest", "result", "seconds"} <= set(stamp):
            raise ValueError("fields missing")
    except (ValueError, UnicodeDecodeError) as err:
        logger.warning("stamp %s is damaged (%s): re-running that stage", path, err)
        return None
    return stamp


def _bring_up_to_date(stage: Stage, wanted: str, the_plan: Plan, results: dict) -> tuple[str, object, float]:
    stamp = stamp_path(the_plan, stage.name)
    old = read_stamp(stamp)
    if old is not None and old["digest"] == wanted:
        if outputs_exist(stage, the_plan):
            return "skipped", result_type(stage.kind).from_json(old["result"]), old["seconds"]
        logger.warning("experiment: what %s wrote is gone; running it again", stage.name)
    start = time.perf_counter()
    result = RUNNERS[stage.kind](stage, the_plan, results)
    seconds = time.perf_counter() - start
    record = dict(digest=wanted, kind=stage.kind, spec=stage.spec, after=stage.after, result=result.to_json(),
                  seconds=seconds)  # fmt: skip
    write_atomically(stamp, json.dumps(record, indent=2, default=str) + "\n")
    return "ran", result, seconds


def outputs_exist(stage: Stage, the_plan: Plan) -> bool:
    """Is what the stage wrote still there? (A stamp is valid only while its outputs exist.)"""
    if stage.kind == "choose":  # all it wrote is its stamp
        return True
    if stage.kind == "report":
        return all((the_plan.out / name).is_file() for name in ("report.md", "experiment.json"))
    config = stage.config
    if stage.kind in ("generate", "select"):
        if not Path(config.store).is_file():
            return False
        with TraceStore(config.store, create=False, write=False) as store:
            if config.run not in store.runs():
                return False
            return stage.kind == "generate" or bool(store.selection(config.run))
    paths = {
        "split": lambda: [Path(config.train), Path(config.dev)],
        "export": lambda: [Path(config.out)],
        "train": lambda: [Path(config.output_dir) / "config.json"],
        "distill": lambda: [Path(config.output_dir) / "config.json"],
        "eval": lambda: [Path(config.out) / "results.json"],
        "analyze": lambda: [Path(config.out) / "analysis.json"],
    }[stage.kind]()
    return all(p.exists() for p in paths)


def _split(stage: Stage, the_plan: Plan, results: dict):
    from .dev import split_questions

    return split_questions(stage.config)


def _choose(stage: Stage, the_plan: Plan, results: dict):
    """Given the dev evaluations of the sweep's models and nothing else."""
    from .dev import ChoiceResult, best_on_dev

    config = stage.config
    accuracy = {arm: [results[s].pass1(config.benchmark)[0] for s in dev] for arm, dev in config.dev.items()}
    arm = best_on_dev(accuracy)
    logger.info("experiment: %s chooses %s (dev accuracy %s)", stage.name, arm, accuracy)
    return ChoiceResult(option=config.option, value=config.values[config.arms.index(arm)], arm=arm,
                        benchmark=config.benchmark, dev_accuracy={a: sum(v) / len(v) for a, v in accuracy.items()})


def _generate(stage: Stage, the_plan: Plan, results: dict) -> dict:
    from ..data.questions import load_questions, questions_fingerprint
    from ..stages.generate import generate, identity_exempt, run_identity

    config = stage.config
    if Path(config.store).is_file():
        with TraceStore(config.store) as store:
            stored = store.runs().get(config.run)
            if stored is not None:
                store.lock_run(config.run)
                questions = load_questions(
                    config.questions, config.question_field, config.answer_field, config.id_field, config.split
                )
                _reconcile(store, config, stored, run_identity(config, questions), identity_exempt(stored),
                           questions, questions_fingerprint(questions))  # fmt: skip
    return generate(config)


def _reconcile(store: TraceStore, config, stored: dict, identity: dict, exempt, questions, fingerprint) -> None:
    """A stored run made with the same settings is kept: only the samples of edited or removed
    questions go (they are asked again). One made with other settings is stale: it is dropped."""
    try:
        store.check_run(config.run, identity, ignore=(*exempt, "questions_sha256"))
    except StoreError as err:
        logger.info("experiment: run %r was made with other settings; generating it again (%s)", config.run, err)
        store.drop_run(config.run)
        return
    if stored.get("questions_sha256") != fingerprint:
        dropped = store.keep_questions(config.run, {q.id: (q.question, q.answer) for q in questions}, fingerprint)
        logger.info("experiment: run %r keeps its samples of unchanged questions; %d asked again", config.run, dropped)


def _select(stage: Stage, the_plan: Plan, results: dict) -> dict:
    from ..stages.select import select

    return select(stage.config)


def _export(stage: Stage, the_plan: Plan, results: dict):
    from ..stages.export import ExportResult, export

    return ExportResult(rows=len(export(stage.config)), path=stage.config.out)


def _train(stage: Stage, the_plan: Plan, results: dict) -> dict:
    from ..stages.train import train

    return train(stage.config)  # a killed training starts again from its base model


def _distill(stage: Stage, the_plan: Plan, results: dict):
    from ..stages.distill import distill

    return distill(stage.config)  # like a training: a killed one starts again from its base model


def _eval(stage: Stage, the_plan: Plan, results: dict):
    from ..stages.evaluate import evaluate
    from ..stages.evaluate_config import ModelEval

    return ModelEval.of(evaluate(stage.config)[stage.config.models[0]])  # records of other settings: other runs


def _analyze(stage: Stage, the_plan: Plan, results: dict):
    import dataclasses

    from ..stages.analyze import analyze

    return dataclasses.replace(analyze(stage.config), sets={})  # the report reads the summary; the rest is in OUT


def _report(stage: Stage, the_plan: Plan, results: dict) -> dict:
    from .report import write_report

    return write_report(the_plan, results, environment())


RUNNERS = dict(split=_split, choose=_choose, generate=_generate, select=_select, export=_export, train=_train,
               distill=_distill, eval=_eval, analyze=_analyze, report=_report)  # fmt: skip


def result_type(kind: str):
    """The result type of a stage kind (a stamp's result is its to_json())."""
    from ..stages.analyze_config import AnalyzeResult
    from ..stages.distill_config import DistillResult
    from ..stages.evaluate_config import ModelEval
    from ..stages.export_config import ExportResult
    from ..stages.generate_config import GenerateResult
    from ..stages.select_config import SelectResult
    from ..stages.train_config import TrainResult
    from .dev import ChoiceResult, SplitResult
    from .report import ReportResult

    return dict(split=SplitResult, choose=ChoiceResult, generate=GenerateResult, select=SelectResult, export=ExportResult, train=TrainResult,
                distill=DistillResult, eval=ModelEval, analyze=AnalyzeResult, report=ReportResult)[kind]  # fmt: skip


def environment() -> dict:
    """The versions an experiment ran with (experiment.json records them)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return dict(python=platform.python_version(), **{p: of(p) for p in ("ownwords", "torch", "transformers", "trl")})


def check_overlap(the_plan: Plan) -> list[dict]:
    """Training questions that are also evaluation questions (by their text), for every benchmark read
    from a local file; each overlap is a warning naming a few of them, and goes into the report."""
    from ..data.benchmarks import load_benchmark
    from ..data.questions import load_questions, overlapping

    evals = [s for s in the_plan.stages if s.kind == "eval"]
    if not evals:
        return []
    paths = evals[0].config.data_paths()
    if not paths:
        return []
    train = load_questions(the_plan.config.questions)
    found = []
    for bench, path in sorted(paths.items()):
        shared = overlapping(train, load_benchmark(bench, path, instruction=False))
        if shared:
            found.append(dict(benchmark=bench, questions=len(shared), examples=shared[:5]))
            logger.warning(
                "experiment: %d of the %d training questions are also %s evaluation questions (%s): the "
                "evaluation of those is not held out", len(shared), len(train), bench,
                ", ".join(f"{a} = {b}" for a, b in shared[:5]),
            )  # fmt: skip
    return found
