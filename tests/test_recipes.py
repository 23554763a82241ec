"""Every shipped recipe parses, and says at its top the command that runs it."""

from pathlib import Path

import pytest
import yaml

from ownwords.config import parse
from ownwords.generate import PRESETS, GenerateConfig
from ownwords.train import TrainConfig

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_recipe_says_its_command_and_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "ownwords" in first and path.name in first
    if path.name.startswith("generate_"):
        config = parse(GenerateConfig, ["--config", str(path)], "test", PRESETS)
        assert config.teacher and config.student and config.questions
    elif path.name.startswith("train_"):
        config = parse(TrainConfig, ["--config", str(path), "--use-cpu"], "test")
        assert config.model and config.dataset and config.learning_rate == 1e-5
    else:
        data = yaml.safe_load(path.read_text())
        assert data["distributed_type"] in ("FSDP", "DEEPSPEED") and data["num_processes"] >= 1


def test_every_stage_has_a_recipe():
    names = {p.name.split("_")[0] for p in RECIPES}
    assert {"generate", "train", "accelerate"} <= names
