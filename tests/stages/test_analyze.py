"""`ownwords analyze` on RSD and teacher-only runs of the tiny pair."""

import json

import pytest
from datasets import Dataset
from helpers import argv

from ownwords.cli import main
from ownwords.models.loading import load_model
from ownwords.stages.analyze import AnalyzeConfig, analyze, score_set, store_sets


@pytest.fixture(scope="module")
def store(tiny_pair, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("an")
    questions = tmp / "q.jsonl"
    questions.write_text(
        "".join(json.dumps({"question": f"What is {a} + 2?", "answer": str(a + 2)}) + "\n" for a in range(3))
    )
    path = tmp / "s.sqlite"
    # p_th 0.003 and 20 trials: enough accepted tokens even for the random tiny pair
    for run, threshold in (("rsd", "0.003"), ("teacher", "0")):
        assert (
            main(
                [
                    "generate",
                    *argv(
                        tiny_pair,
                        questions,
                        path,
                        "--run",
                        run,
                        "--threshold",
                        threshold,
                        "--max-new-tokens",
                        "24",
                        "--trials",
                        "20",
                    ),
                ]
            )
            == 0
        )
    return path


def test_rsd_traces_have_no_accepted_token_under_the_threshold(tiny_pair, store, tmp_path):
    student, teacher = str(tiny_pair[1]), str(tiny_pair[0])
    config = AnalyzeConfig(
        students=[student, teacher], store=str(store), threshold=0.003, out=str(tmp_path / "a")
    )
    analysis = analyze(config)
    rsd = analysis["sets"]["rsd"][student]
    assert rsd["accepted_under_threshold"] == 0.0  # every accepted token had a(x) >= p_th when generated
    assert (
        analysis["sets"]["teacher"][student]["under_threshold"] > 0.05
    )  # the teacher's words are not the student's
    assert (
        analysis["sets"]["rsd"][teacher]["accepted_under_threshold"] is None
    )  # records only apply to their own student
    assert set(analysis["matrix"]) == {"rsd", "teacher"} and set(analysis["matrix"]["rsd"]) == {
        student,
        teacher,
    }
    assert sum(rsd["histogram_log10"]["counts"]) == rsd["tokens"] and len(rsd["low_share_by_position"]) == 10
    out = tmp_path / "a"
    for name in ("histogram.png", "position.png", "matrix.png"):
        assert (out / name).stat().st_size > 5000
    page = (out / "traces.html").read_text()
    assert page.count("title='p=") >= rsd["tokens"] // 2 and "class='t fb'" in page
    report = (out / "report.md").read_text()
    assert "| rsd |" in report and "matrix.png" in report
    assert json.loads((out / "analysis.json").read_text())["threshold"] == 0.003


def test_scores_equal_the_recorded_acceptance_scores(tiny_pair, store):
    student = str(tiny_pair[1])
    model, tokenizer = load_model(student, "cpu", "float32")
    traces = store_sets(str(store), ["rsd"], None)["rsd"]
    config = AnalyzeConfig(
        students=[student], store=str(store), batch_size=4, chunk=7
    )  # odd chunks on purpose
    for trace, scored in zip(traces, score_set(traces, model, tokenizer, student, config)):
        assert scored.stored and scored.ids == trace.token_ids  # its own tokens, end-of-sequence included
        assert scored.probs == pytest.approx(trace.scores, abs=1e-5, rel=1e-4)


def test_exported_dataset_and_bad_input(tiny_pair, store, tmp_path, capsys):
    rows = [
        {
            "prompt": [{"role": "user", "content": "What is 1 + 1?"}],
            "completion": [{"role": "assistant", "content": "<think>\n1 + 1 = 2</think> \\boxed{2}"}],
        }
    ]
    data = tmp_path / "d.jsonl"
    Dataset.from_list(rows).to_json(str(data))
    student = str(tiny_pair[1])
    analysis = analyze(AnalyzeConfig(students=[student], datasets=[str(data)], out=str(tmp_path / "b")))
    assert analysis["sets"]["d"][student]["tokens"] > 5
    assert main(["analyze", "--students", student, "--datasets", str(data), "--text-field", "trace"]) == 2
    assert "no column 'trace'" in capsys.readouterr().err
    assert main(["analyze", "--students", student, "--store", str(store), "--runs", "nope"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["analyze", "--students", student]) == 2
    assert "nothing to analyse" in capsys.readouterr().err


def test_the_trace_view_pages_through_every_question_with_its_traces_side_by_side(tiny_pair, store, tmp_path):
    from ownwords.data.store import TraceStore

    with TraceStore(store) as s:
        samples = list(s.samples("rsd"))
        s.write_selection(
            "rsd", [(r["question_id"], r["sample_index"], "chosen", None, "7", 1) for r in samples], {}, {}
        )
    analyze(AnalyzeConfig(students=[str(tiny_pair[1])], store=str(store), out=str(tmp_path / "v")))
    page = (tmp_path / "v" / "traces.html").read_text()
    sections = page.split("<section class='q'>")[1:]
    assert len(sections) == len({r["question_id"] for r in samples})  # every question, not 12 traces
    for section in sections:  # the same question's RSD and teacher traces on one page
        assert "<h3>rsd &middot;" in section and "<h3>teacher &middot;" in section
    assert "extracted answer: <b>7</b> <span class='ok'>correct</span> &middot; selection: chosen" in page
    assert "selection: not selected yet" in page  # the teacher run has no selection
    assert "<span class='prefix'>&lt;think&gt;" in page and "gold answer: <b>" in page
    assert "id='pick'" in page and "pages.forEach" in page


def test_identical_traces_score_alike_whoever_generated_them(tiny_pair, store, tmp_path):
    """The same traces as two runs, one made by the student at another path (a copied folder): every
    cell is scored on the same tokens, the end-of-sequence token included."""
    import shutil

    from ownwords.data.store import TraceStore

    student, copy = str(tiny_pair[1]), tmp_path / "student-copy"
    shutil.copytree(student, copy)
    path = tmp_path / "two.sqlite"
    with TraceStore(store) as source, TraceStore(path) as target:
        config, samples = source.runs()["rsd"], list(source.samples("rsd"))
        for run, who in (("mine", student), ("copied", str(copy))):
            target.open_run(run, config | {"student": who})
            for s in samples:
                target.add(run, {k: v for k, v in s.items() if k not in ("run", "created")})
    analysis = analyze(AnalyzeConfig(students=[student], store=str(path), threshold=0.003, out=str(tmp_path / "a")))
    mine, copied = analysis["sets"]["mine"][student], analysis["sets"]["copied"][student]
    assert mine["tokens"] == copied["tokens"] == sum(len(s["token_ids"]) for s in samples)
    assert mine["under_threshold"] == copied["under_threshold"]
    assert mine["accepted_under_threshold"] == copied["accepted_under_threshold"] == 0.0  # the same acceptor


def test_multi_byte_characters_are_never_shown_as_replacement_characters(tiny_pair, tmp_path):
    from ownwords.render.text import token_pieces

    _, tokenizer = load_model(str(tiny_pair[1]), "cpu", "float32")
    text = "so the answer is 🙂 café, 42 €"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)  # one by one they are split characters
    pieces = token_pieces(ids, tokenizer)
    assert len(pieces) == len(ids) and "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    rows = [{"prompt": [{"role": "user", "content": "Say it."}],
             "completion": [{"role": "assistant", "content": text}]}]  # fmt: skip
    data = tmp_path / "emoji.jsonl"
    Dataset.from_list(rows).to_json(str(data))
    analysis = analyze(AnalyzeConfig(students=[str(tiny_pair[1])], datasets=[str(data)], out=str(tmp_path / "e")))
    assert "\ufffd" not in (tmp_path / "e" / "traces.html").read_text()
    low = analysis["sets"]["emoji"][str(tiny_pair[1])]["top_low_tokens"]
    assert low and not any("\ufffd" in t for t, _ in low)


