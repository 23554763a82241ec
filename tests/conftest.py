import json
import random
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory):
    """(teacher_dir, student_dir): the standard tiny pair (Qwen3 teacher, Llama student), saved by path."""
    from ownwords.tiny import make_tiny_pair

    return make_tiny_pair(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def greek_model(tmp_path_factory):
    """A tiny model whose tokenizer shares little with the tiny pair's (for the refusal test)."""
    from ownwords.tiny import STUDENT, build_model, train_tokenizer

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


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the benchmark copies live in ../shared/data beside the repo)")
    return path


@contextmanager
def crash_after(n: int):
    """Within the block, the (n+1)-th sample written to any trace store raises KeyboardInterrupt
    (a user's Ctrl-C mid-run); the first n are written normally."""
    from ownwords.store import TraceStore

    original, written = TraceStore.add, []

    def add(self, run, record):
        if len(written) == n:
            raise KeyboardInterrupt
        written.append(record)
        original(self, run, record)

    TraceStore.add = add
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        TraceStore.add = original


@contextmanager
def read_only(path: Path):
    """`path` (a file or a folder) read-only within the block, even for root (chattr +i); skips the
    test where the file system cannot do that."""
    import os
    import subprocess

    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(mode & ~0o222)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot make {path} read-only for root here (chattr: {done.stderr.decode().strip()})")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` and its bytes (run lock files aside: empty, and kept by design)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }
