"""The demo's task and report (the full `ownwords demo --quick` runs in .ci/run)."""

import json
import random

from ownwords.data.verify import grade
from ownwords.demo import DemoConfig, demo_report, problem, terse, verbose, write_split


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


def test_report_shows_mean_and_spread():
    summary = dict(
        scale={"test_questions": 10},
        seeds=2,
        accuracy={
            "base": 0.5,
            "sft-teacher-seed0": 0.2,
            "sft-teacher-seed1": 0.4,
            "sft-rsd-seed0": 0.6,
            "sft-rsd-seed1": 0.6,
        },
        generation={  # a rerun: the teacher traces were all in the store already
            "rsd": {"fallback_rate": 0.3, "tokens_per_second": 100.0, "new_samples": 4},
            "teacher": {"fallback_rate": 0.3, "tokens_per_second": 0.0, "new_samples": 0},
        },
        selection={
            r: {"samples_passed": 5, "samples": 8, "questions_covered": 3, "questions": 4}
            for r in ("rsd", "teacher")
        },
        low_probability={"rsd": {"s": 0.0}, "teacher": {"s": 0.25}},
        timings={"generate": 1.0},
    )
    report = demo_report(summary)
    assert (
        "| SFT on teacher traces | 30.0% ± 14.1 |" in report
        and "| SFT on RSD traces | 60.0% ± 0.0 |" in report
    )
    assert "| teacher | 5 / 8 | 3 / 4 | 0.300 | reused | 25.00% |" in report
    assert "| rsd | 5 / 8 | 3 / 4 | 0.300 | 100 | 0.00% |" in report
    assert "(accuracy.png)" in report and "(analysis/traces.html)" in report
    assert DemoConfig(quick=True).seeds == 1
