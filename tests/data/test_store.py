"""The trace store: ownership, locks, fingerprints, per-run summaries, selection."""

import json
import sqlite3
import subprocess
import sys

import pytest
from helpers import argv, rows, snapshot

from ownwords.cli import main
from ownwords.data.store import APPLICATION_ID, StoreError, TraceStore
from ownwords.errors import MissingInput


def record(qid="q", index=0, **over):
    base = dict(
        question_id=qid,
        sample_index=index,
        seed=1,
        question="1 + 1?",
        answer="2",
        prompt="p",
        text="t",
        token_ids=[1, 2],
        teacher_probs=[0.5, None],
        scores=[0.9, 0.1],
        fallbacks=[0, 1],
        trials=[1, 5],
        n_tokens=2,
        n_fallbacks=1,
        finish_reason="eos",
        wall_seconds=0.1,
    )
    return base | over


def test_a_new_store_is_marked_and_a_missing_one_is_not_created(tmp_path):
    with pytest.raises(MissingInput, match="does not exist"):
        TraceStore(tmp_path / "none.sqlite", create=False)
    assert not (tmp_path / "none.sqlite").exists()
    with TraceStore(tmp_path / "s.sqlite") as store:
        store.open_run("r", {"a": 1})
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_foreign_sqlite_file_is_refused_and_never_modified(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE samples (id, payload)")
    before = path.read_bytes()
    for write in (True, False):
        with pytest.raises(StoreError, match="another program"):
            TraceStore(path, write=write)
    assert path.read_bytes() == before


def test_a_store_written_before_the_mark_is_still_ours(tmp_path):
    """Stores from earlier ownwords versions carry no application_id; same tables, same columns."""
    path = tmp_path / "old.sqlite"
    with TraceStore(path) as store:
        store.open_run("r", {"a": 1})
        store.add("r", record())
        store.db.execute("PRAGMA application_id = 0")
    with TraceStore(path) as store:
        assert [s["question_id"] for s in store.samples("r")] == ["q"]


def test_runs_samples_selection_and_summaries(tmp_path):
    with TraceStore(tmp_path / "s.sqlite") as store:
        store.open_run("r", {"a": 1})
        for i in range(3):
            store.add("r", record(index=i, n_tokens=2 + i))
        with pytest.raises(StoreError, match="a: 1 -> 2"):
            store.open_run("r", {"a": 2})
        with pytest.raises(StoreError, match="no selection"):
            store.chosen("r")
        store.write_selection(
            "r", [("q", 1, "chosen", None, "2", 1), ("q", 0, "dropped", "correct", "3", 0)], {}, {}
        )
        assert [s["sample_index"] for s in store.chosen("r")] == [1]
        summary = store.summary("r")
        assert (
            summary["samples"] == 3 and summary["tokens"] == 2 + 3 + 4 and summary["fallback_rate"] == 3 / 9
        )
        with pytest.raises(StoreError, match="it has \\['r'\\]"):
            list(store.samples("nope"))


def test_summaries_are_per_run(tiny_pair, questions_file, tmp_path):
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "1")]) == 0
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "2", "--run", "b")]) == 0
    a = json.loads((tmp_path / "s.sqlite.default.summary.json").read_text())
    b = json.loads((tmp_path / "s.sqlite.b.summary.json").read_text())
    assert (a["run"], a["samples"]) == ("default", 2) and (b["run"], b["samples"]) == ("b", 4)


def test_an_edited_question_file_is_refused_on_resume(tiny_pair, questions_file, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "1")]) == 0
    before = rows(store)
    lines = questions_file.read_text().splitlines()
    lines[3] = json.dumps(
        {"question": "What is 100 + 1?", "answer": "#### 101"}
    )  # a question not yet generated
    questions_file.write_text("\n".join(lines) + "\n")
    files = snapshot(tmp_path)
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "5")]) == 2
    err = capsys.readouterr().err
    assert "changed since run 'default'" in err and str(questions_file) in err
    assert snapshot(tmp_path) == files and rows(store) == before


def test_a_lock_left_by_a_killed_process_does_not_block_the_resume(tiny_pair, questions_file, tmp_path):
    store = tmp_path / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "1")]) == 0
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal; from ownwords.data.store import TraceStore; "
            f"s = TraceStore({str(store)!r}); s.lock_run('default'); os.kill(os.getpid(), signal.SIGKILL)",
        ],
        capture_output=True,
    )
    assert killed.returncode == -9 and (tmp_path / "s.sqlite.default.lock").exists()
    assert main(["generate", *argv(tiny_pair, questions_file, store, "--limit", "2")]) == 0
    assert len(rows(store)) == 4


def test_a_lock_is_per_run(tmp_path):
    with TraceStore(tmp_path / "s.sqlite") as a, TraceStore(tmp_path / "s.sqlite") as b:
        a.lock_run("x")
        b.lock_run("y")  # another run of the same store: fine
        with pytest.raises(StoreError, match="being written by another process"):
            b.lock_run("x")
    with TraceStore(tmp_path / "s.sqlite") as c:
        c.lock_run("x")  # released when its holder closed
