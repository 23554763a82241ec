"""`ownwords train` on a tiny student: the loss falls, the mask is the assistant turn, the model is reusable."""

import json
import os
import subprocess
import sys

import pytest
from datasets import Dataset

from ownwords.cli import main
from ownwords.stages.export import to_rows
from ownwords.stages.train import TrainConfig, check_loss_mask, train

ZEPHYR = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@pytest.fixture
def traces(tmp_path):
    samples = [
        dict(
            question=f"What is {a} + 3?" + " Please explain." * (a % 3),
            text=f"{a} + 3 = {a + 3}.\n</think>\nThe answer is \\boxed{{{a + 3}}}.",
            question_id=str(a),
            sample_index=0,
            n_tokens=20,
            n_fallbacks=2,
        )
        for a in range(12)
    ]
    path = tmp_path / "traces.jsonl"
    Dataset.from_list(
        to_rows(samples, {"system_prompt": "Think.", "generation_prefix": "<think>\n"})
    ).to_json(str(path))
    return path


def args(model, dataset, out, *extra):
    return [
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--output-dir",
        str(out),
        "--use-cpu",
        "--effective-batch-size",
        "4",
        *extra,
    ]


def test_loss_falls_and_the_model_is_saved(tiny_pair, traces, tmp_path):
    from ownwords.config import parse

    out = tmp_path / "sft"
    config = parse(
        TrainConfig, args(tiny_pair[1], traces, out, "--max-steps", "12", "--learning-rate", "3e-3"), "t"
    )
    assert config.gradient_accumulation_steps == 4 and not config.bf16 and config.adam_beta2 == 0.95
    summary = train(config)
    assert summary["final_loss"] < 0.7 * summary["first_loss"] and summary["steps"] == 12
    assert summary["tokens_seen"] > 0
    assert json.loads((out / "train_summary.json").read_text()) == summary
    assert (out / "loss.png").stat().st_size > 1000 and (out / "model.safetensors").exists()
    assert (out / "chat_template.jinja").exists() or "chat_template" in (
        out / "tokenizer_config.json"
    ).read_text()


@pytest.mark.parametrize("template", ["chatml", "zephyr"])
def test_mask_is_exactly_the_assistant_turn(tiny_pair, traces, tmp_path, template):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from ownwords.stages.train import load_traces

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair[1])
    if template == "zephyr":
        tokenizer.chat_template = ZEPHYR
    raw = load_traces(str(traces))
    config = TrainConfig(
        model=str(tiny_pair[1]), dataset=str(traces), output_dir=str(tmp_path / "o"), use_cpu=True
    )
    trainer = SFTTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_pair[1]),
        args=config,
        train_dataset=raw,
        processing_class=tokenizer,
    )
    check_loss_mask(trainer.train_dataset, raw, tokenizer, n=12)  # raises on a wrong mask
    row = trainer.train_dataset[0]
    supervised = tokenizer.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
    assert supervised.startswith(raw[0]["completion"][0]["content"])
    assert "What is 0 + 3?" not in supervised
    # a template that rewrites the assistant turn is caught, not trained on silently
    tokenizer.chat_template = ZEPHYR.replace("m['content']", "m['content'] | replace('The answer', 'So')")
    trainer = SFTTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_pair[1]),
        args=config,
        train_dataset=raw,
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="loss mask check failed"):
        check_loss_mask(trainer.train_dataset, raw, tokenizer, n=12)


def test_trained_student_generates(tiny_pair, traces, tmp_path, questions_file):
    out = tmp_path / "sft"
    assert main(["train", *args(tiny_pair[1], traces, out, "--max-steps", "2")]) == 0
    store = tmp_path / "s.sqlite"
    gen = [
        "generate",
        "--teacher",
        str(tiny_pair[0]),
        "--student",
        str(out),
        "--questions",
        str(questions_file),
        "--store",
        str(store),
        "--max-new-tokens",
        "8",
        "--limit",
        "2",
        "--no-progress",
    ]
    assert main(gen) == 0
    assert json.loads((tmp_path / "s.sqlite.default.summary.json").read_text())["samples"] == 2


