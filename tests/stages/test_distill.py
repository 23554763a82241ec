"""`ownwords distill`: on-policy distillation (TRL's DistillationTrainer) trains the student, and a pair
without one vocabulary is refused."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ownwords.cli import main


def test_a_few_steps_of_on_policy_distillation_change_the_student(demo_models, task, tmp_path, capsys):
    teacher, student = demo_models
    out = tmp_path / "onpolicy"
    assert main(["distill", "--model", str(student), "--teacher", str(teacher), "--questions", str(task / "train.jsonl"),
                 "--output-dir", str(out), "--max-steps", "3", "--effective-batch-size", "4",
                 "--per-device-train-batch-size", "4", "--max-completion-length", "32", "--learning-rate", "1e-3",
                 "--generation-prefix", "<think>\\n", "--use-cpu", "--disable-tqdm", "true"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)  # stdout: the summary only
    assert summary["steps"] == 3 and summary["examples"] == 12 and summary["final_loss"] is not None
    before, after = load_file(student / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (out / "loss.png").is_file() and (out / "tokenizer.json").is_file()


def test_a_pair_without_one_vocabulary_is_refused(tiny_pair, greek_model, questions_file, tmp_path, capsys):
    _, student = tiny_pair
    code = main(["distill", "--model", str(student), "--teacher", str(greek_model), "--questions",
                 str(questions_file), "--output-dir", str(tmp_path / "o"), "--use-cpu"])  # fmt: skip
    assert code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert line.startswith("ownwords distill: error: on-policy distillation needs teacher and student to share")


@pytest.mark.parametrize("missing", ["--teacher", "--questions"])
def test_required_options(tiny_pair, questions_file, tmp_path, capsys, missing):
    teacher, student = tiny_pair
    argv = {"--model": str(student), "--teacher": str(teacher), "--questions": str(questions_file),
            "--output-dir": str(tmp_path / "o")}  # fmt: skip
    del argv[missing]
    assert main(["distill", *[x for kv in argv.items() for x in kv]]) == 2
    assert f"{missing[2:]} is required" in capsys.readouterr().err
