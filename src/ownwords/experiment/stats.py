"""Which differences between arms are real: a paired bootstrap over questions x seeds x samples.

An arm's evaluation is, per SFT seed, the number of correct samples of each question. Questions and
seeds are crossed (every seed answers every question), samples are nested in a (seed, question) cell.
One resample draws the questions with replacement -- the same draw for both arms, so the comparison
is paired -- and takes each arm's mean over its seeds and samples at those questions; this carries
the question-to-question variation and the noise of the samples, once. Seeds are drawn with
replacement too, for the seed-to-seed variation, as offsets of each seed's mean accuracy shrunk to
what that variation is beyond the samples' noise (estimated from the two-way table): resampling the
raw cells on both axes (the "pigeonhole" bootstrap) would count the samples' noise twice and gave
intervals covering a known difference 98-99% of the time at a nominal 95%. With this one, 92-96% in
the synthetic cases of tests/experiment/test_stats.py. With one seed, seed-to-seed variation cannot
be seen (coverage 89% there when it exists). The interval is the 2.5th and 97.5th percentiles of the
resampled differences; seeded: the same inputs and seed give the same interval.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class Outcomes:
    """One arm on one benchmark: correct[s][q] of `samples` samples, for seed s and question q."""

    correct: np.ndarray  # [seeds, questions] ints
    samples: int

    @classmethod
    def of(cls, per_seed: list[dict[str, int]], samples: int, questions: list[str]) -> Outcomes:
        return cls(np.array([[seed[q] for q in questions] for seed in per_seed], dtype=np.int64), samples)

    def accuracy(self) -> float:
        return float(self.correct.mean() / self.samples)


@dataclass(frozen=True)
class Difference:
    difference: float  # accuracy of a minus accuracy of b
    low: float
    high: float
    resamples: int

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _resampled_accuracy(arm: Outcomes, questions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Accuracy of `arm` in each resample, questions [R, Q] given: the resampled questions' means over
    seeds, plus the mean of resampled seed offsets shrunk to the seed-to-seed variance alone. [R]"""
    y = arm.correct / arm.samples  # [S, Q]
    seeds = y.shape[0]
    by_question = y.mean(axis=0)  # [Q]: its resampling carries the within-cell noise, once
    at_questions = by_question[questions].mean(axis=1)  # [R]
    if seeds == 1:
        return at_questions  # one seed: no seed-to-seed variation can be seen
    offsets = y.mean(axis=1) - y.mean()  # [S]
    residual = y - by_question[None, :] - offsets[:, None]  # [S, Q]
    noise = (residual**2).sum() / ((seeds - 1) * max(y.shape[1] - 1, 1)) / y.shape[1]  # of one seed's mean
    spread = offsets.var(ddof=1)
    scale = np.sqrt(max(spread - noise, 0.0) / spread) if spread > 0 else 0.0
    drawn = rng.integers(0, seeds, size=(questions.shape[0], seeds))  # [R, S]
    return at_questions + scale * np.sqrt(seeds / (seeds - 1)) * offsets[drawn].mean(axis=1)


def paired_bootstrap(a: Outcomes, b: Outcomes, seed: int = 0, resamples: int = RESAMPLES) -> Difference:
    """The difference a - b with its 95% paired bootstrap interval (both over the same questions)."""
    if a.correct.shape[1] != b.correct.shape[1]:
        raise ValueError("a paired comparison needs the same questions in both arms")
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, a.correct.shape[1], size=(resamples, a.correct.shape[1]))  # [R, Q]
    diffs = _resampled_accuracy(a, questions, rng) - _resampled_accuracy(b, questions, rng)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Difference(a.accuracy() - b.accuracy(), float(low), float(high), resamples)


def accuracy_interval(a: Outcomes, seed: int = 0, resamples: int = RESAMPLES) -> tuple[float, float]:
    """The 95% bootstrap interval of one arm's accuracy (questions and seeds drawn as above)."""
    rng = np.random.default_rng(seed)
    questions = rng.integers(0, a.correct.shape[1], size=(resamples, a.correct.shape[1]))
    low, high = np.percentile(_resampled_accuracy(a, questions, rng), [2.5, 97.5])
    return float(low), float(high)


def seed_of(*names: str) -> int:
    """A resampling seed of its own for each comparison, the same in every run."""
    return int.from_bytes(hashlib.sha256("\x00".join(names).encode()).digest()[:8], "little")
