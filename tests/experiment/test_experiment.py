"""`ownwords experiment`: arms through every stage, cached and resumable, one report."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from experiments import experiment_yaml, numbers, ran

from ownwords.errors import UserError
from ownwords.experiment.plan import load_experiment, plan
from ownwords.experiment.runner import experiment


@pytest.fixture(scope="module")
def finished(tmp_path_factory, demo_models, task):
    """A 2-arm experiment run once, end to end."""
    folder = tmp_path_factory.mktemp("experiment")
    path = experiment_yaml(folder / "exp.yaml", demo_models, task, folder / "out")
    return path, folder / "out", experiment(path)


def test_a_two_arm_experiment_runs_end_to_end(finished):
    _, out, summary = finished
    assert {r["arm"] for r in summary["accuracy"]} == {"base", "teacher", "rsd"}
    kinds = {t["trace_set"]: t["kind"] for t in summary["traces"]}
    assert kinds == {"teacher": "teacher", "rsd": "rsd"}
    assert all(t["correct"] > 0 for t in summary["traces"]), "nothing passed select: no training data"
    report = (out / "report.md").read_text()
    assert "| rsd | rsd | student" in report and "| base | base |" in report
    assert (out / "accuracy.png").is_file() and (out / "analysis" / "traces.html").is_file()
    assert (out / "models" / "rsd-seed0" / "model.safetensors").is_file()
    assert set(summary["low_probability"]) == {"teacher", "rsd"}


def test_a_rerun_does_nothing_and_an_eval_edit_reruns_only_eval_and_the_report(finished, tmp_path):
    path, out, first = finished
    again = experiment(path)
    assert ran(again) == []
    data = yaml.safe_load(Path(path).read_text())
    data["eval"]["max_new_tokens"] = 64  # only the evaluation changes
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    after = experiment(str(edited))
    assert ran(after) and all(s.startswith("eval/") or s == "report" for s in ran(after)), ran(after)
    assert "report" in ran(after) and "generate/rsd" not in ran(after)
    assert ran(experiment(str(edited))) == []
    assert set(ran(experiment(path))) == set(ran(after))  # back as it was (the other tests compare to it)


def test_an_edited_arm_regenerates_its_traces_and_leaves_the_other_arm(demo_models, task, tmp_path):
    from ownwords.data.store import TraceStore

    arms = [dict(name="teacher", kind="teacher"), dict(name="rsd", kind="rsd", threshold=0.01)]
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", arms=arms)
    experiment(path)
    arms[1]["threshold"] = 0.05
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", arms=arms)
    again = ran(experiment(path))
    assert "generate/rsd" in again and "train/rsd-seed0" in again and "eval/rsd-seed0" in again
    assert not [s for s in again if s.endswith("/teacher") or "teacher-seed0" in s], again
    with TraceStore(tmp_path / "out" / "traces.sqlite", create=False, write=False) as store:
        assert store.runs()["rsd"]["threshold"] == 0.05 and store.summary("rsd")["samples"] == 12


@pytest.mark.slow  # a SIGKILLed subprocess: CI's slow run
def test_a_killed_experiment_resumes_to_the_same_numbers(finished, demo_models, task, tmp_path):
    """SIGKILL in the middle (once the first arm is trained), then re-run: the report's numbers
    equal those of the uninterrupted run."""
    _, reference, _ = finished
    path = experiment_yaml(tmp_path / "exp.yaml", demo_models, task, tmp_path / "out")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "ownwords.cli", "experiment", path], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    trained = tmp_path / "out" / "stages" / "train" / "teacher-seed0.json"
    deadline = time.time() + 600
    while not trained.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the teacher arm is done; the RSD arm has just begun
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the experiment ended before it could be killed"
    assert not (tmp_path / "out" / "experiment.json").exists()
    summary = experiment(path)
    assert "generate/teacher" not in ran(summary), "finished stages must not run again"
    assert "report" in ran(summary) and "train/rsd-seed0" in ran(summary)
    assert numbers(tmp_path / "out") == numbers(reference)


def test_a_sweep_gives_one_arm_per_value(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name="rsd", kind="rsd", threshold=[0.003, 0.03])])  # fmt: skip
    the_plan = plan(load_experiment(path))
    assert list(the_plan.trace_sets) == ["rsd@threshold=0.003", "rsd@threshold=0.03"]
    thresholds = [s.config.threshold for s in the_plan.stages if s.kind == "generate"]
    assert thresholds == [0.003, 0.03]


def test_two_rounds_train_the_round_two_student_from_round_ones(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", rounds=2,
                           arms=[dict(name="rsd", kind="rsd")])  # fmt: skip
    the_plan = plan(load_experiment(path))
    round_one = str(tmp_path / "out" / "models" / "rsd-seed0")
    second = the_plan.stage("generate/rsd.r2")
    assert second.config.student == round_one and "train/rsd-seed0" in second.after
    train_two = the_plan.stage("train/rsd.r2-seed0")
    assert train_two.config.model == round_one and "train/rsd-seed0" in train_two.after
    assert train_two.config.dataset.endswith("rsd.r2.jsonl")
    summary = experiment(path)  # and it runs: round 2's traces come from the round-1 model
    from ownwords.data.store import TraceStore

    with TraceStore(tmp_path / "out" / "traces.sqlite", create=False, write=False) as store:
        assert store.runs()["rsd.r2"]["student"] == round_one and store.summary("rsd.r2")["samples"] == 12
    assert {r["arm"] for r in summary["accuracy"]} == {"base", "rsd", "rsd.r2"}
    assert (tmp_path / "out" / "models" / "rsd.r2-seed0" / "model.safetensors").is_file()


def test_several_students_give_the_cross_model_table(demo_models, task, tmp_path):
    teacher, student = demo_models
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           students=[str(student), str(teacher)], cross_train=True,
                           arms=[dict(name="rsd", kind="rsd")])  # fmt: skip
    the_plan = plan(load_experiment(path))
    tags = [Path(student).name, Path(teacher).name]
    assert list(the_plan.trace_sets) == [f"rsd~{t}" for t in tags]
    assert the_plan.stage("analyze").config.students == [str(student), str(teacher)]
    crossed = the_plan.stage(f"train/rsd~{tags[0]}-into-{tags[1]}-seed0")
    assert crossed.config.model == str(teacher) and crossed.config.dataset.endswith(f"rsd~{tags[0]}.jsonl")


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(colour="red"), "unknown key 'colour'"),
        (dict(arms=[dict(name="x", kind="distill")]), "kind 'distill' is unknown"),
        (dict(teacher=None), "'teacher' is required"),
        (dict(arms=[dict(kind="teacher", threshold=0.5)]), "fixes 'threshold'"),
        (dict(arms=[dict(kind="rsd", tempreature=0.5)]), "'tempreature' is not a generate option"),
        (dict(generate=dict(store="x.sqlite")), "'store' is set by the experiment"),
        (dict(train=dict(lerning_rate=1.0)), "unknown key 'lerning_rate'"),
        (dict(generate=dict(top_p=2.0)), "top_p"),
    ],
)
def test_bad_yaml_is_a_clear_error_before_any_model_loads(
    demo_models, task, tmp_path, monkeypatch, change, message
):
    import ownwords.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", **change)
    if change.get("teacher", 1) is None:
        data = yaml.safe_load(Path(path).read_text())
        del data["teacher"]
        Path(path).write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        experiment(path)
    assert not (tmp_path / "out").exists()


def test_a_stage_digest_follows_its_input_files_and_not_operational_options(demo_models, task, tmp_path):
    from ownwords.experiment.plan import digest

    questions = tmp_path / "questions.jsonl"
    questions.write_text((task / "train.jsonl").read_text())
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", questions=str(questions))
    stage = plan(load_experiment(path)).stage("generate/rsd")
    out = tmp_path / "out"
    before = digest(stage, {}, out)
    out.mkdir()
    (out / "traces.sqlite").write_text("written by the experiment itself")
    edited = plan(load_experiment(experiment_yaml(
        tmp_path / "e.yaml", demo_models, task, out, questions=str(questions),
        generate=dict(threads=1, progress=True)))).stage("generate/rsd")  # fmt: skip
    assert digest(edited, {}, out) == before, "outputs and operational options must not change the digest"
    questions.write_text(questions.read_text().replace("What is", "What's"))  # edited in place
    assert digest(stage, {}, out) != before
    hotter = plan(load_experiment(experiment_yaml(
        tmp_path / "e.yaml", demo_models, task, out, questions=str(questions), generate=dict(temperature=0.5)))).stage("generate/rsd")  # fmt: skip
    assert digest(hotter, {}, out) != digest(stage, {}, out)


def test_a_run_left_by_a_killed_experiment_with_other_settings_is_replaced(demo_models, task, tmp_path):
    """No stamp (killed mid-generation), then the arm was edited: the stale run is dropped, not refused."""
    from ownwords.stages.generate import generate

    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name="rsd", kind="rsd", threshold=0.01)])  # fmt: skip
    stale = plan(load_experiment(path)).stage("generate/rsd").config
    (tmp_path / "out").mkdir()
    generate(dataclasses.replace(stale, threshold=0.2, limit=2))
    assert "generate/rsd" in ran(experiment(path))


def test_a_second_runner_on_the_same_folder_is_refused(demo_models, task, tmp_path):
    from ownwords.data.store import hold_lock

    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out")
    (tmp_path / "out").mkdir()
    held = hold_lock(tmp_path / "out" / ".experiment.lock", RuntimeError("held"))  # the other runner
    try:
        with pytest.raises(UserError, match="in use by another"):
            experiment(path)
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".experiment.lock"]
    finally:
        held.close()
