"""`ownwords demo`: the whole loop on a laptop, in minutes.

A synthetic reasoning task (a + b - c, answer boxed) and two tiny models trained here on CPU: a
bigger teacher that reasons in a verbose, varied style (paraphrases, "wait, let me verify", filler)
and a much smaller student first trained on a terse style of its own -- a student that knows the
task's language but is weaker at it, and a teacher whose traces hold tokens the student finds
unlikely. Then `ownwords experiment` on the recipe `demo` (shipped in the package): teacher, RSD and
self (the student's own correct traces) trace sets -> select -> export -> SFT (x seeds) -> eval
against the base student -> analyze -> OUT/experiment/report.md. Whatever the result at this scale,
it is reported as measured.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from ..config import find_recipe
from ..errors import UserError
from ..experiment.plan import ExperimentConfig, load_experiment
from ..experiment.runner import experiment
from ..files import cache_dir
from ..models.loading import set_cpu_threads
from .config import DEMO_LAYOUT, KIND_FILE, SCALES, DemoConfig, Scale
from .models import tiny_pair
from .task import write_split

logger = logging.getLogger(__name__)


QUICK_ARMS = ("teacher", "rsd", "self")


def demo_experiment(config: DemoConfig, out: Path, scale: Scale) -> ExperimentConfig:
    """The recipe `demo`, pointed at OUT's models and data; --quick: one seed, fewer epochs."""
    experiment = load_experiment(find_recipe("demo"))
    experiment.out = str(out / "experiment")
    experiment.teacher, experiment.students = (
        str(out / "models" / "teacher"),
        [str(out / "models" / "student")],
    )
    experiment.questions = str(out / "data" / "arithmetic_train.jsonl")
    experiment.seeds = config.seeds
    if config.quick:  # the four rows: base, teacher, rsd, self (the controls take the full demo's time)
        experiment.arms = [a for a in experiment.arms if a["name"] in QUICK_ARMS]
    experiment.sections["eval"]["data"] = [str(out / "data" / "arithmetic_test.jsonl")]
    experiment.sections["train"]["num_train_epochs"] = scale.sft_epochs
    experiment.sections["generate"]["samples"] = scale.samples
    for section in ("generate", "eval"):
        experiment.sections[section]["threads"] = config.threads
    for section in ("train", "distill"):
        experiment.sections[section]["threads"] = config.threads
    return experiment


def _claim(out: Path, kind: str) -> None:
    """OUT holds one demo: a quick demo never replaces a full one's results, nor the other way round."""
    marker = out / KIND_FILE
    if marker.is_file():
        made = json.loads(marker.read_text()).get("kind")
        if made != kind:
            raise UserError(
                f"folder {str(out)!r} holds the results of the {made} demo; the {kind} demo would replace them: "
                f"give it another --out (the {kind} demo's default is "
                f"{'ownwords-demo-quick' if kind == 'quick' else 'ownwords-demo'})"
            )
    elif out.exists() and {p.name for p in out.iterdir()} - DEMO_LAYOUT:
        raise UserError(f"folder {str(out)!r} is not empty and no demo wrote it; give the demo another --out")
    (out / "data").mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"kind": kind}) + "\n")


def run_demo(config: DemoConfig) -> dict:
    """Train (or reuse) the tiny pair, write the task's splits, run the demo experiment; the report is
    OUT/experiment/report.md."""
    kind = "quick" if config.quick else "full"
    scale = SCALES[kind]
    out = Path(config.out)
    _claim(out, kind)
    cache = Path(config.cache_dir) if config.cache_dir else cache_dir() / "demo"
    set_cpu_threads(config.threads)
    start = time.perf_counter()
    cached = tiny_pair(cache, scale, config.fresh)
    models_seconds = time.perf_counter() - start
    # Published under OUT/models by their role: every stage can be tried on them.
    for source, role in zip(cached, ("teacher", "student"), strict=True):
        shutil.copytree(source, out / "models" / role, dirs_exist_ok=True)
    train = out / "data" / "arithmetic_train.jsonl"
    write_split(train, scale.train_questions, seed=1)
    write_split(out / "data" / "arithmetic_test.jsonl", scale.test_questions, seed=2, exclude=train)
    summary = experiment(demo_experiment(config, out, scale))
    logger.info("demo: tiny models %.1f s", models_seconds)
    return summary | {"models_seconds": models_seconds}
