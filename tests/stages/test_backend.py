"""--backend vllm where it cannot work is one clear line, found before anything is read or written:
an RSD run (both models at every token), the authors' top-k lists, vLLM not installed. (Against real
vLLM: tests/decoding/test_vllm.py; in an experiment: tests/experiment/test_controls.py.)"""

import importlib.util

import pytest

from ownwords.cli import main

NO_VLLM = importlib.util.find_spec("vllm") is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--threshold", "0.01"], "this run is RSD .* use --backend hf"),
        (["--threshold", "0", "--logprobs", "raw", "--top-k", "20"], "logprobs 'raw' emulates"),
    ],
)
def test_vllm_for_what_is_not_plain_sampling_is_one_line(tiny_pair, questions_file, tmp_path, capsys, flags, message):
    teacher, student = map(str, tiny_pair)
    argv = ["generate", "--teacher", teacher, "--student", student, "--questions", str(questions_file), "--store",
            str(tmp_path / "s.sqlite"), "--backend", "vllm", *flags]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and pytest.importorskip("re").search(message, err)
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
@pytest.mark.parametrize("stage", ["eval", "generate"])
def test_vllm_not_installed_is_one_line_and_writes_nothing(tiny_pair, questions_file, tmp_path, capsys, stage):
    teacher, student = map(str, tiny_pair)
    if stage == "eval":
        argv = ["eval", "--model", student, "--benchmarks", "gsm8k", "--data", str(questions_file), "--out",
                str(tmp_path / "ev")]  # fmt: skip
    else:
        argv = ["generate", "--teacher", teacher, "--student", student, "--questions", str(questions_file), "--store",
                str(tmp_path / "s.sqlite"), "--threshold", "2"]  # fmt: skip
    assert main([*argv, "--backend", "vllm"]) != 0
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1 and "needs vLLM" in err and "ownwords[vllm]" in err
    assert [p.name for p in tmp_path.iterdir()] == ["questions.jsonl"]  # nothing written
