import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import argv, assert_same_rows, crash_after, finished, rows

from ownwords.cli import main
from ownwords.config import parse
from ownwords.decoding.records import sample_seed
from ownwords.stages.generate import PRESETS, GenerateConfig, generate


def test_generate_writes_store_and_summary(tiny_pair, questions_file, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store)]) == 0
    summary = json.loads((tmp_path / "s.sqlite.default.summary.json").read_text())
    assert summary["samples"] == 10 and summary["questions"] == 5
    for key in ("tokens", "fallback_rate", "tokens_per_second", "wall_seconds"):
        assert summary[key] > 0
    assert json.loads(capsys.readouterr().out)["samples"] == 10
    db = sqlite3.connect(store)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    records = rows(store)
    assert [(r["question_id"], r["sample_index"]) for r in records] == [
        (str(q), i) for q in range(5) for i in range(2)
    ]
    for r in records:
        assert r["seed"] == sample_seed(0, r["question_id"], r["sample_index"])
        assert r["prompt"].endswith("<|im_start|>assistant\n<think>\n") and "What is" in r["prompt"]
        assert r["n_tokens"] == len(r["token_ids"]) and r["n_fallbacks"] == sum(r["fallbacks"])
        # the store lets anyone check the RSD invariant
        assert all(s >= 0.01 for s, f in zip(r["scores"], r["fallbacks"]) if not f)
    # Same command again: nothing left to do, nothing duplicated.
    assert main(["generate", *argv(tiny_pair, questions_file, store)]) == 0
    assert rows(store) == records


def test_interrupted_run_resumes_to_the_uninterrupted_store(tiny_pair, questions_file, tmp_path):
    full = tmp_path / "full.sqlite"
    generate(parse(GenerateConfig, argv(tiny_pair, questions_file, full), "t"))
    part = tmp_path / "part.sqlite"
    with crash_after(3):
        generate(parse(GenerateConfig, argv(tiny_pair, questions_file, part, "--batch-size", "4"), "t"))
    assert len(rows(part)) == 3
    generate(parse(GenerateConfig, argv(tiny_pair, questions_file, part, "--batch-size", "2"), "t"))
    assert_same_rows(rows(part), rows(full))


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes_the_store(tiny_pair, questions_file, tmp_path):
    full, killed = tmp_path / "full.sqlite", tmp_path / "killed.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, full, "--max-new-tokens", "40")]) == 0
    cmd = [
        sys.executable,
        "-m",
        "ownwords.cli",
        "generate",
        *argv(tiny_pair, questions_file, killed, "--max-new-tokens", "40", "--batch-size", "1"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if killed.exists() and finished(killed) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(rows(killed)) < 10
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert_same_rows(rows(killed), rows(full))


def test_preset_yaml_and_flags_layer(tmp_path):
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("teacher: t\nstudent: s\nquestions: q.jsonl\npreset: paper\ntrials: 3\n")
    config = parse(GenerateConfig, ["--config", str(cfg), "--top-k", "10"], "t", PRESETS)
    assert config.preset == "paper" and config.logprobs == "raw" and config.acceptance_top_k == 20
    assert config.trials == 3 and config.top_k == 10 and config.generation_prefix == "<think>\n"
    config = parse(GenerateConfig, ["--config", str(cfg), "--logprobs", "processed"], "t", PRESETS)
    assert config.logprobs == "processed"


def test_speculative_generate_from_the_cli(tiny_pair, questions_file, tmp_path):
    store = tmp_path / "spec.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--speculate", "3")]) == 0
    summary = json.loads((tmp_path / "spec.sqlite.default.summary.json").read_text())
    assert summary["samples"] == 10 and summary["engine"]["drafted"] > 0
    assert summary["engine"]["teacher_forwards"] < summary["new_tokens"]
    for r in rows(store):
        assert all(s >= 0.01 for s, f in zip(r["scores"], r["fallbacks"]) if not f)


def test_options_added_later_stay_out_of_a_runs_identity_at_their_default(tiny_pair, questions_file):
    """A run stored before `backend` and `token_budget` existed was made with their defaults: its
    identity (what a resume is checked against) does not name them, so it resumes; set, they count."""
    from ownwords.data.questions import load_questions
    from ownwords.stages.generate import ADDED_LATER, GenerateConfig, run_identity

    base = dict(teacher=str(tiny_pair[0]), student=str(tiny_pair[1]), questions=str(questions_file))
    questions = load_questions(str(questions_file))
    assert not set(ADDED_LATER) & set(run_identity(GenerateConfig(**base), questions))
    assert run_identity(GenerateConfig(**base, token_budget=100), questions)["token_budget"] == 100
