"""p_th chosen on a dev split: part of the training questions held out, a sweep's arms compared there,
only the chosen arm evaluated on the test benchmarks -- and the choice given no test result."""

import json

import pytest
from experiments import experiment_yaml

from ownwords.errors import UserError
from ownwords.experiment.dev import SplitConfig, best_on_dev, split_questions
from ownwords.experiment.plan import load_experiment, plan
from ownwords.experiment.runner import RUNNERS, experiment
from ownwords.stages.evaluate_config import ModelEval

SWEEP = [dict(name="teacher", kind="teacher"), dict(name="sweep", kind="rsd", threshold=[0.01, 0.5])]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_split_is_disjoint_complete_and_moves_only_an_edited_question(tmp_path):
    rows = [{"question": f"q{i}?", "answer": str(i)} for i in range(40)]
    source = tmp_path / "q.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = SplitConfig(str(source), 0.25, str(tmp_path / "train.jsonl"), str(tmp_path / "dev.jsonl"))
    assert split_questions(config).to_json() == dict(train=30, dev=10)
    train, dev = _rows(tmp_path / "train.jsonl"), _rows(tmp_path / "dev.jsonl")
    assert sorted(train + dev, key=lambda r: int(r["answer"])) == rows and not {r["question"] for r in train} & {
        r["question"] for r in dev
    }
    assert train == [r for r in rows if r in train]  # file order kept
    rows[0]["question"] = "edited?"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split_questions(config)
    moved = {r["question"] for r in dev} ^ {r["question"] for r in _rows(tmp_path / "dev.jsonl")}
    assert moved <= {"q0?", "edited?"}
    with pytest.raises(UserError, match="at least one question on each side"):
        split_questions(SplitConfig(str(source), 0.001, str(tmp_path / "a"), str(tmp_path / "b")))


def test_best_on_dev_is_the_highest_mean_and_a_tie_goes_to_the_first():
    assert best_on_dev({"a": [0.5, 0.5], "b": [0.875, 0.0], "c": [0.125, 0.125]}) == "a"  # a mean, not a best seed
    assert best_on_dev({"a": [0.2], "b": [0.5], "c": [0.5]}) == "b"


def _eval(bench, accuracy):
    return ModelEval("m", {bench: {"temperatures": {"0.0": {"pass@1": accuracy, "pass@1_se": 0.0}}}})


def test_the_choice_reads_the_dev_evaluations_and_no_test_result(demo_models, task, tmp_path):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", arms=SWEEP, dev_fraction=0.25)
    the_plan = plan(load_experiment(path))
    names = [s.name for s in the_plan.stages]
    members = ["sweep@threshold=0.01-seed0", "sweep@threshold=0.5-seed0"]
    # the sweep's models are evaluated on dev only; the chosen one's test evaluation comes after the choice
    assert all(f"dev/{m}" in names and f"eval/{m}" not in names for m in members)
    choose = the_plan.stage("choose/sweep")
    assert choose.after == [f"dev/{m}" for m in members]
    assert the_plan.stage("eval/sweep-chosen-seed0").after == ["choose/sweep"]
    dev_file = str(tmp_path / "out" / "data" / "questions-dev.jsonl")
    for m in members:
        assert the_plan.stage(f"dev/{m}").config.data == [f"arithmetic={dev_file}"]
    assert the_plan.stage("generate/sweep@threshold=0.01").config.questions.endswith("questions-train.jsonl")
    # the dev results choose 0.5; results under test-evaluation names that would choose 0.01 are ignored
    results = {f"dev/{members[0]}": _eval("arithmetic", 0.2), f"dev/{members[1]}": _eval("arithmetic", 0.4),
               f"eval/{members[0]}": _eval("arithmetic", 0.9), f"eval/{members[1]}": _eval("arithmetic", 0.1),
               "eval/sweep-chosen-seed0": _eval("arithmetic", 0.9)}  # fmt: skip
    chosen = RUNNERS["choose"](choose, the_plan, results)
    assert (chosen.arm, chosen.value, chosen.dev_accuracy) == (
        "sweep@threshold=0.5", 0.5, {"sweep@threshold=0.01": 0.2, "sweep@threshold=0.5": 0.4}
    )
    assert RUNNERS["choose"](choose, the_plan, {k: v for k, v in results.items() if k.startswith("dev/")}) == chosen


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(dev_fraction=1.5), "dev_fraction"),
        (dict(dev_fraction=0.2, arms=SWEEP[:1]), "no arm sweeps an option"),
        (dict(dev_fraction=0.2, arms=SWEEP, eval=dict(benchmarks=["arithmetic", "gsm8k"], data=[])),
         "dev_benchmark is required"),
    ],
)
def test_a_dev_split_that_cannot_work_is_one_clear_error(demo_models, task, tmp_path, changes, message):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", **changes)
    with pytest.raises(UserError, match=message):
        plan(load_experiment(path))


def test_a_sweep_chosen_on_dev_end_to_end(demo_models, task, tmp_path):
    out = tmp_path / "out"
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, out, arms=SWEEP, dev_fraction=0.25,
                           select=dict(require_correct=False))  # fmt: skip
    experiment(path)
    summary = json.loads((out / "experiment.json").read_text())
    (choice,) = summary["chosen_on_dev"]
    dev = {arm: json.loads((out / "stages" / "dev" / f"{arm}-seed0.json").read_text())["result"] for arm in choice["dev_accuracy"]}
    accuracy = {arm: next(iter(r["benchmarks"]["arithmetic"]["temperatures"].values()))["pass@1"] for arm, r in dev.items()}
    assert choice["dev_accuracy"] == accuracy and choice["arm"] == best_on_dev({a: [v] for a, v in accuracy.items()})
    rows = {r["arm"]: r for r in summary["accuracy"]}
    assert set(rows) == {"base", "teacher", "sweep"} and rows["sweep"]["chosen"]["arm"] == choice["arm"]
    assert rows["sweep"]["threshold"] == choice["value"]
    evaluated = sorted(p.name for p in (out / "eval").iterdir())
    assert len(evaluated) == 3 and {"teacher-seed0", "sweep-chosen-seed0"} < set(evaluated)  # no sweep value on test
    held = {r["question"] for r in _rows(out / "data" / "questions-dev.jsonl")}
    assert len(held) == 3 and not held & {r["question"] for r in _rows(out / "data" / "questions-train.jsonl")}
    assert "## Chosen on the dev split" in (out / "report.md").read_text()
