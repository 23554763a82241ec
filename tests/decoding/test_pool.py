"""Scale-out on Ray (local instance, 2 CPU workers): the same store whatever the worker count, and
nothing lost or duplicated when a worker or the driver is killed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from functools import partial

import pytest
from helpers import assert_same_rows, finished, rows

from ownwords.cli import main

pytest.importorskip("ray", reason="Ray is the optional extra ownwords[ray] (in the dev install)")


def questions(tmp_path, n=12):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(
            json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(n)
        )
    )
    return path


def gen_args(pair, qfile, store, *extra):
    return [
        "generate",
        "--teacher",
        str(pair[0]),
        "--student",
        str(pair[1]),
        "--questions",
        str(qfile),
        "--store",
        str(store),
        "--samples",
        "2",
        "--max-new-tokens",
        "10",
        "--batch-size",
        "2",
        "--generation-prefix",
        "<think>\n",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tiny_pair, tmp_path_factory):
    """The one-process store the worker runs must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    assert main(gen_args(tiny_pair, questions(tmp), tmp / "one.sqlite")) == 0
    return rows(tmp / "one.sqlite")


def test_two_workers_write_the_same_store_as_one(tiny_pair, reference, tmp_path):
    store = tmp_path / "two.sqlite"
    assert main(gen_args(tiny_pair, questions(tmp_path), store, "--workers", "2")) == 0
    assert_same_rows(rows(store), reference)
    summary = json.loads((tmp_path / "two.sqlite.default.summary.json").read_text())
    assert summary["engine"]["teacher_forwards"] > 0 and summary["new_samples"] == 24


def ray_workers() -> list:
    import psutil

    return [
        p for p in psutil.process_iter(["cmdline"]) if "ray::_Worker" in " ".join(p.info["cmdline"] or [])
    ]


@pytest.mark.slow  # real Ray workers: CI's slow run (the default run keeps one)
def test_a_killed_worker_loses_nothing(tiny_pair, reference, tmp_path, caplog):
    """SIGKILL one worker once a few samples are in: its chunks are handed out again, the store ends
    complete, without duplicates, and equal to the one-process store."""
    store = tmp_path / "killed.sqlite"
    killed = []

    def kill_one():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if store.exists() and finished(store) >= 4 and ray_workers():
                victim = ray_workers()[0]
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(victim.pid)
            time.sleep(0.05)

    thread = threading.Thread(target=kill_one, daemon=True)
    thread.start()
    with caplog.at_level("WARNING", logger="ownwords.decoding.pool"):
        assert main(gen_args(tiny_pair, questions(tmp_path), store, "--workers", "2")) == 0
    thread.join(timeout=5)
    assert killed, "no worker was killed mid-run (the run finished first)"
    assert "handed out again" in caplog.text
    assert_same_rows(rows(store), reference)


@pytest.mark.slow
def test_a_killed_driver_resumes_to_the_same_store(tiny_pair, reference, tmp_path):
    store = tmp_path / "driver.sqlite"
    cmd = [
        sys.executable,
        "-m",
        "ownwords.cli",
        *gen_args(tiny_pair, questions(tmp_path), store, "--workers", "2"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not (store.exists() and finished(store) >= 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= len(rows(store)) < 24
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert_same_rows(rows(store), reference)


@pytest.mark.slow  # real Ray workers: CI's slow run (the default run keeps one)
def test_eval_with_two_workers_gives_the_same_results(tiny_pair, tmp_path):
    data = tmp_path / "math.jsonl"
    data.write_text(
        "".join(
            json.dumps({"problem": f"{i} + 1?", "answer": str(i + 1), "unique_id": f"m{i}"}) + "\n"
            for i in range(4)
        )
    )

    def run(out, *extra):
        args = [
            "eval",
            "--model",
            str(tiny_pair[1]),
            "--benchmarks",
            "math500",
            "--data",
            str(data),
            "--samples",
            "2",
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--no-progress",
            *extra,
        ]
        assert main(args) == 0
        (records,) = (out / next(p.name for p in out.iterdir() if p.is_dir()) / "records").glob("*.jsonl")
        return json.loads((out / "results.json").read_text()), records.read_text()

    assert run(tmp_path / "one") == run(tmp_path / "two", "--workers", "2")


@pytest.mark.slow  # real Ray workers: CI's slow run (the default run keeps one)
def test_a_model_that_fails_to_load_on_a_worker_is_one_clear_error(tiny_pair, tmp_path, capsys):
    broken = tmp_path / "student-without-weights"
    shutil.copytree(tiny_pair[1], broken)
    (broken / "model.safetensors").unlink()  # the tokenizer loads (the driver's part), the model does not
    pair = (tiny_pair[0], broken)
    assert main(gen_args(pair, questions(tmp_path, 2), tmp_path / "s.sqlite", "--workers", "2")) == 2
    err = capsys.readouterr().err
    assert "worker 0" in err and "could not load its models" in err and "student-without-weights" in err
    assert not (tmp_path / "s.sqlite").exists()


def test_workers_without_ray_say_what_to_install(tiny_pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(gen_args(tiny_pair, questions(tmp_path, 2), tmp_path / "s.sqlite", "--workers", "2")) == 2
    assert "pip install 'ownwords[ray]'" in capsys.readouterr().err


@pytest.mark.slow  # real Ray workers: CI's slow run (the default run keeps one)
def test_a_task_that_raises_is_not_retried_as_a_dead_worker(tiny_pair, caplog):
    """An error inside a worker's task (here: a token id past the vocabulary) is a bug or bad input,
    not a death: it surfaces at once, without handing the chunk out again."""
    import ray

    from ownwords.decoding.engine import Request
    from ownwords.decoding.pool import WorkerPool
    from ownwords.stages.generate import GenerateConfig, build_engine

    config = GenerateConfig(
        teacher=str(tiny_pair[0]), student=str(tiny_pair[1]), questions="unused.jsonl", max_new_tokens=2
    )
    pool = WorkerPool(partial(build_engine, config), 2)
    with (
        caplog.at_level("WARNING", logger="ownwords.decoding.pool"),
        pytest.raises(ray.exceptions.RayTaskError),
    ):
        list(pool.run([Request("q", 0, [10**9], seed=0)]))
    assert "handed out again" not in caplog.text
