"""Real pretrained weights through the whole loop: SmolLM2-135M-Instruct (a GGUF file from a registry
package) as the teacher, and a student pruned from it (8 of its 30 layers dropped, as Minitron students are made).
Slow: CI runs them (with the registry package); without it they skip."""

import json

import pytest
from helpers import shared_data, two_sample_chi_square
from realweights import smollm2_gguf

from ownwords.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(teacher folder, pruned student folder): the GGUF converted once, then 22 of its 30 layers kept (0-11 and 20-29)."""
    from ownwords.models.gguf import gguf_folder
    from ownwords.models.prune import prune_layers

    teacher = gguf_folder(str(smollm2_gguf()))
    student = prune_layers(teacher, str(tmp_path_factory.mktemp("pruned") / "student"), "0-11,20-29")
    return teacher, str(student)


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory):
    rows = [json.loads(line) for line in shared_data("gsm8k_test.jsonl").read_text().splitlines()[:6]]
    path = tmp_path_factory.mktemp("gsm") / "gsm8k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_gguf_file_is_a_model_everywhere_and_converted_once(pair):
    from ownwords.models.gguf import gguf_folder
    from ownwords.models.loading import load_model, model_fingerprint

    gguf = str(smollm2_gguf())
    assert gguf_folder(gguf) == pair[0]  # cached: the second call converts nothing
    model, tokenizer = load_model(gguf, "cpu", "float32")  # any model argument may be the file itself
    assert type(model).__name__ == "LlamaForCausalLM" and 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert len(tokenizer) == 49152 and tokenizer.chat_template
    assert model_fingerprint(gguf) != gguf  # by content, not by path
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)  # fmt: skip
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False)
    assert "5" in tokenizer.decode(out[0, prompt["input_ids"].shape[1] :])


def test_the_pruned_student_shares_the_teachers_vocabulary_and_is_weaker(pair):
    from ownwords.models.loading import load_pair

    student, s_tok, teacher, alignment = load_pair(pair[0], pair[1], "cpu", "float32")
    assert alignment.identity and student.config.num_hidden_layers == 22 and teacher.config.num_hidden_layers == 30


def test_rsd_traces_of_real_gsm8k_questions_through_select_and_analyze(pair, gsm8k, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    base = ["--teacher", pair[0], "--student", pair[1], "--questions", str(gsm8k), "--store", str(store),
            "--samples", "2", "--max-new-tokens", "160", "--batch-size", "12", "--no-progress", "--threads", "2"]  # fmt: skip
    assert main(["generate", *base, "--threshold", "0.01", "--run", "rsd"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["fallback_rate"] < 1
    assert main(["select", "--store", str(store), "--run", "rsd", "--no-require-correct"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] == 12 and sum(report["dropped"].values()) + report["samples_passed"] == 12
    assert main(["analyze", "--store", str(store), "--students", pair[1], "--out", str(tmp_path / "a")]) == 0
    analysis = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert analysis["sets"]["rsd"][pair[1]]["accepted_under_threshold"] == 0.0
    page = (tmp_path / "a" / "traces.html").read_text()
    assert "\ufffd" not in page
    with capsys.disabled():
        print(f"\nreal pair, p_th 0.01: fallback rate {summary['fallback_rate']:.3f}, acceptance {1 - summary['fallback_rate']:.3f}")


def test_multi_byte_text_is_shown_whole_under_a_real_tokenizer(pair):
    from transformers import AutoTokenizer

    from ownwords.render.text import token_pieces

    tokenizer = AutoTokenizer.from_pretrained(pair[0])
    text = "so the answer is 🙂 café, 12 € — naïve ½"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)
    pieces = token_pieces(ids, tokenizer)
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_speculative_and_plain_rsd_agree_with_real_weights(pair):
    """Tokens 2 and 3 of 800 samples per mode (the first comes from the same step in both):
    two-sample chi-square per prefix, false-alarm rate 1e-3."""
    from ownwords.data.questions import build_prompt
    from ownwords.decoding.engine import RSD, Engine, Request, Sampling
    from ownwords.models.loading import load_pair
    from ownwords.rsd.sampling import AcceptanceRule

    student, s_tok, teacher, alignment = load_pair(pair[0], pair[1], "cpu", "float32")
    prompt = build_prompt(s_tok, "Tom has 3 apples and buys 4 more. How many apples does he have?")
    n, runs = 800, []
    for k in (0, 2):
        engine = Engine(student, s_tok, teacher, alignment, Sampling(1.0, 0, 1.0), RSD(AcceptanceRule("threshold", 0.01), 3),
                        max_new_tokens=3, batch_size=200, speculate=k)  # fmt: skip
        runs.append(list(engine.run([Request("q", i, prompt, seed=k * n + i) for i in range(n)])))
        if k:
            assert 0 < engine.stats["accepted"] <= engine.stats["drafted"]
    for position in (1, 2):
        groups: dict[tuple, tuple[list, list]] = {}
        for side, traces in enumerate(runs):
            for t in traces:
                groups.setdefault(tuple(t.token_ids[:position]), ([], []))[side].append(t.token_ids[position])
        p, dof = two_sample_chi_square([g for g in groups.values() if min(map(len, g)) >= 20])
        print(f"\nreal pair, plain vs speculative K=2, token {position + 1}: p = {p:.3f} over {dof} dof")
        assert dof >= 3 and p > 1e-3, f"token {position + 1}: p = {p:.2e} over {dof} degrees of freedom"


def test_eval_on_gsm8k_and_a_round_trip_gguf_to_training_to_generation(pair, gsm8k, tmp_path, capsys):
    from datasets import Dataset

    gguf = str(smollm2_gguf())
    out = tmp_path / "ev"
    assert main(["eval", "--model", gguf, "--benchmarks", "gsm8k", "--data", str(gsm8k), "--limit", "3",
                 "--max-new-tokens", "96", "--temperatures", "0", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    (result,) = json.loads((out / "results.json").read_text()).values()
    assert result["gsm8k"]["temperatures"]["0.0"]["questions"] == 3
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
             "completion": [{"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}."}]}
            for i in range(8)]  # fmt: skip
    data = tmp_path / "d.jsonl"
    Dataset.from_list(rows).to_json(str(data))
    trained = tmp_path / "trained"
    assert main(["train", "--model", gguf, "--dataset", str(data), "--output-dir", str(trained), "--max-steps", "3",
                 "--effective-batch-size", "4", "--use-cpu", "--max-length", "256", "--disable-tqdm", "true"]) == 0  # fmt: skip
    capsys.readouterr()
    store = tmp_path / "t.sqlite"
    assert main(["generate", "--teacher", gguf, "--student", str(trained), "--questions", str(gsm8k), "--limit", "1",
                 "--max-new-tokens", "8", "--store", str(store), "--no-progress"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["samples"] == 1
