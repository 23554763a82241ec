"""Bad input across every subcommand: exit code 2, one line naming the input and what was expected, no
traceback, and every file already there byte-for-byte unchanged."""

import json
import sqlite3

import pytest
from helpers import argv, read_only, snapshot

from ownwords.cli import main
from ownwords.data.store import TraceStore


@pytest.fixture(scope="module")
def ws(tiny_pair, tmp_path_factory):
    """A workspace: questions, a store with a generated and selected run, an export, odd files."""
    root = tmp_path_factory.mktemp("ws")
    questions = root / "q.jsonl"
    questions.write_text(
        "".join(json.dumps({"question": f"{a} + 1?", "answer": f"#### {a + 1}"}) + "\n" for a in range(3))
    )
    store = root / "store" / "s.sqlite"
    assert main(["generate", *argv(tiny_pair, questions, store, "--limit", "2")]) == 0
    with TraceStore(store) as s:  # random tiny models pass no filter: choose every sample by hand
        chosen = [
            (r["question_id"], r["sample_index"], "chosen", None, None, None) for r in s.samples("default")
        ]
        s.write_selection("default", chosen, {}, {})
    (root / "store" / "notes.txt").write_text("unrelated work beside the store\n")
    (root / "empty.jsonl").write_text("")
    (root / "blank.jsonl").write_text("\n\n")
    (root / "broken.jsonl").write_text('{"question": "1 + 1?", "answer": "2"}\n{"question": oops\n')
    (root / "strings.jsonl").write_text(json.dumps({"prompt": "1 + 1?", "completion": "2"}) + "\n")
    (root / "foreign.sqlite").write_bytes(b"")
    with sqlite3.connect(root / "foreign.sqlite") as db:
        db.execute("CREATE TABLE samples (x)")
        db.execute("CREATE TABLE runs (name, config)")
        db.execute("INSERT INTO runs VALUES ('default', '{}')")
    (root / "text.sqlite").write_text("not a database, just text " * 50)
    (root / "other").mkdir()
    (root / "other" / "thesis.tex").write_text("\\documentclass{article}\n")
    (root / "bad.yaml").write_text("tresholds: 0.1\n")
    (root / "broken.yaml").write_text("teacher: [unclosed\n")
    (root / "experiment.yaml").write_text(
        f"teacher: {tiny_pair[0]}\nstudents: [{tiny_pair[1]}]\nquestions: {questions}\narms: [{{kind: distill}}]\n"
    )
    return dict(
        root=root, questions=questions, store=store, pair=tiny_pair, broken_yaml=root / "broken.yaml",
        bad_yaml=root / "bad.yaml", experiment=root / "experiment.yaml",
    )  # fmt: skip


def gen(ws, *extra, store=None, questions=None):
    return [
        "generate",
        *argv(ws["pair"], questions or ws["questions"], store or ws["store"], "--limit", "2", *extra),
    ]


def fails(ws, capsys, args, *needles):
    """Run the command; it must fail cleanly and change nothing under the workspace."""
    before = snapshot(ws["root"])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert snapshot(ws["root"]) == before, "a failed command changed files"
    return err


