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


@pytest.mark.slow
def test_the_offline_usage_block_runs_as_written(tmp_path):
    """Every command of the README's offline Usage block, run by bash exactly as written, in a
    scratch folder holding the repository's recipes and examples (the demo trains its models: minutes)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    text = README.read_text()
    script = text.split("<!-- offline-usage -->", 1)[1].split("<!-- /offline-usage -->", 1)[0]
    script = script.split("```bash\n", 1)[1].split("```", 1)[0]
    for folder in ("recipes", "examples"):
        shutil.copytree(README.parent / folder, tmp_path / folder)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert len((tmp_path / "data" / "demo-rsd.jsonl").read_text().splitlines()) > 0
    assert len(json.loads((tmp_path / "eval" / "demo" / "results.json").read_text())) == 2
    assert (tmp_path / "analysis" / "demo" / "report.md").is_file()
    assert (tmp_path / "models" / "demo-rsd" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "tiny.sqlite").is_file()
