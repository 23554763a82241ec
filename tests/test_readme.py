"""The README's commands mean what they say."""

import shlex
from pathlib import Path

import pytest

from ownwords.config import parse
from ownwords.stages.evaluate import EvalConfig
from ownwords.stages.generate import PRESETS, GenerateConfig

README = Path(__file__).parents[1] / "README.md"


def readme_commands(option: str) -> list[list[str]]:
    """Every `ownwords ...` command in the README that uses `option`, split as a POSIX shell would
    (inside double quotes a backslash-n stays two characters), line continuations joined."""
    text = README.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("ownwords ") and option in line:
            commands.append(shlex.split(line.split(" #")[0], posix=True)[1:])
    return commands


def test_the_readme_s_generation_prefix_is_a_newline_as_written():
    """`--generation-prefix "<think>\\n"` in a shell passes a backslash and an n; the configs read
    the two characters as the newline the README means (a literal backslash-n prefix scored a real
    model 7.5% instead of 22.5%)."""
    commands = readme_commands("--generation-prefix")
    assert commands, "the README shows --generation-prefix"
    for args in commands:
        command, rest = args[0], args[1:]
        assert "<think>\\n" in rest, "the README's spelling (backslash, n) is what is tested"
        cls = {"eval": EvalConfig, "generate": GenerateConfig}[command]
        rest = rest + (
            ["--teacher", "t", "--student", "s", "--questions", "q.jsonl"] if command == "generate" else []
        )
        config = parse(cls, rest, "t", PRESETS if command == "generate" else None)
        assert config.generation_prefix == "<think>\n"


@pytest.mark.parametrize("cls", [GenerateConfig, EvalConfig])
def test_stop_strings_and_prefixes_read_backslash_escapes(cls):
    required = (
        dict(teacher="t", student="s", questions="q.jsonl") if cls is GenerateConfig else dict(models=["m"])
    )
    config = cls(**required, generation_prefix="<think>\\n\\t")
    assert config.generation_prefix == "<think>\n\t"
    if cls is GenerateConfig:
        assert GenerateConfig(**required, stop_strings=["\\n\\nUser:"]).stop_strings == ["\n\nUser:"]


def test_the_python_api_example_runs_as_written(tmp_path, monkeypatch):
    """The README's Python block, executed in a scratch folder holding the example questions."""
    import shutil

    block = README.read_text().split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "examples").mkdir()
    shutil.copy(README.parent / "examples" / "arithmetic.jsonl", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["summary"]["samples"] == 2 * 8 and scope["report"]["samples"] == 16
    assert (tmp_path / "runs" / "api.sqlite").is_file()
