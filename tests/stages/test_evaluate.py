"""`ownwords eval`: metrics against brute force, the benchmark registry, and end-to-end runs."""

import itertools
import json

import pytest
from helpers import SHARED_DATA, crash_after, shared_data

from ownwords.cli import main
from ownwords.data.benchmarks import REGISTRY, load_benchmark
from ownwords.data.store import TraceStore
from ownwords.models.loading import load_model
from ownwords.stages.evaluate import EvalConfig, evaluate, metrics, pass_at_k


@pytest.mark.parametrize("n", range(1, 7))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            outcomes = [True] * c + [False] * (n - c)
            subsets = list(itertools.combinations(outcomes, k))
            brute = sum(any(s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 4 samples"):
        pass_at_k(2, 1, 4)


def test_metrics_on_a_hand_made_verdict_matrix():
    verdicts = [[True, True, False, False], [False, False, False, False], [True, True, True, True]]
    answers = [["5", "5", "6", "7"], ["1", None, "2", "2"], ["3", "3", "3", "3"]]
    m = metrics(verdicts, answers)
    assert m["pass@1"] == pytest.approx(0.5)
    # per-question rates 0.5, 0, 1: sample std 0.5, standard error 0.5 / sqrt(3)
    assert m["pass@1_se"] == pytest.approx(0.5 / 3**0.5)
    assert m["pass@2"] == pytest.approx((1 - 1 / 6 + 0 + 1) / 3)
    assert m["pass@4"] == pytest.approx(2 / 3)
    assert m["maj@4"] == pytest.approx(2 / 3)  # "5" wins q1 (correct), "2" wins q2 (wrong), "3" wins q3
    assert m["no_answer"] == 1


EXPECTED = {"aime24": 30, "aime25": 30, "math500": 500, "gpqa_diamond": 198, "gsm8k": 1319, "amc23": 40}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_benchmarks_load_from_the_shared_copies(name):
    shared_data("math500.jsonl")  # skips with a reason when ../shared/data is absent
    config = EvalConfig(models=["m"], benchmarks=[name], data_dir=str(SHARED_DATA))
    questions = load_benchmark(name, config.data_paths()[name])
    assert len(questions) == EXPECTED[name]
    assert len({q.id for q in questions}) == len(questions)
    kind = REGISTRY[name].kind
    assert kind == {
        "aime24": "integer",
        "aime25": "integer",
        "gpqa_diamond": "choice",
        "gsm8k": "number",
    }.get(name, "math")
    if kind == "choice":
        letters = [q.answer for q in questions]
        assert set(letters) == set("ABCD") and max(letters.count(x) for x in "ABCD") < 0.4 * len(letters)
        assert all(f"({q.answer}) " in q.question for q in questions)
        assert load_benchmark(name, config.data_paths()[name])[0].answer == letters[0]  # fixed shuffle


@pytest.fixture
def bench_files(tmp_path):
    math = tmp_path / "math.jsonl"
    math.write_text(
        "".join(
            json.dumps({"problem": f"Compute {i} + 1.", "answer": str(i + 1), "unique_id": f"m{i}"}) + "\n"
            for i in range(4)
        )
    )
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(
        "".join(
            json.dumps({"question": f"Tom has {i} apples.", "answer": f"so\n#### {i}"}) + "\n"
            for i in range(4)
        )
    )
    return math, gsm


def eval_args(model, files, out, *extra):
    math, gsm = files
    return [
        "--model",
        str(model),
        "--benchmarks",
        "math500,gsm8k",
        "--data",
        f"math500={math}",
        f"gsm8k={gsm}",
        "--limit",
        "3",
        "--samples",
        "2",
        "--max-new-tokens",
        "6",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_end_to_end_writes_records_results_and_table(tiny_pair, bench_files, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", *eval_args(tiny_pair[1], bench_files, out, "--temperatures", "0.5,1.0")]) == 0
    assert "| math500 | gsm8k |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())[str(tiny_pair[1])]
    for bench in ("math500", "gsm8k"):
        assert set(results[bench]["temperatures"]) == {"0.5", "1.0"}
        cell = results[bench]["temperatures"]["0.5"]
        assert cell["questions"] == 3 and cell["samples"] == 2 and "pass@2" in cell and "maj@2" in cell
        assert 0 <= results[bench]["union_coverage"] <= 1
        records = (
            out / "tiny_pair" if False else out / next(p.name for p in out.iterdir() if p.is_dir())
        ) / "records"
        lines = (records / f"{bench}_T0.5.jsonl").read_text().splitlines()
        assert len(lines) == 6 and {"response", "answer", "correct", "gold"} <= set(json.loads(lines[0]))


def test_resume_after_interruption(tiny_pair, bench_files, tmp_path):
    from ownwords.config import parse

    full = evaluate(parse(EvalConfig, eval_args(tiny_pair[1], bench_files, tmp_path / "full"), "t"))
    with crash_after(4):
        evaluate(
            parse(
                EvalConfig, eval_args(tiny_pair[1], bench_files, tmp_path / "part", "--batch-size", "1"), "t"
            )
        )
    resumed = evaluate(parse(EvalConfig, eval_args(tiny_pair[1], bench_files, tmp_path / "part"), "t"))
    assert resumed == full
    tag = next(p.name for p in (tmp_path / "part").iterdir() if p.is_dir())
    for bench in ("math500", "gsm8k"):
        a = (tmp_path / "full" / tag / "records" / f"{bench}_T0.7.jsonl").read_text()
        assert (tmp_path / "part" / tag / "records" / f"{bench}_T0.7.jsonl").read_text() == a


def test_two_models_give_one_table_and_a_chart(tiny_pair, bench_files, tmp_path):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "eval",
                *eval_args(tiny_pair[1], bench_files, out),
                "--models",
                str(tiny_pair[1]),
                str(tiny_pair[0]),
            ]
        )
        == 0
    )
    table = (out / "table.md").read_text()
    assert "| teacher | 0.7 |" in table and "| student | 0.7 |" in table  # readable names, not paths
    assert str(tiny_pair[0]) not in table
    assert (out / "comparison.png").stat().st_size > 1000


def test_thinking_budget_closes_the_block(tiny_pair, bench_files, tmp_path):
    out = tmp_path / "budget"
    args = [
        "--model",
        str(tiny_pair[1]),
        "--benchmarks",
        "math500",
        "--data",
        str(bench_files[0]),
        "--limit",
        "3",
        "--samples",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--generation-prefix",
        "<think>\n",
        "--thinking-budget",
        "3",
        "--answer-tokens",
        "2",
    ]
    assert main(["eval", *args]) == 0
    tag = next(p.name for p in out.iterdir() if p.is_dir())
    cut = 0
    with TraceStore(out / tag / "records.sqlite") as store:
        (run,) = store.runs()  # math500@T=0.7@<weights fingerprint>
        assert run.startswith("math500@T=0.7@")
        for sample in store.samples(run):
            if sample["n_tokens"] > 3:  # cut at the budget: the block was closed, then at most 2 more tokens
                assert "</think>" in sample["text"] and sample["n_tokens"] <= 3 + 6 + 2
                cut += 1
    assert cut > 0


def test_bad_input(tiny_pair, tmp_path, capsys):
    assert main(["eval", "--model", str(tiny_pair[1]), "--benchmarks", "aime26"]) == 2
    assert "aime26" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "x"}) + "\n")
    assert (
        main(
            [
                "eval",
                "--model",
                str(tiny_pair[1]),
                "--benchmarks",
                "math500",
                "--data",
                str(bad),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "has no answer" in capsys.readouterr().err


def test_known_responses_give_known_pass_at_k_and_majority(tiny_pair, bench_files, tmp_path):
    """End to end through `ownwords eval` and the grader, on responses whose correctness is set here
    (written into the records store, which a re-run then grades): a grader that is always wrong, or
    a metric that is off, changes these numbers."""
    import sqlite3

    math, _ = bench_files
    args = [
        "--model",
        str(tiny_pair[1]),
        "--benchmarks",
        "math500",
        "--data",
        str(math),
        "--limit",
        "3",
        "--samples",
        "4",
        "--max-new-tokens",
        "2",
        "--out",
        str(tmp_path / "ev"),
        "--no-progress",
    ]
    assert main(["eval", *args]) == 0
    responses = {  # gold answers: m0 -> 1, m1 -> 2, m2 -> 3
        "m0": ["so \\boxed{1}", "\\boxed{1}.", "\\boxed{5}", "I give up"],  # 2 of 4, majority right
        "m1": ["\\boxed{7}", "\\boxed{7}", "\\boxed{2}", "\\boxed{7}"],  # 1 of 4, majority wrong
        "m2": ["\\boxed{\\frac{6}{2}}"] * 4,  # 4 of 4, equal by value, not by text
    }
    (records,) = (tmp_path / "ev").glob("*/records.sqlite")
    with sqlite3.connect(records) as db:
        for qid, texts in responses.items():
            for i, text in enumerate(texts):
                db.execute(
                    "UPDATE samples SET text = ? WHERE question_id = ? AND sample_index = ?", (text, qid, i)
                )
    assert main(["eval", *args]) == 0
    (result,) = json.loads((tmp_path / "ev" / "results.json").read_text()).values()
    cell = result["math500"]["temperatures"]["0.7"]
    assert cell["pass@1"] == pytest.approx((2 / 4 + 1 / 4 + 1) / 3)
    assert cell["pass@2"] == pytest.approx((1 - 1 / 6 + 1 - 3 / 6 + 1) / 3)  # 1 - C(n-c, 2) / C(4, 2)
    assert cell["pass@4"] == pytest.approx(1.0)
    assert cell["maj@4"] == pytest.approx(2 / 3)
    assert cell["no_answer"] == 1
    assert result["math500"]["union_coverage"] == 1.0


def test_new_weights_at_the_same_path_are_evaluated_again(tiny_pair, bench_files, tmp_path):
    """Records are keyed to the weights evaluated: re-saved weights at the same path are a new run,
    never answered from the old records."""
    import shutil

    from ownwords.data.store import TraceStore
    from ownwords.models.tiny import STUDENT, build_model

    model_dir = tmp_path / "student"
    shutil.copytree(tiny_pair[1], model_dir)
    math, _ = bench_files
    args = [
        "--model",
        str(model_dir),
        "--benchmarks",
        "math500",
        "--data",
        str(math),
        "--limit",
        "2",
        "--max-new-tokens",
        "5",
        "--out",
        str(tmp_path / "ev"),
        "--no-progress",
        "--temperatures",
        "0",
    ]
    assert main(["eval", *args]) == 0
    model, tok = load_model(str(model_dir), "cpu", "float32")
    build_model(STUDENT, tok, seed=123).save_pretrained(model_dir)  # other weights, same path
    assert main(["eval", *args]) == 0
    (records,) = (tmp_path / "ev").glob("*/records.sqlite")
    with TraceStore(records) as store:
        runs = sorted(store.runs())
        assert len(runs) == 2 and all(r.startswith("math500@T=0.0@") for r in runs)
        texts = [[s["token_ids"] for s in store.samples(r)] for r in runs]
    assert texts[0] != texts[1]  # greedy decoding of different weights: the new run really ran


def test_seeds_of_one_arm_are_one_bar():
    from ownwords.stages.evaluate import group_seeds

    models = ["/m/base", "/m/sft-rsd-seed0", "/m/sft-rsd-seed1", "/m/sft-teacher-seed0", "Qwen/Qwen3-0.6B"]
    assert group_seeds(models) == {
        "base": ["/m/base"],
        "sft-rsd": ["/m/sft-rsd-seed0", "/m/sft-rsd-seed1"],
        "sft-teacher": ["/m/sft-teacher-seed0"],
        "Qwen3-0.6B": ["Qwen/Qwen3-0.6B"],
    }


def test_an_edited_benchmark_file_asks_the_changed_question_again(tiny_pair, bench_files, tmp_path):
    """Responses are kept for the questions asked the same way; a changed question (or gold) is asked
    again, never graded against the old response."""
    from ownwords.config import parse

    math, gsm = tmp_path / "math.jsonl", tmp_path / "gsm.jsonl"
    math.write_text(bench_files[0].read_text())
    gsm.write_text(bench_files[1].read_text())
    out = tmp_path / "ev"

    def run():
        evaluate(parse(EvalConfig, eval_args(tiny_pair[1], (math, gsm), out), "t"))
        (records,) = out.glob("*/records.sqlite")
        with TraceStore(records, create=False, write=False) as store:
            (run,) = [r for r in store.runs() if r.startswith("gsm8k")]
            return {(s["question_id"], s["sample_index"]): (s["question"], s["created"]) for s in store.samples(run)}

    before = run()
    rows = [json.loads(line) for line in gsm.read_text().splitlines()]
    rows[1]["question"] = "Tom has 100 apples."
    rows[1]["answer"] = "so\n#### 100"
    gsm.write_text("".join(json.dumps(r) + "\n" for r in rows))
    after = run()
    assert set(after) == set(before)
    for (qid, i), (question, made) in after.items():
        if qid == "1":
            assert question.startswith("Tom has 100 apples") and made != before[(qid, i)][1]
        else:
            assert (question, made) == before[(qid, i)], "an unchanged question was asked again"
    (graded,) = out.glob("*/records/gsm8k_T0.7.jsonl")
    golds = {json.loads(line)["question_id"]: json.loads(line)["gold"] for line in graded.read_text().splitlines()}
    assert golds["1"] == "so\n#### 100"


def test_models_whose_names_look_alike_get_their_own_folders(tiny_pair, bench_files, tmp_path):
    import shutil

    from ownwords.stages.evaluate import model_tag

    assert model_tag("x/m") != model_tag("x__m") and model_tag("x/m").startswith("m-")
    (tmp_path / "x").mkdir()
    shutil.copytree(tiny_pair[1], tmp_path / "x" / "m")
    shutil.copytree(tiny_pair[1], tmp_path / "x__m")
    out = tmp_path / "ev"
    for model in (tmp_path / "x" / "m", tmp_path / "x__m"):
        assert main(["eval", *eval_args(model, bench_files, out)]) == 0
    assert len([p for p in out.iterdir() if p.is_dir()]) == 2


def test_duplicate_question_ids_in_eval_data_are_one_clear_line(tiny_pair, tmp_path, capsys):
    data = tmp_path / "dup.jsonl"
    data.write_text("".join(json.dumps({"id": "q1", "question": f"{i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(3)))
    args = ["eval", "--model", str(tiny_pair[1]), "--benchmarks", "gsm8k", "--data", str(data), "--out", str(tmp_path / "o"),
            "--max-new-tokens", "4", "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "error" in x]
    assert "question id 'q1' appears 3 times" in line and "Traceback" not in err
    assert not (tmp_path / "o").exists()