def test_overlong_examples_are_dropped_with_a_count(tiny_pair, traces, tmp_path, caplog):
    out = tmp_path / "sft"
    assert main(["train", *args(tiny_pair[1], traces, out, "--max-steps", "1", "--max-length", "61")]) == 0
    assert "dropping 8 of 12 examples longer than max_length=61" in caplog.text
    assert json.loads((out / "train_summary.json").read_text())["examples"] == 4


def test_bad_input(tiny_pair, traces, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hello"}) + "\n")
    assert main(["train", *args(tiny_pair[1], bad, tmp_path / "o")]) == 2
    assert "expected 'prompt' and 'completion'" in capsys.readouterr().err
    assert main(["train", *args(tiny_pair[1], tmp_path / "missing.jsonl", tmp_path / "o")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rat: 0.1\n")
    assert main(["train", "--config", str(cfg), *args(tiny_pair[1], traces, tmp_path / "o")]) == 2
    assert "learning_rat" in capsys.readouterr().err
    assert main(["train", *args(tmp_path / "no-model", traces, tmp_path / "o")]) == 2
    assert "no-model" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_data_parallel_training(tiny_pair, traces, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "ownwords.cli",
        "train",
        *args(tiny_pair[1], traces, out, "--max-steps", "3"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3


def test_stdout_carries_the_summary_only(tiny_pair, traces, tmp_path, capfd):
    """`ownwords train ... | jq` works: the per-step loss goes to the progress bar (stderr), not stdout."""
    from ownwords.cli import main

    assert (
        main(
            [
                "train",
                *args(tiny_pair[1], traces, tmp_path / "sft", "--max-steps", "3", "--logging-steps", "1"),
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    assert json.loads(out)["steps"] == 3  # the whole of stdout is one JSON document
    assert "{'loss'" not in out and "loss=" in err


def test_mask_under_takes_the_loss_off_exactly_the_tokens_the_student_scores_under_it(tiny_pair, traces, tmp_path):
    """The mask arm's data: after TRL's tokenisation, the loss is off on the prompt and on exactly the
    completion tokens the base student gives under p_th -- checked against an independent scoring (one
    plain forward pass per example, no cache) of the same tokens."""
    import torch
    from trl import SFTTrainer

    from ownwords.models.loading import load_model
    from ownwords.stages.train import load_traces, mask_hard_tokens

    _, student = tiny_pair
    model, tokenizer = load_model(str(student), "cpu", "float32")
    config = TrainConfig(model=str(student), dataset=str(traces), output_dir=str(tmp_path / "m"), use_cpu=True,
                         mask_under=0.002, report_to=[])  # fmt: skip
    data = SFTTrainer(model, args=config, train_dataset=load_traces(str(traces)), processing_class=tokenizer).train_dataset
    masked = mask_hard_tokens(data, model, tokenizer, config)
    under = total = 0
    for before, after in zip(data, masked, strict=True):
        ids = torch.tensor([before["input_ids"]])
        with torch.no_grad():
            probs = model(ids).logits[0, :-1, : len(tokenizer)].softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
        for j, (label, new) in enumerate(zip(before["labels"], after["labels"], strict=True)):
            if label == -100:  # the prompt (and anything else TRL left out) stays out
                assert new == -100
                continue
            total += 1
            hard = j > 0 and probs[j - 1] < config.mask_under
            under += hard
            assert new == (-100 if hard else label), (j, float(probs[j - 1]))
    assert 0 < under < total  # the random tiny student finds some tokens hard, not all


def test_a_masked_training_reports_what_it_took_out(tiny_pair, traces, tmp_path):
    _, student = tiny_pair
    config = TrainConfig(model=str(student), dataset=str(traces), output_dir=str(tmp_path / "m"), use_cpu=True,
                         max_steps=2, effective_batch_size=4, mask_under=0.002, report_to=[], disable_tqdm=True)  # fmt: skip
    summary = train(config)
    assert 0 < summary.masked_tokens < summary.supervised_tokens
