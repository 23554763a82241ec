"""Faults of the machine and of its files end in one line naming the file or address and what to do,
exit non-zero, and lose nothing already written: a full disk, a read-only output, a damaged stamp, a
summary path that is a symlink, an unreachable Ray cluster, a second process on the same run."""

import json
import os
import sqlite3

import pytest
from helpers import argv, read_only, snapshot

from ownwords.cli import main
from ownwords.data.store import TraceStore


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": f"{a} + 1?", "answer": f"#### {a + 1}"}) + "\n" for a in range(3)))
    return path


def one_line(capsys, *needles) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if ": error: " in x]
    for needle in needles:
        assert needle in line, line
    return line


def test_a_full_disk_while_saving_a_training_is_one_line_and_resumes(tiny_pair, tmp_path, capsys, monkeypatch):
    from datasets import Dataset
    from safetensors import SafetensorError
    from trl import SFTTrainer

    rows = [{"prompt": [{"role": "user", "content": f"{i} + 1?"}],
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}\n</think> \\boxed{{{i + 1}}}"}]}
            for i in range(4)]  # fmt: skip
    data = tmp_path / "d.jsonl"
    Dataset.from_list(rows).to_json(str(data))
    args = ["train", "--model", str(tiny_pair[1]), "--dataset", str(data), "--output-dir", str(tmp_path / "m"),
            "--max-steps", "2", "--effective-batch-size", "2", "--use-cpu", "--max-length", "128", "--disable-tqdm", "true"]  # fmt: skip

    def full(self, *a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')

    monkeypatch.setattr(SFTTrainer, "save_model", full)
    assert main(args) == 2
    one_line(capsys, "no space left on the device", str(tmp_path / "m"), "run the same command again")
    monkeypatch.undo()
    assert main(args) == 0 and (tmp_path / "m" / "model.safetensors").is_file()


@pytest.mark.parametrize("command", ["eval", "analyze", "train", "experiment"])
def test_an_output_folder_that_cannot_be_written_is_one_line_before_any_work(tiny_pair, questions, tmp_path, capsys,
                                                                            command):  # fmt: skip
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "out"
    student = str(tiny_pair[1])
    store = tmp_path / "s.sqlite"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "1?"}],
                                "completion": [{"role": "assistant", "content": "1"}]}) + "\n")  # fmt: skip
    exp = tmp_path / "e.yaml"
    exp.write_text(f"teacher: {tiny_pair[0]}\nstudents: [{student}]\nquestions: {questions}\nout: {out}\n"
                   "arms: [{kind: rsd}]\n")  # fmt: skip
    if command == "analyze":
        assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "1")]) == 0
    args = {
        "eval": ["eval", "--model", student, "--benchmarks", "gsm8k", "--data", str(questions), "--out", str(out)],
        "analyze": ["analyze", "--students", student, "--store", str(store), "--out", str(out)],
        "train": ["train", "--model", student, "--dataset", str(data), "--output-dir", str(out), "--use-cpu"],
        "experiment": ["experiment", str(exp)],
    }[command]
    capsys.readouterr()
    with read_only(locked):
        before = snapshot(tmp_path)
        assert main(args) == 2
        one_line(capsys, str(out), "cannot write there")
        assert snapshot(tmp_path) == before


def test_a_summary_path_that_is_a_symlink_is_replaced_not_written_through(tiny_pair, questions, tmp_path):
    store = tmp_path / "s.sqlite"
    victim = tmp_path / "victim.txt"
    victim.write_text("somebody's file\n")
    link = tmp_path / "s.sqlite.default.summary.json"
    link.symlink_to(victim)
    assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "1")]) == 0
    assert victim.read_text() == "somebody's file\n"
    assert not link.is_symlink() and json.loads(link.read_text())["samples"] == 2


def test_a_second_generate_on_a_run_being_written_is_one_line(tiny_pair, questions, tmp_path, capsys):
    """The first process holds the run's lock and is in the middle of writing a sample."""
    from ownwords.data.store import hold_lock

    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "1")]) == 0
    before = snapshot(tmp_path)
    held = hold_lock(tmp_path / "s.sqlite.default.lock", RuntimeError("held"))
    writer = sqlite3.connect(store, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "2")]) == 2
        one_line(capsys, "is being written by another process", "s.sqlite.default.lock")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        held.close()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("address", ["127.0.0.1:9", "auto"])