def test_sets_that_share_a_name_are_kept_apart(tiny_pair, store, tmp_path, caplog):
    import logging

    rows = [{"prompt": [{"role": "user", "content": "What is 1 + 1?"}],
             "completion": [{"role": "assistant", "content": "1 + 1 = 2, \\boxed{2}"}]}]  # fmt: skip
    paths = []
    for folder in ("exp1", "exp2"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "rsd.jsonl")
        Dataset.from_list(rows * (1 + len(paths))).to_json(str(paths[-1]))
    with caplog.at_level(logging.WARNING):
        analysis = analyze(AnalyzeConfig(students=[str(tiny_pair[1])], store=str(store), runs=["rsd"],
                                         datasets=[str(p) for p in paths], out=str(tmp_path / "n")))  # fmt: skip
    sets = analysis["sets"]
    assert set(sets) == {"rsd", "exp1/rsd", "exp2/rsd"}
    assert [sets[n][str(tiny_pair[1])]["traces"] for n in ("exp1/rsd", "exp2/rsd")] == [2, 3]
    assert "already named 'rsd'" in caplog.text


def test_the_trace_view_shows_every_student_and_says_what_it_leaves_out(tiny_pair, store, tmp_path):
    student, teacher = str(tiny_pair[1]), str(tiny_pair[0])
    analyze(AnalyzeConfig(students=[student, teacher], store=str(store), runs=["rsd"], html_traces=2,
                          out=str(tmp_path / "v")))  # fmt: skip
    page = (tmp_path / "v" / "traces.html").read_text()
    assert page.count("<small>under student</small>") == 2 and page.count("<small>under teacher</small>") == 2
    assert "Shown: rsd: the first 2 of 6 traces" in page
    with pytest.raises(ValueError, match="html_traces is -1; expected an integer >= 0"):
        AnalyzeConfig(students=[student], store=str(store), html_traces=-1)
