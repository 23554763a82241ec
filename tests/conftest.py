import json
import random

import pytest


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(teacher_dir, student_dir): the standard tiny pair (Qwen3 teacher, Llama student), saved by path."""
    from ownwords.models.tiny import make_tiny_pair

    return make_tiny_pair(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def greek_model(tmp_path_factory):
    """A tiny model whose tokenizer shares little with the tiny pair's (for the refusal test)."""
    from ownwords.models.tiny import STUDENT, build_model, train_tokenizer

    rng = random.Random(0)
    greek = "αβγδεζηθικλμνξοπρστυφχψω"
    texts = ["".join(rng.choice(greek) for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    tok = train_tokenizer(texts, vocab_size=1024)
    path = tmp_path_factory.mktemp("greek") / "model"
    build_model(STUDENT, tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def questions_file(tmp_path):
    """Five GSM8K-shaped questions (no id column: ids are row numbers)."""
    path = tmp_path / "questions.jsonl"
    rows = [{"question": f"What is {a} + {a + 1}?", "answer": f"#### {2 * a + 1}"} for a in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def demo_models(request):
    """The demo's tiny teacher and student, trained (about 2.5 minutes on 2 idle cores) or taken from
    the demo's model cache: random models write no well-formed answers, so nothing would pass select.
    Training them shows its progress bars (pytest's capture is lifted for it)."""
    import sys

    from ownwords.demo import SCALES, cache_entries, tiny_pair
    from ownwords.files import cache_dir

    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        cache = cache_dir() / "demo"
        if not all((p / "model.safetensors").exists() for p in cache_entries(cache, SCALES["quick"])):
            sys.stderr.write(f"\ntraining the demo's tiny models once (cached in {cache})\n")
        return tiny_pair(cache, SCALES["quick"], fresh=False)


@pytest.fixture(scope="session")
def task(tmp_path_factory):
    """A few train and test questions of the demo's task."""
    from ownwords.demo import write_split

    folder = tmp_path_factory.mktemp("task")
    write_split(folder / "train.jsonl", 12, seed=1)
    write_split(folder / "test.jsonl", 12, seed=2, exclude=folder / "train.jsonl")
    return folder
