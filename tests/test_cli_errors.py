"""Bad input: a clear error naming the input, exit code 2, and an intact store."""

import json

import pytest
from helpers import argv, rows

from ownwords.cli import main


@pytest.fixture
def filled_store(tiny_pair, questions_file, tmp_path):
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "1")]) == 0
    return store


def run_fails(args, capsys, *needles):
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_column(tiny_pair, questions_file, filled_store, capsys):
    before = rows(filled_store)
    args = argv(tiny_pair, questions_file, filled_store, "--question-field", "prompt_text", "--run", "other")
    run_fails(args, capsys, str(questions_file), "'prompt_text'", "columns are")
    assert rows(filled_store) == before
    # the failed run was not registered: fixing the flag just works
    assert (
        main(["generate", *argv(tiny_pair, questions_file, filled_store, "--run", "other", "--limit", "1")])
        == 0
    )


def test_empty_question(tiny_pair, tmp_path, filled_store, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"id": "a", "question": "ok?"}) + "\n" + json.dumps({"id": "b", "question": " "}) + "\n"
    )
    before = rows(filled_store)
    run_fails(argv(tiny_pair, bad, filled_store, "--run", "other"), capsys, str(bad), "'b'", "empty")
    assert rows(filled_store) == before


def test_unknown_model_path(tiny_pair, questions_file, tmp_path, capsys):
    args = argv(tiny_pair, questions_file, tmp_path / "s.sqlite")
    args[1] = str(tmp_path / "no-such-model")
    run_fails(args, capsys, "no-such-model")


@pytest.mark.parametrize("value", ["-0.5", "nan"])
def test_threshold_outside_its_range(tiny_pair, questions_file, tmp_path, capsys, value):
    run_fails(
        argv(tiny_pair, questions_file, tmp_path / "s.sqlite", "--threshold", value), capsys, "threshold"
    )


def test_incompatible_tokenizers(tiny_pair, greek_model, questions_file, tmp_path, capsys):
    args = argv(tiny_pair, questions_file, tmp_path / "s.sqlite")
    args[1] = str(greek_model)
    run_fails(args, capsys, "share", "below the required overlap")


def test_store_from_another_config(tiny_pair, questions_file, filled_store, capsys):
    before = rows(filled_store)
    run_fails(
        argv(tiny_pair, questions_file, filled_store, "--limit", "1", "--trials", "2"),
        capsys,
        str(filled_store),
        "trials: 5 -> 2",
    )
    assert rows(filled_store) == before


def test_unwritable_store_path(tiny_pair, questions_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run_fails(
        argv(tiny_pair, questions_file, blocker / "s.sqlite"),
        capsys,
        str(blocker / "s.sqlite"),
        "cannot open",
    )


def test_unknown_config_key(tiny_pair, questions_file, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tresholds: 0.1\n")
    run_fails(
        ["--config", str(cfg), *argv(tiny_pair, questions_file, tmp_path / "s.sqlite")], capsys, "tresholds"
    )


def test_unknown_command(capsys):
    assert main(["generat"]) == 2
    assert "unknown command 'generat'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args,expected",
    [
        (["generate", "--teacher", "t", "--student", "s", "--tempreature", "0.5"], "did you mean --temperature?"),
        (["generate", "--studnet", "s"], "unknown option --studnet; did you mean --student?"),
        (["select", "--store", "s.sqlite", "--polcy", "all"], "did you mean --policy?"),
        (["export", "--store", "s", "--ot", "o.jsonl"], "did you mean --out?"),
        (["train", "--lr", "1e-5"], "did you mean --learning-rate?"),
        (["eval", "--modls", "m"], "did you mean --models?"),
        (["analyze", "--students", "s", "--datsets", "d"], "did you mean --datasets?"),
        (["demo", "--quik"], "did you mean --quick?"),
        (["experiment", "e.yaml", "--ot", "o"], "did you mean --out?"),
        (["tiny", "d", "--sed", "1"], "did you mean --seed?"),
        (["generate", "--teacher", "t", "--top-p"], "expected one argument"),
    ],
    ids=lambda x: x[0] if isinstance(x, list) else "",
)
def test_a_mistyped_flag_is_one_line_naming_the_closest_valid_one(args, expected, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err and "usage:" not in captured.err
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"ownwords {args[0]}: error: ") and expected in line, line
