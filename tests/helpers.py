"""Helpers shared by the tests (fixtures live in conftest.py)."""

import math
import sqlite3
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ownwords.data.store import TraceStore

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tv_bound(n: int, support: int, delta: float = 1e-6) -> float:
    """TV distance an empirical distribution of n draws stays under with probability >= 1 - delta:
    E[TV] <= 0.5 sqrt(K / n), and McDiarmid (one draw moves TV by <= 1/n) adds sqrt(ln(1/delta) / 2n)."""
    return 0.5 * math.sqrt(support / n) + math.sqrt(math.log(1 / delta) / (2 * n))


def empirical(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.bincount(tokens.flatten(), minlength=vocab).double() / tokens.numel()


# Hand-made distributions over 5 tokens.
T = torch.tensor([[0.5, 0.3, 0.1, 0.1, 0.0]])  # teacher proposal
S = torch.tensor([[0.1, 0.1, 0.2, 0.2, 0.4]])  # student sampling
A = torch.tensor([[0.005, 0.5, 0.02, 0.005, 0.47]])  # student scores


VOLATILE = ("created", "wall_seconds")


def argv(tiny_pair, questions, store, *extra):
    teacher, student = tiny_pair
    return [
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--questions",
        str(questions),
        "--store",
        str(store),
        "--samples",
        "2",
        "--max-new-tokens",
        "12",
        "--batch-size",
        "3",
        "--generation-prefix",
        "<think>\n",
        "--no-progress",
        *extra,
    ]


def rows(store_path, run="default"):
    with TraceStore(store_path) as store:
        return [{k: v for k, v in r.items() if k not in VOLATILE} for r in store.samples(run)]


def finished(store_path) -> int:
    """Samples in the store so far (read-only; the run may not be registered yet)."""
    with sqlite3.connect(store_path) as db:
        has_table = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone()
        return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] if has_table else 0


def assert_same_rows(got, expected):
    """Same samples, same tokens, text and book-keeping; the float scores may differ by float noise,
    since a row's logits are computed in batches of different composition (see README, exactness)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        exact = [k for k in e if k not in ("scores", "teacher_probs")]
        assert {k: g[k] for k in exact} == {k: e[k] for k in exact}
        for k in ("scores", "teacher_probs"):
            assert g[k] == pytest.approx(e[k], abs=1e-5)


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the benchmark copies live in ../shared/data beside the repo)")
    return path


@contextmanager
def crash_after(n: int):
    """Within the block, the (n+1)-th sample written to any trace store raises KeyboardInterrupt
    (a user's Ctrl-C mid-run); the first n are written normally."""
    from ownwords.data.store import TraceStore

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


def two_sample_chi_square(groups) -> tuple[float, int]:
    """Do two samplers emit the same law? groups: [(tokens of sampler a, tokens of sampler b)], one
    pair per conditioning context. Per group, a 2 x bins homogeneity test (tokens expected >= 5
    times in both are bins, the rest one bin); pooled, p by the Wilson-Hilferty approximation."""
    stat, dof = 0.0, 0
    for a, b in groups:
        counts = {}
        for side, tokens in enumerate((a, b)):
            for t in tokens:
                counts.setdefault(t, [0, 0])[side] += 1
        n = [len(a), len(b)]
        total = n[0] + n[1]
        bins, rest = [], [0, 0]
        for pair in counts.values():
            if min(sum(pair) * n[0], sum(pair) * n[1]) >= 5 * total:
                bins.append(pair)
            else:
                rest = [rest[0] + pair[0], rest[1] + pair[1]]
        if min(sum(rest) * n[0], sum(rest) * n[1]) >= 5 * total:
            bins.append(rest)
        elif bins:  # too little for a bin of its own: fold it into the largest
            big = max(bins, key=sum)
            big[0], big[1] = big[0] + rest[0], big[1] + rest[1]
        if len(bins) < 2:
            continue
        for pair in bins:
            for side in (0, 1):
                expected = sum(pair) * n[side] / total
                stat += (pair[side] - expected) ** 2 / expected
        dof += len(bins) - 1
    if dof == 0:
        return 1.0, 0
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2)), dof
