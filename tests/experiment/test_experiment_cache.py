"""The experiment cache is never stale and never destructive; the report's numbers say what they measure."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from experiments import experiment_yaml, ran

from ownwords.data.store import TraceStore
from ownwords.experiment.plan import digest, load_experiment, plan
from ownwords.experiment.report import accuracy_plot, sweep_lines, trace_rows
from ownwords.experiment.runner import check_overlap, experiment


@pytest.fixture(scope="module")
def done(tmp_path_factory, demo_models, task):
    """A 2-arm experiment run once, with its own copy of the question file."""
    folder = tmp_path_factory.mktemp("cache")
    questions = folder / "questions.jsonl"
    questions.write_text((task / "train.jsonl").read_text())
    path = experiment_yaml(folder / "exp.yaml", demo_models, task, folder / "out", questions=str(questions))
    return path, folder, experiment(path)


def created(store: Path, run: str) -> dict:
    with TraceStore(store, create=False, write=False) as s:
        return {(r["question_id"], r["sample_index"]): r["created"] for r in s.samples(run)}


def copy_experiment(done, tmp_path, preserve_times: bool) -> tuple[str, Path]:
    """The experiment folder copied elsewhere (as `cp -r`: new modification times, unless preserved),
    and its YAML pointed at the copy."""
    path, folder, _ = done
    copy = tmp_path / "moved"
    shutil.copytree(folder / "out", copy, copy_function=shutil.copy2 if preserve_times else shutil.copy)
    data = json.loads(json.dumps(load_experiment(path).__dict__))
    yaml_path = tmp_path / "exp.yaml"
    yaml_path.write_text(Path(path).read_text().replace(str(folder / "out"), str(copy)))
    assert data["out"] == str(folder / "out")
    return str(yaml_path), copy


def test_another_path_to_the_same_folder_reruns_nothing_and_keeps_every_sample(done, monkeypatch):
    path, folder, _ = done
    before = created(folder / "out" / "traces.sqlite", "rsd")
    relative = folder / "relative.yaml"
    relative.write_text(Path(path).read_text().replace(str(folder / "out"), "out"))
    monkeypatch.chdir(folder)
    assert ran(experiment(str(relative))) == []
    assert created(folder / "out" / "traces.sqlite", "rsd") == before


def test_a_copied_experiment_folder_reruns_nothing(done, tmp_path):
    yaml_path, copy = copy_experiment(done, tmp_path, preserve_times=False)
    before = created(copy / "traces.sqlite", "rsd")
    assert ran(experiment(yaml_path)) == []
    assert created(copy / "traces.sqlite", "rsd") == before


def test_one_edited_question_keeps_the_other_questions_samples(done, tmp_path):
    yaml_path, copy = copy_experiment(done, tmp_path, preserve_times=True)
    questions = Path(load_experiment(yaml_path).questions)
    edited = tmp_path / "questions.jsonl"
    lines = questions.read_text().splitlines()
    first = json.loads(lines[0])
    lines[0] = json.dumps(first | {"question": first["question"].replace("What is", "Compute")})
    edited.write_text("\n".join(lines) + "\n")
    Path(yaml_path).write_text(Path(yaml_path).read_text().replace(str(questions), str(edited)))
    before = created(copy / "traces.sqlite", "rsd")
    again = ran(experiment(yaml_path))
    assert "generate/rsd" in again and "generate/teacher" in again
    after = created(copy / "traces.sqlite", "rsd")
    kept = {k: v for k, v in before.items() if k[0] != first["id"]}
    assert {k: after[k] for k in kept} == kept, "samples of unchanged questions were generated again"
    assert all(after[k] != v for k, v in before.items() if k[0] == first["id"]), "the edited question was not asked again"


def test_a_training_reruns_only_when_its_dataset_bytes_change(done, tmp_path):
    yaml_path, copy = copy_experiment(done, tmp_path, preserve_times=True)
    text = Path(yaml_path).read_text().replace("select: {}", "select:\n  unverifiable: keep")
    Path(yaml_path).write_text(text)
    again = ran(experiment(yaml_path))  # every gold answer is verifiable: the same traces are chosen
    assert "select/rsd" in again and "export/rsd" in again
    assert not [s for s in again if s.startswith(("train/", "eval/"))], again


def test_new_weights_at_the_same_path_change_every_digest_that_reads_them(demo_models, task, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(demo_models[1], student)
    path = experiment_yaml(tmp_path / "e.yaml", (demo_models[0], student), task, tmp_path / "out")

    def digests():
        the_plan, out = plan(load_experiment(path)), {}
        for stage in the_plan.stages:
            out[stage.name] = digest(stage, out, tmp_path / "out")
        return out

    before = digests()
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(student)  # new weights, same path
    after = digests()
    for name in ("generate/rsd", "train/rsd-seed0", "eval/student", "eval/rsd-seed0", "analyze", "report"):
        assert after[name] != before[name], f"{name} did not notice the new weights"
    assert after["generate/teacher"] != before["generate/teacher"]  # the student scores the teacher's tokens


def test_the_digest_is_of_the_config_that_runs_and_of_the_version(demo_models, task, tmp_path, monkeypatch):
    import ownwords
    from ownwords.stages.generate import PRESETS

    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           generate=dict(preset="paper", max_new_tokens=96, max_length=512))  # fmt: skip

    def rsd_digest():
        return digest(plan(load_experiment(path)).stage("generate/rsd"), {}, tmp_path / "out")

    before = rsd_digest()
    monkeypatch.setitem(PRESETS, "paper", PRESETS["paper"] | dict(trials=3))  # the preset changed, the YAML not
    assert rsd_digest() != before
    monkeypatch.setitem(PRESETS, "paper", PRESETS["paper"] | dict(trials=5))
    assert rsd_digest() == before
    monkeypatch.setattr(ownwords, "__version__", "99.0")
    assert rsd_digest() != before


def test_the_teacher_arm_is_generated_once_for_several_students(demo_models, task, tmp_path):
    teacher, student = demo_models
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           students=[str(student), str(teacher)])  # fmt: skip
    the_plan = plan(load_experiment(path))
    generates = [s.name for s in the_plan.stages if s.kind == "generate"]
    assert generates.count("generate/teacher") == 1 and len(generates) == 3  # teacher + rsd per student
    trained = {m.student for m in the_plan.models.values() if m.trace_set == "teacher"}
    assert trained == {Path(student).name, Path(teacher).name}


def test_round_two_traces_are_measured_under_the_model_that_accepted_them(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", rounds=2,
                           arms=[dict(name="rsd", kind="rsd")])  # fmt: skip
    the_plan = plan(load_experiment(path))
    acceptor = the_plan.models[the_plan.trace_sets["rsd.r2"].acceptor]
    assert acceptor.key == "rsd-seed0"
    assert acceptor.path in the_plan.stage("analyze").config.students
    base = next(m.path for m in the_plan.models.values() if m.trace_set is None)
    from ownwords.stages.analyze_config import AnalyzeResult
    from ownwords.stages.generate_config import GenerateResult
    from ownwords.stages.select_config import SelectResult

    summary = {"rsd": {base: dict(under_threshold=0.03, training_under_threshold=0.02)},
               "rsd.r2": {base: dict(under_threshold=0.033, training_under_threshold=0.03),
                          acceptor.path: dict(under_threshold=0.0135, training_under_threshold=0.01)}}  # fmt: skip
    results = {"analyze": AnalyzeResult(0.01, [], {}, {}, {}, summary)}
    for label in ("rsd", "rsd.r2"):
        results[f"generate/{label}"] = GenerateResult(label, "s", 2, 1, 20, 0.1, {})
        results[f"select/{label}"] = SelectResult("s", label, "shortest", None, 1, 1, 2, 1, 1, 10, 0.1, {}, 0, [])
    rows = {r["trace_set"]: r for r in trace_rows(the_plan, results)}
    assert rows["rsd.r2"]["low_probability"] == 0.0135 and rows["rsd.r2"]["acceptor"] == "rsd-seed0"
    assert rows["rsd"]["low_probability"] == 0.03


def test_the_report_says_what_its_numbers_are_over(done):
    path, folder, summary = done
    for t in summary["traces"]:
        assert t["training_examples"] == t["covered"] and t["training_tokens"] <= t["tokens"]
        assert t["training_low_probability"] is not None and t["acceptor"] == Path(load_experiment(path).students[0]).name
    trained = [r for r in summary["accuracy"] if r["kind"] != "base"]
    for r in trained:
        t = r["training"]
        assert t["examples"] > 0 and t["epochs"] > 0 and t["final_loss"] is not None
    assert all(r["eval_questions"] == 12 and r["eval_samples"] == 1 for r in summary["accuracy"])
    report = (folder / "out" / "report.md").read_text()
    assert report.startswith("# Experiment: exp\n") and "over the training set" in report
    assert "training examples | epochs | final loss" in report and "12 questions × 1 sample(s)" in report
    assert set(summary["versions"]) >= {"ownwords", "torch", "transformers", "trl"}
    assert summary["config"]["arms"] and summary["budget"].startswith("every training runs 4 optimizer steps")


def test_the_sweep_curve_leaves_cross_trained_rows_out():
    def row(arm, student, value, cross=False):
        return dict(arm=arm, kind="rsd", swept=["threshold", value], rule="threshold", threshold=value, round=1,
                    student=student, cross=cross, benchmark="b", accuracy=0.5, seed_sd=0.0)  # fmt: skip

    rows = [row("s@0.1", "a", 0.1), row("s@0.1", "b", 0.1, cross=True), row("s@0.3", "a", 0.3),
            row("s@0.1~b", "b", 0.1), row("s@0.3~b", "b", 0.3), row("s@0.3", "a", 0.3, cross=True)]  # fmt: skip
    option, lines = sweep_lines(rows)
    assert option == "threshold"
    assert {key: [p[0] for p in points] for key, points in lines.items()} == {("b", "a"): [0.1, 0.3], ("b", "b"): [0.1, 0.3]}


def test_the_accuracy_plot_stays_readable_at_any_size(tmp_path):
    from PIL import Image

    rows = [dict(arm=f"arm{i}", kind="rsd", student="s", benchmark=b, accuracy=0.3, seed_sd=0.02, eval_se=0.03,
                 seeds=[0.28, 0.3, 0.32]) for i in range(36) for b in ("aime24", "math500", "gsm8k", "gpqa")]  # fmt: skip
    width, height = Image.open(accuracy_plot(rows, tmp_path / "a.png")).size
    assert width <= 2600 and height >= 800, (width, height)  # wrapped into rows of panels, not a 3672 x 480 strip


def test_training_questions_in_the_evaluation_set_are_a_warning(demo_models, task, tmp_path, caplog):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           eval=dict(data=[str(task / "train.jsonl")]))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        found = check_overlap(plan(load_experiment(path)))
    assert found and found[0]["benchmark"] == "arithmetic" and found[0]["questions"] == 12
    assert "also arithmetic evaluation questions" in caplog.text
    held_out = experiment_yaml(tmp_path / "f.yaml", demo_models, task, tmp_path / "out")
    assert check_overlap(plan(load_experiment(held_out))) == []


def test_the_demo_splits_hold_the_training_questions_out(tmp_path):
    from ownwords.demo import write_split

    write_split(tmp_path / "train.jsonl", 400, seed=1)
    write_split(tmp_path / "test.jsonl", 200, seed=2, exclude=tmp_path / "train.jsonl")

    def asked(name):
        return {json.loads(line)["question"] for line in (tmp_path / name).read_text().splitlines()}

    assert not asked("train.jsonl") & asked("test.jsonl")
    assert len((tmp_path / "test.jsonl").read_text().splitlines()) == 200


def test_a_damaged_stamp_or_a_deleted_report_reruns_that_stage(demo_models, task, tmp_path, caplog):
    import logging

    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out",
                           arms=[dict(name="rsd", kind="rsd")])  # fmt: skip
    experiment(path)
    stamp = tmp_path / "out" / "stages" / "select" / "rsd.json"
    stamp.write_text(stamp.read_text()[:40])  # cut off mid-write
    (tmp_path / "out" / "experiment.json").unlink()
    with caplog.at_level(logging.WARNING):
        again = ran(experiment(path))
    assert "damaged" in caplog.text and "re-running that stage" in caplog.text
    assert "select/rsd" in again and "report" in again and "generate/rsd" not in again
    assert json.loads(stamp.read_text())["digest"]


def test_a_stamp_counts_only_while_what_it_wrote_exists(done, tmp_path):
    yaml_path, copy = copy_experiment(done, tmp_path, preserve_times=True)
    shutil.rmtree(copy / "models" / "rsd-seed0")
    (copy / "report.md").unlink()
    again = ran(experiment(yaml_path))
    assert "train/rsd-seed0" in again and "report" in again
    assert "eval/rsd-seed0" not in again  # the same training, the same weights: its evaluation stands
    assert (copy / "models" / "rsd-seed0" / "model.safetensors").is_file() and (copy / "report.md").is_file()
    (copy / "traces.sqlite").unlink()
    again = ran(experiment(yaml_path))
    assert {"generate/rsd", "select/rsd", "generate/teacher", "select/teacher"} <= set(again)
