"""Helpers for the experiment tests: a small experiment YAML, what a run ran, a report's numbers."""

import json

import yaml


def experiment_yaml(path, demo_models, task, out, **changes) -> str:
    """A small 2-arm experiment (teacher, rsd), 1 seed; `changes` replace top-level keys or, as
    `section={...}`, update a section."""
    teacher, student = demo_models
    data = dict(
        out=str(out),
        teacher=str(teacher),
        students=[str(student)],
        questions=str(task / "train.jsonl"),
        seeds=1,
        arms=[dict(name="teacher", kind="teacher"), dict(name="rsd", kind="rsd", threshold=0.01)],
        generate=dict(threads=2, samples=1, max_new_tokens=96, temperature=0.7, top_p=0.95, batch_size=12,
                      system_prompt="", generation_prefix="<think>\n", progress=False),
        select=dict(),
        train=dict(threads=2, max_steps=4, learning_rate=3e-4, effective_batch_size=4, use_cpu=True, max_length=256,
                   save_only_model=True, disable_tqdm=True),
        eval=dict(threads=2, benchmarks=["arithmetic"], data=[str(task / "test.jsonl")], temperatures=["0"],
                  max_new_tokens=96, instruction=False, generation_prefix="<think>\n", batch_size=12,
                  progress=False),
        analyze=dict(html_traces=20),
    )  # fmt: skip
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = data[key] | value
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def numbers(out) -> dict:
    """The report's numbers (not its wall times)."""
    summary = json.loads((out / "experiment.json").read_text())
    return dict(
        accuracy=[(r["arm"], r["benchmark"], r["accuracy"], r["eval_se"]) for r in summary["accuracy"]],
        traces=[{k: v for k, v in t.items() if k != "generate_seconds"} for t in summary["traces"]],
        low=summary["low_probability"],
    )


def ran(summary) -> list[str]:
    return [s["stage"] for s in summary["this_run"] if s["status"] == "ran"]
