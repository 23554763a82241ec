"""The demo's task and report (the full `ownwords demo --quick` runs in .ci/run)."""

import json
import random

from ownwords.data.verify import grade
from ownwords.demo import SCALES, DemoConfig, demo_experiment, problem, terse, verbose, write_split


def test_both_trace_styles_carry_the_right_boxed_answer():
    rng = random.Random(0)
    for _ in range(200):
        _, a, b, c = problem(rng)
        assert a + b - c >= 1
        for text in (terse(a, b, c), verbose(a, b, c, rng)):
            assert text.startswith("<think>\n") and text.count("</think>") == 1
            assert grade(text, str(a + b - c), "integer", thinking_end="</think>") is True
    styles = {verbose(3, 4, 2, random.Random(s)) for s in range(20)}
    assert len(styles) > 5  # the teacher's style varies; the student's does not


def test_splits_are_fixed_by_seed(tmp_path):
    def rows(name, seed):
        write_split(tmp_path / name, 30, seed=seed)
        return [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]

    a, b, c = rows("a.jsonl", 1), rows("b.jsonl", 1), rows("c.jsonl", 2)
    assert [(r["question"], r["answer"]) for r in a] == [(r["question"], r["answer"]) for r in b]
    assert [r["question"] for r in a] != [r["question"] for r in c]
    assert set(a[0]) == {"id", "question", "answer"} and a[0]["id"] == "a-0"


def test_the_demo_is_the_experiment_of_its_recipe_with_four_rows(tmp_path):
    """recipes/demo.yaml pointed at OUT: base, teacher, RSD and self; --quick: one seed, fewer steps."""
    from ownwords.experiment.plan import plan

    config = DemoConfig(out=str(tmp_path), quick=True)
    experiment = demo_experiment(config, tmp_path, SCALES["quick"])
    the_plan = plan(experiment)
    assert {s.arm.kind for s in the_plan.trace_sets.values()} == {"teacher", "rsd", "self"}
    assert [k for k, m in the_plan.models.items() if m.trace_set is None] == ["student"]
    assert experiment.seeds == 1 and experiment.teacher == str(tmp_path / "models" / "teacher")
    train = the_plan.stage("train/rsd-seed0").config
    assert train.num_train_epochs == SCALES["quick"].sft_epochs and train.max_steps == -1  # equal epochs
    assert the_plan.stage("eval/student").config.data == [str(tmp_path / "data" / "arithmetic_test.jsonl")]
    assert DemoConfig(quick=False).seeds == 3


def test_a_quick_demo_never_replaces_a_full_ones_results(tmp_path):
    from helpers import snapshot

    from ownwords.demo import _claim
    from ownwords.errors import UserError

    assert DemoConfig(quick=True).out == "ownwords-demo-quick" and DemoConfig().out == "ownwords-demo"
    full = tmp_path / "demo"
    _claim(full, "full")
    (full / "experiment").mkdir()
    (full / "experiment" / "report.md").write_text("the full demo's report\n")
    before = snapshot(full)
    import pytest

    with pytest.raises(UserError, match="holds the results of the full demo.*another --out"):
        _claim(full, "quick")
    assert snapshot(full) == before
    _claim(full, "full")  # the same demo again: resumed in place
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("\\documentclass{article}\n")
    with pytest.raises(UserError, match="not empty and no demo wrote it"):
        _claim(tmp_path / "thesis", "quick")


def test_a_second_process_waits_for_the_demo_cache_entry_being_trained(tmp_path, monkeypatch):
    import threading

    from ownwords import demo
    from ownwords.data.store import hold_lock

    scale = demo.Scale(train_questions=4, test_questions=4, samples=1, teacher_steps=2, student_steps=2, sft_epochs=1)
    entry = demo.cache_entries(tmp_path, scale)[0]
    other = hold_lock(entry.with_name(entry.name + ".lock"), RuntimeError("held"))  # the first process
    waiting = threading.Event()
    monkeypatch.setattr("ownwords.demo.models._waiting", lambda path: waiting.set())
    done = []
    worker = threading.Thread(target=lambda: done.append(demo.tiny_pair(tmp_path, scale, fresh=False)))
    worker.start()
    assert waiting.wait(120), "the second process did not wait for the lock"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("teacher") and not p.name.endswith(".lock")]
    other.close()  # the first process is done
    worker.join(300)
    assert done and (done[0][0] / "model.safetensors").is_file()
