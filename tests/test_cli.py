"""The command's face: help text, version, output conventions."""

import re

import pytest

from ownwords.cli import main


def help_text(command, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["generate", "select", "eval", "analyze", "train", "export", "probe"])
def test_help_says_each_thing_once(command, capsys):
    text = help_text(command, capsys)
    assert "(default: None)" not in text  # required options say so in their help instead
    switches = re.findall(r"^  --no_\w+, --no-[\w-]+\s+(\S.*)$", text.split("options:", 1)[1], re.M)
    assert all(help.startswith("Turn off --") for help in switches), switches


def test_train_help_leads_with_what_matters(capsys):
    text = help_text("train", capsys).split("options:", 1)[1]
    assert text.index("--model MODEL") < text.index("--learning_rate") < text.index("--max_grad_norm")
    assert "trl.SFTConfig" in text


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ownwords ")