CASES = {
    # generate
    "generate: empty questions file": (
        lambda w: gen(w, questions=w["root"] / "empty.jsonl"),
        ["empty.jsonl", "empty"],
    ),
    "generate: blank-line questions file": (
        lambda w: gen(w, questions=w["root"] / "blank.jsonl"),
        ["blank.jsonl", "empty"],
    ),
    "generate: one invalid JSON line": (
        lambda w: gen(w, questions=w["root"] / "broken.jsonl"),
        ["broken.jsonl", "line 2", "not valid JSON"],
    ),
    "generate: missing questions file": (
        lambda w: gen(w, questions=w["root"] / "nope.jsonl"),
        ["nope.jsonl", "does not exist"],
    ),
    "generate: unknown question column": (
        lambda w: gen(w, "--question-field", "prompt_text"),
        ["'prompt_text'", "columns are"],
    ),
    "generate: trials without bound": (lambda w: gen(w, "--trials", "1000000000"), ["trials", "[1, 1000]"]),
    "generate: zero trials": (lambda w: gen(w, "--trials", "0"), ["trials", "[1, 1000]"]),
    "generate: infinite temperature": (lambda w: gen(w, "--temperature", "inf"), ["temperature", "finite"]),
    "generate: negative temperature": (lambda w: gen(w, "--temperature", "-1"), ["temperature", ">= 0"]),
    "generate: top-p 0": (lambda w: gen(w, "--top-p", "0"), ["top_p", "(0, 1]"]),
    "generate: unknown logprobs mode": (
        lambda w: gen(w, "--logprobs", "cooked"),
        ["logprobs", "raw, processed"],
    ),
    "generate: cuda without CUDA": (lambda w: gen(w, "--device", "cuda"), ["'cuda'", "no CUDA device"]),
    "generate: no such device": (lambda w: gen(w, "--device", "tpu9"), ["'tpu9'", "not a torch device"]),
    "generate: teacher-only baseline with a student top-k": (
        lambda w: gen(w, "--threshold", "0", "--acceptance-top-k", "20"),
        ["threshold 0", "teacher-only", "acceptance_top_k 20"],
    ),
    "generate: unknown model (no store created)": (
        lambda w: gen(w, "--student", str(w["root"] / "no-model"), store=w["root"] / "new.sqlite"),
        ["no-model", "no such folder", "does not exist"],
    ),
    "generate: resume with another config": (
        lambda w: gen(w, "--trials", "2"),
        ["s.sqlite", "trials: 5 -> 2"],
    ),
    "generate: foreign SQLite store": (
        lambda w: gen(w, store=w["root"] / "foreign.sqlite"),
        ["foreign.sqlite", "another program"],
    ),
    "generate: store that is not SQLite": (
        lambda w: gen(w, store=w["root"] / "text.sqlite"),
        ["text.sqlite", "not an SQLite file"],
    ),
    "generate: store is a folder": (lambda w: gen(w, store=w["root"] / "other"), ["other", "not a file"]),
    "generate: unknown YAML key": (
        lambda w: ["generate", "--config", str(w["root"] / "bad.yaml")],
        ["bad.yaml", "tresholds"],
    ),
    "generate: invalid YAML": (
        lambda w: ["generate", "--config", str(w["root"] / "broken.yaml")],
        ["broken.yaml", "not valid YAML"],
    ),
    "generate: missing YAML": (
        lambda w: ["generate", "--config", str(w["root"] / "none.yaml")],
        ["none.yaml", "does not exist"],
    ),
    # select
    "select: missing store": (
        lambda w: ["select", "--store", str(w["root"] / "none.sqlite")],
        ["none.sqlite", "does not exist"],
    ),
    "select: foreign SQLite store": (
        lambda w: ["select", "--store", str(w["root"] / "foreign.sqlite")],
        ["foreign.sqlite", "another program"],
    ),
    "select: unknown run": (
        lambda w: ["select", "--store", str(w["store"]), "--run", "nope"],
        ["'nope'", "it has ['default']"],
    ),
    "select: unknown policy": (
        lambda w: ["select", "--store", str(w["store"]), "--policy", "longest"],
        ["policy is 'longest'", "shortest"],
    ),
    "select: fallback rate above 1": (
        lambda w: ["select", "--store", str(w["store"]), "--max-fallback-rate", "2"],
        ["max_fallback_rate", "[0, 1]"],
    ),
    # export
    "export: out is the store": (
        lambda w: ["export", "--store", str(w["store"]), "--out", str(w["store"]), "--overwrite"],
        ["is, or contains, the store"],
    ),
    "export: out is the store's folder": (
        lambda w: ["export", "--store", str(w["store"]), "--out", str(w["store"].parent), "--overwrite"],
        ["is, or contains, the store"],
    ),
    "export: out is a folder of other work": (
        lambda w: ["export", "--store", str(w["store"]), "--out", str(w["root"] / "other"), "--overwrite"],
        ["other", "not replaced"],
    ),
    "export: unknown format": (
        lambda w: ["export", "--store", str(w["store"]), "--out", str(w["root"] / "x.txt")],
        ["x.txt", ".jsonl or .parquet"],
    ),
    "export: run without selection": (
        lambda w: [
            "export",
            "--store",
            str(w["store"]),
            "--run",
            "nope",
            "--out",
            str(w["root"] / "x.jsonl"),
        ],
        ["'nope'"],
    ),
    "export: foreign SQLite store": (
        lambda w: [
            "export",
            "--store",
            str(w["root"] / "foreign.sqlite"),
            "--out",
            str(w["root"] / "x.jsonl"),
        ],
        ["another program"],
    ),
    # train
    "train: dataset with an invalid JSON line": (
        lambda w: [
            "train",
            "--model",
            str(w["pair"][1]),
            "--dataset",
            str(w["root"] / "broken.jsonl"),
            "--output-dir",
            str(w["root"] / "m"),
        ],
        ["broken.jsonl", "line 2"],
    ),
    "train: string prompt/completion": (
        lambda w: [
            "train",
            "--model",
            str(w["pair"][1]),
            "--dataset",
            str(w["root"] / "strings.jsonl"),
            "--output-dir",
            str(w["root"] / "m"),
        ],
        ["strings.jsonl", "'prompt'", "chat messages"],
    ),
    "train: empty dataset file": (
        lambda w: [
            "train",
            "--model",
            str(w["pair"][1]),
            "--dataset",
            str(w["root"] / "empty.jsonl"),
            "--output-dir",
            str(w["root"] / "m"),
        ],
        ["empty.jsonl", "empty"],
    ),
    "train: missing dataset": (
        lambda w: [
            "train",
            "--model",
            str(w["pair"][1]),
            "--dataset",
            str(w["root"] / "none.jsonl"),
            "--output-dir",
            str(w["root"] / "m"),
        ],
        ["none.jsonl", "does not exist"],
    ),
    # eval
    "eval: limit 0": (
        lambda w: [
            "eval",
            "--model",
            str(w["pair"][1]),
            "--data",
            str(w["questions"]),
            "--benchmarks",
            "gsm8k",
            "--limit",
            "0",
        ],
        ["limit", ">= 1"],
    ),
    "eval: max-new-tokens 0": (
        lambda w: [
            "eval",
            "--model",
            str(w["pair"][1]),
            "--data",
            str(w["questions"]),
            "--benchmarks",
            "gsm8k",
            "--max-new-tokens",
            "0",
        ],
        ["max_new_tokens", ">= 1"],
    ),
    "eval: infinite temperature": (
        lambda w: [
            "eval",
            "--model",
            str(w["pair"][1]),
            "--data",
            str(w["questions"]),
            "--benchmarks",
            "gsm8k",
            "--temperatures",
            "inf",
        ],
        ["temperatures", "finite"],
    ),
    "eval: empty data file": (
        lambda w: [
            "eval",
            "--model",
            str(w["pair"][1]),
            "--data",
            str(w["root"] / "empty.jsonl"),
            "--benchmarks",
            "gsm8k",
            "--out",
            str(w["root"] / "ev"),
        ],
        ["empty.jsonl", "empty"],
    ),
    "eval: unknown benchmark": (
        lambda w: ["eval", "--model", str(w["pair"][1]), "--benchmarks", "aime26"],
        ["aime26"],
    ),
    "eval: cuda without CUDA": (
        lambda w: [
            "eval",
            "--model",
            str(w["pair"][1]),
            "--data",
            str(w["questions"]),
            "--benchmarks",
            "gsm8k",
            "--device",
            "cuda",
            "--out",
            str(w["root"] / "ev"),
        ],
        ["no CUDA device"],
    ),
    # analyze
    "analyze: foreign SQLite store": (
        lambda w: [
            "analyze",
            "--students",
            str(w["pair"][1]),
            "--store",
            str(w["root"] / "foreign.sqlite"),
            "--out",
            str(w["root"] / "an"),
        ],
        ["foreign.sqlite", "another program"],
    ),
    "analyze: unknown run": (
        lambda w: [
            "analyze",
            "--students",
            str(w["pair"][1]),
            "--store",
            str(w["store"]),
            "--runs",
            "nope",
            "--out",
            str(w["root"] / "an"),
        ],
        ["'nope'"],
    ),
    "analyze: threshold 0": (
        lambda w: [
            "analyze",
            "--students",
            str(w["pair"][1]),
            "--store",
            str(w["store"]),
            "--threshold",
            "0",
        ],
        ["threshold", "(0, 1]"],
    ),
    # experiment
    "experiment: missing file": (
        lambda w: ["experiment", str(w["root"] / "nope.yaml")],
        ["nope.yaml", "does not exist"],
    ),
    "experiment: not YAML": (
        lambda w: ["experiment", str(w["broken_yaml"])],
        ["broken.yaml", "not valid YAML"],
    ),
    "experiment: unknown key": (lambda w: ["experiment", str(w["bad_yaml"])], ["bad.yaml", "'tresholds'"]),
    "experiment: unknown arm kind": (
        lambda w: ["experiment", str(w["experiment"]), "--out", str(w["root"] / "exp")],
        ["arm 1", "'distill'", "teacher"],
    ),
    # demo
    "demo: zero seeds": (
        lambda w: ["demo", "--seeds", "0", "--out", str(w["root"] / "demo")],
        ["seeds", ">= 1"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clean_line(ws, capsys, case):
    build, needles = CASES[case]
    fails(ws, capsys, build(ws), *needles)


def test_eval_without_data_when_the_hub_is_unreachable(ws, capsys, monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = ["eval", "--model", str(ws["pair"][1]), "--benchmarks", "math500", "--out", str(ws["root"] / "ev")]
    fails(ws, capsys, args, "HuggingFaceH4/MATH-500", "HF_HUB_OFFLINE", "data_dir")


def test_read_only_store_fails_before_any_work(ws, capsys):
    with read_only(ws["store"]):
        fails(ws, capsys, gen(ws, "--samples", "3"), "s.sqlite", "read-only")
        fails(ws, capsys, ["select", "--store", str(ws["store"])], "s.sqlite", "read-only")


def test_read_only_store_folder_fails_before_any_work(ws, capsys):
    with read_only(ws["store"].parent):
        fails(ws, capsys, gen(ws, "--samples", "3"), "s.sqlite", "read-only")


def test_export_into_a_read_only_folder(ws, capsys):
    target = ws["root"] / "ro"
    target.mkdir(exist_ok=True)
    with read_only(target):
        fails(
            ws,
            capsys,
            ["export", "--store", str(ws["store"]), "--out", str(target / "x.jsonl")],
            "x.jsonl",
            "cannot write",
        )


def test_tiny_into_a_read_only_folder(ws, capsys):
    target = ws["root"] / "ro-tiny"
    target.mkdir(exist_ok=True)
    with read_only(target):
        fails(ws, capsys, ["tiny", str(target / "pair")], "ro-tiny", "cannot write")


def test_a_run_locked_by_another_process(ws, capsys):

    with TraceStore(ws["store"], create=False, write=False) as holder:
        holder.lock_run(
            "default"
        )  # flock: a second open file description conflicts, as another process would
        fails(ws, capsys, gen(ws, "--samples", "3"), "being written by another process")


def test_debug_shows_the_traceback_of_a_user_error(ws):
    from ownwords.errors import UserError

    with pytest.raises(UserError, match="policy"):
        main(["--debug", "select", "--store", str(ws["store"]), "--policy", "longest"])


def test_a_bug_is_not_reported_as_bad_input(ws, monkeypatch):
    """Only user errors become one line; an internal ValueError keeps its traceback."""
    import ownwords.stages.select

    def broken(*args, **kwargs):
        raise ValueError("an internal bug")

    monkeypatch.setattr(ownwords.stages.select, "judge", broken)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["select", "--store", str(ws["store"])])


def test_ctrl_c_is_one_line_saying_how_to_resume(ws, capsys, monkeypatch):
    import ownwords.stages.generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ownwords.stages.generate, "write_traces", interrupted)
    assert main(gen(ws, "--samples", "3")) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
