"""Every shipped recipe parses, and says at its top the command that runs it."""

from pathlib import Path

import pytest

from ownwords.config import parse
from ownwords.generate import PRESETS, GenerateConfig

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("generate_*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_generate_recipe_loads(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "ownwords" in first and path.name in first
    config = parse(GenerateConfig, ["--config", str(path)], "test", PRESETS)
    assert config.teacher and config.student and config.questions


def test_there_are_recipes():
    assert RECIPES
