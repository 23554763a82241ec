"""The plan as pure functions: arms expand to trace sets and models, with no file read."""

import subprocess
import sys

import pytest

from ownwords.errors import UserError
from ownwords.experiment.plan import Arm, ExperimentConfig, expand, expand_arms


def config(**changes) -> ExperimentConfig:
    base = dict(teacher="t", students=["org/a", "b"], questions="q.jsonl", out="/x", seeds=2, rounds=2,
                cross_train=True, arms=[dict(kind="teacher"), dict(name="r", kind="rsd", threshold=[0.01, 0.1]),
                                        dict(kind="self")])  # fmt: skip
    return ExperimentConfig(**(base | changes))


def test_expand_arms_names_sweeps_and_keeps_options():
    arms = expand_arms([dict(kind="teacher"), dict(name="r", kind="rsd", threshold=[0.01, 0.1], trials=3)])
    assert arms == [
        Arm("teacher", "teacher", {}),
        Arm("r@threshold=0.01", "rsd", {"threshold": 0.01, "trials": 3}, ("threshold", 0.01)),
        Arm("r@threshold=0.1", "rsd", {"threshold": 0.1, "trials": 3}, ("threshold", 0.1)),
    ]
    with pytest.raises(UserError, match="sweeps one option"):
        expand_arms([dict(kind="rsd", threshold=[0.1], trials=[1, 2])])


def test_expand_gives_every_trace_set_and_model_with_who_writes_and_who_starts():
    sets, models = expand(config())
    labels = [s.label for s in sets]
    assert labels == ["teacher", "r@threshold=0.01~a", "r@threshold=0.01~a.r2", "r@threshold=0.01~b",
                      "r@threshold=0.01~b.r2", "r@threshold=0.1~a", "r@threshold=0.1~a.r2", "r@threshold=0.1~b",
                      "r@threshold=0.1~b.r2", "self~a", "self~a.r2", "self~b", "self~b.r2"]  # fmt: skip
    by_label = {s.label: s for s in sets}
    assert by_label["teacher"].student == "a" and by_label["teacher"].round == 1  # once, not per student
    assert by_label["r@threshold=0.01~a"].acceptor == "a"
    assert by_label["r@threshold=0.01~a.r2"].acceptor == "r@threshold=0.01~a-seed0"  # round 1's seed 0
    round2 = models["r@threshold=0.01~a.r2-seed1"]
    assert round2.start == "r@threshold=0.01~a-seed1" and round2.round == 2  # each seed from its own
    crossed = models["r@threshold=0.01~a-into-b-seed0"]
    assert crossed.cross and crossed.start == "b" and crossed.student == "b"
    assert "self~a-into-b-seed0" not in models  # only RSD traces are cross-trained
    assert {m.student for m in models.values() if m.trace_set == "teacher"} == {"a", "b"}
    assert [k for k, m in models.items() if m.trace_set is None] == ["a", "b"]
    assert all(m.path == f"/x/models/{k}" for k, m in models.items() if m.trace_set)


def test_expand_refuses_students_with_one_folder_name():
    with pytest.raises(UserError, match="same folder names"):
        expand(config(students=["x/m", "y/m"]))


@pytest.mark.parametrize("stage", ["generate", "select", "export", "eval", "analyze", "probe", "experiment", "demo", "tiny", "prune"])
def test_a_stage_help_imports_no_model_code(stage):
    """`ownwords <stage> --help` parses with the torch-free config (train's is TRL's SFTConfig: torch)."""
    probe = (
        "import sys; from ownwords.cli import main\n"
        f"try:\n    main([{stage!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers.modeling_utils', 'trl') if m in sys.modules]\n"
        "sys.stderr.write(f'\\nIMPORTED: {heavy}\\n')"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "usage:" in done.stdout
    (imported,) = [line for line in done.stderr.splitlines() if line.startswith("IMPORTED: ")]
    assert imported == "IMPORTED: []", imported


def test_shipped_recipes_are_found_by_name(tmp_path, monkeypatch):
    from ownwords.config import find_recipe, read_mapping, recipes

    monkeypatch.chdir(tmp_path)  # not a clone: only the installed package
    assert {"demo", "experiment_paper", "generate_paper"} <= set(recipes())
    assert find_recipe("experiment_paper").name == "experiment_paper.yaml"
    assert read_mapping("generate_tiny")["teacher"] == "tiny-models/teacher"
    with pytest.raises(UserError, match="no shipped recipe of that name"):
        find_recipe("experiment_papr")