def test_an_unreachable_ray_cluster_is_one_line_within_its_deadline(tiny_pair, questions, tmp_path, capsys,
                                                                    monkeypatch, address):  # fmt: skip
    pytest.importorskip("ray")
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance of this process is already up")
    monkeypatch.setenv("OWNWORDS_RAY_CONNECT_TIMEOUT", "8")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    from ownwords.decoding import pool

    monkeypatch.setattr(pool.WorkerPool, "connect_timeout", 8.0)
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions, store, "--workers", "2", "--ray-address", address)]) == 2
    one_line(capsys, f"ray_address {address!r}")
    assert not store.exists() and not ray.is_initialized()
    assert os.environ["OWNWORDS_RAY_CONNECT_TIMEOUT"] == "8"


def test_the_store_it_wrote_is_said(tiny_pair, questions, tmp_path, caplog, monkeypatch):
    """Forgetting --store writes ./ownwords.sqlite: said, not silent."""
    import logging

    monkeypatch.chdir(tmp_path)
    args = [a for a in argv(tiny_pair, questions, "x") if a not in ("--store", "x")]
    with caplog.at_level(logging.INFO):
        assert main(["generate", *args, "--limit", "1"]) == 0
    assert f"2 samples in {tmp_path / 'ownwords.sqlite'}" in caplog.text
    with TraceStore(tmp_path / "ownwords.sqlite", create=False, write=False) as store:
        assert store.summary("default")["samples"] == 2


def test_an_export_of_a_selection_made_before_generation_finished_is_a_warning(tiny_pair, questions, tmp_path, caplog):
    import logging

    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "1")]) == 0
    with TraceStore(store) as s:  # random models pass no filter: choose by hand, as select would
        s.write_selection("default", [(r["question_id"], r["sample_index"], "chosen", None, None, None)
                                      for r in s.samples("default")], {}, {"samples": 2})  # fmt: skip
    assert main(["generate", *argv(tiny_pair, questions, store)]) == 0  # the rest of the run, after select
    with caplog.at_level(logging.WARNING):
        assert main(["export", "--store", str(store), "--out", str(tmp_path / "d.jsonl")]) == 0
    assert "has 6 samples, but `ownwords select` judged only the 2" in caplog.text and "run select again" in caplog.text


def test_a_prompt_with_no_room_under_max_length_is_a_warning(tiny_pair, questions, tmp_path, caplog):
    import logging

    store = tmp_path / "s.sqlite"
    with caplog.at_level(logging.WARNING):
        assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "1", "--max-length", "8")]) == 0
    assert "2 samples had a prompt that leaves no room under max_length 8" in caplog.text


def test_eval_does_not_cap_a_long_prompt_silently(tiny_pair, tmp_path):
    """A prompt of over 8,192 tokens still gets its max_new_tokens (the engine's own default cap)."""
    from ownwords.config import parse
    from ownwords.stages.evaluate import EvalConfig, evaluate

    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"question": "1 + " * 4200 + "1?", "answer": "#### 4201"}) + "\n")
    out = tmp_path / "ev"
    args = ["--model", str(tiny_pair[1]), "--benchmarks", "gsm8k", "--data", str(data), "--max-new-tokens", "3",
            "--out", str(out), "--no-progress", "--temperatures", "0"]  # fmt: skip
    evaluate(parse(EvalConfig, args, "t"))
    (records,) = out.glob("*/records.sqlite")
    with TraceStore(records, create=False, write=False) as store:
        (run,) = store.runs()
        (sample,) = store.samples(run)
    assert len(sample["prompt"]) > 8192 and sample["n_tokens"] == 3


def test_ctrl_c_during_training_ends_it_with_one_line(tiny_pair, tmp_path, capsys, monkeypatch):
    from datasets import Dataset
    from trl import SFTTrainer

    rows = [{"prompt": [{"role": "user", "content": "1 + 1?"}], "completion": [{"role": "assistant", "content": "2"}]}] * 4
    data = tmp_path / "d.jsonl"
    Dataset.from_list(rows).to_json(str(data))
    steps = []

    def interrupted(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C, during the second step
        return original(self, *args, **kwargs)

    original = SFTTrainer.training_step
    monkeypatch.setattr(SFTTrainer, "training_step", interrupted)
    args = ["train", "--model", str(tiny_pair[1]), "--dataset", str(data), "--output-dir", str(tmp_path / "m"),
            "--max-steps", "4", "--effective-batch-size", "1", "--use-cpu", "--disable-tqdm", "true"]  # fmt: skip
    assert main(args) == 130
    assert "ownwords train: interrupted." in capsys.readouterr().err and len(steps) == 2
