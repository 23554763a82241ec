"""`ownwords probe`: vocabulary, templates, acceptance (predicted vs real), memory and the verdict."""

import json

import pytest

from ownwords.cli import main
from ownwords.data.questions import Question
from ownwords.decoding.engine import Engine
from ownwords.models.loading import load_model
from ownwords.stages.probe import probe_pair, ratio
from ownwords.stages.probe_config import ProbeConfig

QUESTIONS = [Question(str(i), f"What is {i} + {i + 1}?", str(2 * i + 1)) for i in range(4)]


def config(tmp_path, **changes) -> ProbeConfig:
    settings = dict(teacher="t", student="s", questions="q", out=str(tmp_path / "probe"), sample_questions=4,
                    probe_tokens=6, batch_size=4, max_new_tokens=64, max_length=256, generation_prefix="<think>\n",
                    progress=False)  # fmt: skip
    return ProbeConfig(**(settings | changes))


def loaded(tiny_pair):
    teacher, student = tiny_pair
    return (*load_model(str(student), "cpu", "float32"), *load_model(str(teacher), "cpu", "float32"))


def test_the_paper_pair_shares_151665_tokens_and_four_are_qwen3_only(tmp_path):
    from realvocab import QWEN3_ONLY, WIDTH, qwen_tokenizer, random_model

    qwen3, qwen25 = qwen_tokenizer("qwen3"), qwen_tokenizer("qwen2.5")
    student, teacher = random_model(qwen3, WIDTH["qwen3"], seed=1), random_model(qwen25, WIDTH["qwen2.5"], seed=2)
    result = probe_pair(config(tmp_path, sample_questions=2, probe_tokens=3, batch_size=2), student, qwen3, teacher,
                        qwen25, QUESTIONS)  # fmt: skip
    v = result.vocabulary
    assert (v["shared"], v["student_only"], v["teacher_only"]) == (151_665, 4, 0)
    assert (v["student_padded_columns"], v["teacher_padded_columns"]) == (151_936 - 151_669, 152_064 - 151_665)
    assert list(v["student_only_as_teacher_tokens"]) == QWEN3_ONLY
    assert "".join(v["student_only_as_teacher_tokens"]["<think>"]).replace("Ġ", " ") == "<think>"
    assert result.verdict == "OK" and result.templates["same"]
    page = (tmp_path / "probe" / "probe.md").read_text()
    assert "| only on this side | 4 | 0 |" in page and "151665 tokens" in page
    assert json.loads((tmp_path / "probe" / "probe.json").read_text())["vocabulary"]["shared"] == 151_665


def test_a_template_mismatch_shows_the_difference(tmp_path, tiny_pair):
    student, s_tok, teacher, t_tok = loaded(tiny_pair)
    t_tok.chat_template = t_tok.chat_template.replace("<|im_start|>assistant", "<|im_start|>model")
    result = probe_pair(config(tmp_path), student, s_tok, teacher, t_tok, QUESTIONS)
    assert not result.templates["same"]
    assert "-<|im_start|>model" in result.templates["diff"] and "+<|im_start|>assistant" in result.templates["diff"]
    assert any("chat templates" in w for w in result.warnings) and not result.blocked
    assert "+<|im_start|>assistant" in (tmp_path / "probe" / "probe.md").read_text()


def test_a_batch_that_cannot_fit_is_reported_before_any_generation(tmp_path, tiny_pair, monkeypatch):
    student, s_tok, teacher, t_tok = loaded(tiny_pair)
    monkeypatch.setattr("ownwords.stages.probe.free_memory", lambda device: 2**20)  # 1 MiB free

    def generate(*args, **kwargs):
        raise AssertionError("the probe generated for a batch that cannot fit")

    monkeypatch.setattr(Engine, "run", generate)
    result = probe_pair(config(tmp_path, batch_size=64, max_length=4096, max_new_tokens=4000), student, s_tok, teacher,
                        t_tok, QUESTIONS)  # fmt: skip
    assert result.blocked and "KV cache of 64 rows" in result.verdict and "--batch-size" in result.verdict
    assert result.cost["memory"]["needed"] > 2**20 and not result.acceptance


