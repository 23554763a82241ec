"""Run an experiment's stages, each once: a stage whose spec and inputs are unchanged is skipped.

Each finished stage leaves a stamp, OUT/stages/<stage>.json: its digest (spec + the digests of the
stages it consumes), its config, its result and its wall time. A stage without a stamp (never run,
or killed) or with another digest (edited, or an input changed) runs again; generation and
evaluation resume inside their stores, a training restarts from its base model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from ..config import to_dict
from ..data.store import StoreError, TraceStore, hold_lock
from ..errors import UserError
from ..stages.analyze import analyze
from ..stages.evaluate import evaluate
from ..stages.export import export
from ..stages.generate import OPERATIONAL, generate
from ..stages.select import select
from ..stages.train import train
from .plan import ExperimentConfig, Plan, Stage, digest, load_experiment, plan
from .report import write_report

logger = logging.getLogger(__name__)


def experiment(config: str | Path | ExperimentConfig) -> dict:
    """Run (or resume, or bring up to date) the experiment a YAML describes; returns its summary
    (also OUT/experiment.json, next to OUT/report.md)."""
    if not isinstance(config, ExperimentConfig):
        config = load_experiment(config)
    the_plan = plan(config)  # every stage's config is checked before anything runs
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".experiment.lock"  # one runner per experiment folder at a time
    busy = UserError(
        f"experiment folder {str(out)!r} is in use by another `ownwords experiment` (lock {str(lock)!r}); "
        "wait for it to finish"
    )
    with hold_lock(lock, busy) or contextlib.nullcontext():  # a file handle closes (unlocks) on exit
        digests, results, log = {}, {}, []
        for stage in the_plan.stages:
            digests[stage.name] = digest(stage, digests)
            status, results[stage.name], seconds = _bring_up_to_date(
                stage, digests[stage.name], the_plan, results
            )
            log.append(dict(stage=stage.name, status=status, seconds=seconds))
            logger.info("experiment %s: %-8s %s (%.1f s)", out, status, stage.name, seconds)
    return json.loads((out / "experiment.json").read_text()) | {"this_run": log}


def _bring_up_to_date(stage: Stage, wanted: str, the_plan: Plan, results: dict) -> tuple[str, object, float]:
    stamp = Path(the_plan.config.out) / "stages" / f"{stage.name}.json"
    old = json.loads(stamp.read_text()) if stamp.is_file() else None
    if old is not None and old["digest"] == wanted:
        return "skipped", old["result"], old["seconds"]
    start = time.perf_counter()
    result = RUNNERS[stage.kind](stage, the_plan, results, changed=old is not None)
    seconds = time.perf_counter() - start
    record = dict(
        digest=wanted, kind=stage.kind, spec=stage.spec, after=stage.after, result=result, seconds=seconds
    )
    _write_atomically(stamp, json.dumps(record, indent=2, default=str) + "\n")
    return "ran", result, seconds


def _generate(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    config = stage.config
    if Path(config.store).is_file():
        with TraceStore(config.store) as store:  # a run made from another spec is stale: drop it
            if config.run in store.runs() and (changed or not _same_run(store, config)):
                store.lock_run(config.run)
                store.drop_run(config.run)
    summary = generate(config)
    return {k: v for k, v in summary.items() if not isinstance(v, dict | list)}


def _same_run(store: TraceStore, config) -> bool:
    """Does the stored run come from this config (a killed run to resume, not a stale one)?"""
    stored = store.runs()[config.run]
    try:  # the question file's content is in the stage digest; here only the settings are compared
        return store.check_run(
            config.run, to_dict(config) | {"questions_sha256": stored.get("questions_sha256")}, OPERATIONAL
        )
    except StoreError:
        return False


def _select(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    return select(stage.config)


def _export(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    dataset = export(stage.config)
    return dict(rows=len(dataset), path=stage.config.out)


def _train(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    return train(stage.config)  # a killed training starts again from its base model


def _eval(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    if changed:  # records made with other settings would be refused by the evaluation's store
        shutil.rmtree(stage.config.out, ignore_errors=True)
    return evaluate(stage.config)[stage.config.models[0]]


def _analyze(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    analysis = analyze(stage.config)
    return dict(matrix=analysis["matrix"], threshold=analysis["threshold"])


def _report(stage: Stage, the_plan: Plan, results: dict, changed: bool) -> dict:
    return write_report(the_plan, results)


RUNNERS = dict(
    generate=_generate,
    select=_select,
    export=_export,
    train=_train,
    eval=_eval,
    analyze=_analyze,
    report=_report,
)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
