"""Every shipped recipe says at its top the command that runs it, and loads as its stage's config."""

from pathlib import Path

import pytest
import yaml

from ownwords.config import parse
from ownwords.experiment.plan import load_experiment, plan
from ownwords.stages.analyze import AnalyzeConfig
from ownwords.stages.evaluate import EvalConfig
from ownwords.stages.export import ExportConfig
from ownwords.stages.generate import PRESETS, GenerateConfig
from ownwords.stages.probe_config import ProbeConfig
from ownwords.stages.select import SelectConfig
from ownwords.stages.train import TrainConfig

RECIPES = sorted((Path(__file__).parents[1] / "src" / "ownwords" / "recipes").glob("*.yaml"))
STAGES = {
    "generate": (GenerateConfig, []),
    "select": (SelectConfig, []),
    "export": (ExportConfig, []),
    "train": (TrainConfig, ["--use-cpu"]),
    "eval": (EvalConfig, []),
    "analyze": (AnalyzeConfig, []),
    "probe": (ProbeConfig, []),
}


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_says_its_command_and_loads(path, request):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "ownwords" in first and path.name in first
    stage = path.name.split("_")[0]
    data = yaml.safe_load(path.read_text())
    if stage in ("experiment", "demo.yaml"):
        # the demo's onpolicy arm reads its models' tokenizers at plan time: the demo's own (cached) models
        models = request.getfixturevalue("demo_models") if path.name == "demo.yaml" else None
        return check_experiment(path, models)
    if stage == "accelerate":
        assert data["distributed_type"] in ("FSDP", "DEEPSPEED") and data["num_processes"] >= 1
        return
    cls, extra = STAGES[stage]
    config = parse(cls, ["--config", str(path), *extra], "test", PRESETS if issubclass(cls, GenerateConfig) else None)
    for key, value in data.items():  # every key of the file reached the config (lists may be split)
        if key != "preset":
            got = getattr(config, key)
            assert got == value or (
                isinstance(got, list) and [str(g) for g in got] == [str(v) for v in value]
            ), key


def check_experiment(path, models=None):
    """An experiment recipe plans (every stage's config built and checked), GPU settings and all."""
    config = load_experiment(path)
    if models is not None:
        config.teacher, config.students = str(models[0]), [str(models[1])]
    if "bf16" in config.sections.get("train", {}):  # bf16 training needs a GPU to construct here
        config.sections["train"] = config.sections["train"] | {"bf16": False, "use_cpu": True}
    the_plan = plan(config)
    kinds = {trace_set.arm.kind for trace_set in the_plan.trace_sets.values()}
    assert {"rsd", "self"} <= kinds or path.name == "demo.yaml"
    assert any(s.kind == "report" for s in the_plan.stages)


def test_every_stage_has_a_recipe():
    names = {p.name.split("_")[0] for p in RECIPES}
    assert set(STAGES) | {"accelerate", "experiment", "demo.yaml"} <= names
