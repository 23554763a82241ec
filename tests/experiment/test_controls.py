"""The reviewer's controls as arms of an experiment: mask (the hard tokens out of the gradient),
least_surprising selection, onpolicy distillation (from the base student and from RSD's), and a
compute-matched self arm -- each end to end, reported like the rest."""

import json

import pytest
from experiments import experiment_yaml, ran

from ownwords.data.store import TraceStore
from ownwords.errors import UserError
from ownwords.experiment.plan import expand, load_experiment
from ownwords.experiment.runner import experiment

ARMS = [
    dict(name="teacher", kind="teacher"),
    dict(name="rsd", kind="rsd", threshold=0.01),
    dict(name="mask", kind="mask", mask_under=0.01),
    dict(name="teacher-ls", kind="teacher", select=dict(policy="least_surprising")),
    dict(name="onpolicy", kind="onpolicy"),
    dict(name="rsd-onpolicy", kind="onpolicy", **{"from": "rsd"}),
    dict(name="self-matched", kind="self", match="rsd"),
]
DISTILL = dict(max_steps=2, effective_batch_size=4, per_device_train_batch_size=4, max_completion_length=32,
               learning_rate=1e-4, use_cpu=True, disable_tqdm=True, generation_prefix="<think>\n", threads=2)  # fmt: skip


@pytest.fixture(scope="module")
def controls(demo_models, task, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("controls")
    out = tmp / "out"
    path = experiment_yaml(tmp / "e.yaml", demo_models, task, out, arms=ARMS, distill=DISTILL,
                           generate=dict(samples=2), select=dict(require_correct=False))  # fmt: skip
    return out, path, experiment(path)


def test_every_control_arm_runs_end_to_end_and_is_reported(controls):
    out, _, summary = controls
    report = json.loads((out / "experiment.json").read_text())
    arms = {r["arm"]: r for r in report["accuracy"]}
    assert set(arms) == {"base", "teacher", "rsd", "mask", "teacher-ls", "onpolicy", "rsd-onpolicy", "self-matched"}
    assert arms["mask"]["kind"] == "mask" and 0 < arms["mask"]["training"]["masked"] < 1
    assert arms["teacher-ls"]["policy"] == "least_surprising" and arms["onpolicy"]["kind"] == "onpolicy"
    against = {(c["arm"], c["against"]) for c in report["comparisons"]}
    assert {("rsd", "mask"), ("rsd", "onpolicy"), ("rsd", "self-matched"), ("mask", "base")} <= against
    assert "## Which differences are real" in (out / "report.md").read_text()
    assert "distill/rsd-onpolicy-seed0" in ran(summary)


def test_rsd_onpolicy_starts_from_rsds_student_and_changes_it(controls):
    from safetensors.torch import load_file

    out, path, _ = controls
    _, models = expand(load_experiment(path))
    assert models["rsd-onpolicy-seed0"].start == "rsd-seed0" and models["onpolicy-seed0"].start != "rsd-seed0"
    stamp = json.loads((out / "stages" / "distill" / "rsd-onpolicy-seed0.json").read_text())
    assert stamp["spec"]["model"] == str(out / "models" / "rsd-seed0") and stamp["result"]["steps"] == 2
    before = load_file(out / "models" / "rsd-seed0" / "model.safetensors")
    after = load_file(out / "models" / "rsd-onpolicy-seed0" / "model.safetensors")
    assert any(not (before[k] == after[k]).all() for k in before)


def test_the_compute_matched_self_arm_generates_within_one_trace_of_rsds_tokens(controls):
    out, _, _ = controls
    with TraceStore(out / "traces.sqlite", create=False, write=False) as store:
        target = store.summary("rsd")["tokens"]
        lengths = [s["n_tokens"] for s in store.samples("self-matched")]
    assert target <= sum(lengths) < target + max(lengths)
    assert sum(lengths) - lengths[-1] < target  # without its last trace it would fall short


def test_least_surprising_keeps_what_shortest_would_not(controls):
    """Same traces (same generate options and seeds) as the teacher arm, chosen by the student's
    mean NLL: the two trace sets' chosen samples differ on some question."""
    out, _, _ = controls
    with TraceStore(out / "traces.sqlite", create=False, write=False) as store:
        chosen = {run: {key for key, r in store.selection(run).items() if r["status"] == "chosen"}
                  for run in ("teacher", "teacher-ls")}  # fmt: skip
        texts = {run: sorted(s["text"] for s in store.samples(run)) for run in ("teacher", "teacher-ls")}
    assert texts["teacher"] == texts["teacher-ls"] and chosen["teacher"] != chosen["teacher-ls"]


def test_an_onpolicy_arm_for_a_pair_without_one_vocabulary_is_refused_at_plan_time(demo_models, task, greek_model,
                                                                                     tmp_path):  # fmt: skip
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "o", teacher=str(greek_model),
                           arms=[dict(name="onpolicy", kind="onpolicy")])  # fmt: skip
    with pytest.raises(UserError, match="onpolicy arm needs teacher and student to share a vocabulary"):
        experiment(path)
    assert not (tmp_path / "o" / "stages").exists()


@pytest.mark.parametrize(
    "arm, message",
    [
        (dict(name="m", kind="rsd", mask_under=0.01), "'mask_under' is for mask arms"),
        (dict(name="o", kind="onpolicy", **{"from": "nowhere"}), "names no arm listed before"),
        (dict(name="o", kind="onpolicy", threshold=0.1), "an onpolicy arm generates no traces"),
        (dict(name="s", kind="self", match="teacher"), "must name an RSD arm"),
        (dict(name="t", kind="teacher", select=dict(store="x")), "select option 'store' is not one an arm may set"),
        (dict(name="m", kind="mask", mask_under=2), "expected a probability in (0, 1]"),
    ],
)
def test_bad_control_arms_are_one_clear_error(demo_models, task, tmp_path, arm, message):
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "o",
                           arms=[dict(name="teacher", kind="teacher"), arm])  # fmt: skip
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(load_experiment(path))


def test_an_experiment_takes_the_backend_for_its_baseline_arms_and_refuses_it_for_rsd(demo_models, task, tmp_path):
    from ownwords.experiment.plan import plan

    arms = [dict(name="teacher", kind="teacher", backend="vllm"), dict(name="rsd", kind="rsd", threshold=0.01),
            dict(name="self", kind="self", backend="vllm")]  # fmt: skip
    path = experiment_yaml(tmp_path / "e.yaml", demo_models, task, tmp_path / "out", arms=arms,
                           eval=dict(backend="vllm"))  # fmt: skip
    the_plan = plan(load_experiment(path))
    backends = {s.name: s.config.backend for s in the_plan.stages if s.kind in ("generate", "eval")}
    assert backends["generate/teacher"] == backends["generate/self"] == "vllm" and backends["generate/rsd"] == "hf"
    assert {b for name, b in backends.items() if name.startswith("eval/")} == {"vllm"}
    path = experiment_yaml(tmp_path / "f.yaml", demo_models, task, tmp_path / "out", generate=dict(backend="vllm"))
    with pytest.raises(UserError, match="arm 'rsd'.*this run is RSD"):
        plan(load_experiment(path))