def test_a_cross_family_pair_under_the_floor_is_blocked_and_exits_non_zero(tmp_path, tiny_pair, greek_model,
                                                                           questions_file, capsys):  # fmt: skip
    _, student = tiny_pair
    out = tmp_path / "probe"
    code = main(["probe", "--teacher", str(greek_model), "--student", str(student), "--questions", str(questions_file),
                 "--out", str(out), "--probe-tokens", "4", "--no-progress"])  # fmt: skip
    page = capsys.readouterr().out
    assert code == 1
    assert "**Verdict: blocked: the tokenizers share" in page and "--min-vocab-overlap" in page
    assert json.loads((out / "probe.json").read_text())["blocked"] is True


def test_the_cli_probes_a_pair_that_works(tmp_path, tiny_pair, questions_file, capsys):
    teacher, student = tiny_pair
    code = main(["probe", "--teacher", str(teacher), "--student", str(student), "--questions", str(questions_file),
                 "--out", str(tmp_path / "p"), "--probe-tokens", "4", "--sample-questions", "2", "--batch-size", "2",
                 "--speculate", "2", "--no-progress"])  # fmt: skip
    page = capsys.readouterr().out
    assert code == 0 and "**Verdict: OK**" in page
    assert "plain" in page and "speculative" in page and "on 1 worker(s)" in page


def test_the_ratio_estimator_and_its_error():
    # rate 4 / 4; residuals 1 - 2 and 3 - 2; sqrt((1 + 1) * 2 / (2 - 1)) / 4 positions
    assert ratio([1.0, 3.0], [2, 2]) == (1.0, pytest.approx(0.5))
    rate, error = ratio([2.0, 2.0, 2.0], [4, 4, 4])
    assert rate == 0.5 and error == 0.0


def test_the_predicted_fallback_rate_against_a_real_rsd_run_on_the_demo_pair(tmp_path, demo_models):
    """The prediction (the student scoring teacher-only traces: the mean of (1 - T(A))^N at each position)
    against a real RSD run's fallbacks at p_th 0.01, 64 traces each. Tolerance: 4 standard errors of the
    difference (each the ratio estimator's over traces: a trace's positions are not independent, its
    traces are), so a correct estimate fails about once in 16,000 runs.
    * At the first token both runs have the same prefix, the prompt: there the estimate must hold.
    * At RSD's own positions the same expectation must hold over the whole run.
    * Over the whole run the two differ on this pair: the demo's terse student, once it writes a token,
      takes RSD's traces off the verbose teacher's (74% expected from teacher traces, 39% real), and the
      probe says so rather than report the estimate as the rate."""
    from ownwords.data.questions import load_questions
    from ownwords.demo import write_split

    teacher, student = demo_models
    write_split(tmp_path / "questions.jsonl", 64, seed=3)
    questions = load_questions(str(tmp_path / "questions.jsonl"))
    student, s_tok, teacher, t_tok = (*load_model(str(student), "cpu", "float32"),
                                      *load_model(str(teacher), "cpu", "float32"))  # fmt: skip
    settings = config(tmp_path, sample_questions=64, probe_tokens=96, temperature=0.7, top_p=0.95,
                      system_prompt="", threshold=0.01, batch_size=32)  # fmt: skip
    result = probe_pair(settings, student, s_tok, teacher, t_tok, questions)
    a = result.acceptance
    real, first = a["real_rsd"], a["first_token"]
    assert real["tokens"] > 1000 and 0.05 < real["fallback_rate"] < 0.95 and first["samples"] == 64
    p = first["expected"]
    assert abs(first["fallback_rate"] - p) <= 4 * max(p * (1 - p) / 64, 1 / 64**2) ** 0.5
    assert abs(real["at_own_positions"] - real["fallback_rate"]) <= 4 * real["error"]
    gap = a["expected_fallback_rate"] - real["fallback_rate"]
    assert gap > 4 * (a["expected_error"] ** 2 + real["error"] ** 2) ** 0.5
    assert any("leave the teacher's" in w for w in result.warnings)
    shares = [r["teacher_tokens_under"] for r in a["by_threshold"].values()]
    assert shares == sorted(shares)  # a higher p_th puts more teacher tokens under it
