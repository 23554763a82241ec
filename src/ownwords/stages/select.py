"""`ownwords select`: keep well-formed, correct traces and choose which ones to train on.

Every sample gets a status in the store's `selection` table -- `chosen`, `passed` (passed every
filter but another sample was chosen) or `dropped` with the first filter that dropped it -- so the
report explains every sample. Filters, in order:

* ``finished`` -- ended by EOS or a stop string, not cut off at the length limit;
* ``thinking_format`` -- exactly one end-of-thinking marker, when the prompt opened a thinking block
  (the marker pair comes from the student tokenizer's added tokens, e.g. ``<think>``/``</think>``);
* ``fallback_rate`` -- fallback tokens / tokens <= ``max_fallback_rate`` (0.5, the paper's);
* ``has_answer`` -- a final answer can be extracted;
* ``unverifiable`` -- the gold answer cannot be checked (a proof...), when ``unverifiable=drop``;
* ``correct`` -- the answer equals the gold answer (``ownwords.data.verify.grade``).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict

from tqdm.auto import tqdm

from ..config import to_dict
from ..data.questions import thinking_markers
from ..data.store import TraceStore
from ..data.verify import extract_answer, grade
from ..errors import UserError
from ..files import write_atomically
from .select_config import FILTERS, POLICIES, SelectConfig, SelectResult  # noqa: F401 (this module's API)

logger = logging.getLogger(__name__)

def judge(
    sample: dict, config: SelectConfig, thinking_end: str | None
) -> tuple[str | None, str | None, bool | None]:
    """(first failing filter or None, extracted answer, verdict) for one stored sample."""
    kind = config.kind
    gold = sample["answer"]
    if kind == "auto":
        kind = "number" if gold and "####" in gold else "math"
    text = sample["text"]
    answer = extract_answer(text, kind, thinking_end)
    verdict = grade(text, gold, kind, thinking_end) if gold is not None and config.require_correct else None
    checks = (
        ("finished", sample["finish_reason"] in ("eos", "stop")),
        ("thinking_format", thinking_end is None or text.count(thinking_end) == 1),
        ("fallback_rate", sample["n_fallbacks"] <= config.max_fallback_rate * max(sample["n_tokens"], 1)),
        ("has_answer", answer is not None),
        ("unverifiable", not config.require_correct or verdict is not None or config.unverifiable == "keep"),
        ("correct", not config.require_correct or verdict is not False),
    )
    failed = next((name for name, ok in checks if not ok), None)
    return failed, answer, verdict


def choose(passing: list[dict], policy: str) -> list[dict]:
    if policy == "all" or not passing:
        return passing
    if policy == "first":
        return [min(passing, key=lambda s: s["sample_index"])]
    if policy == "least_surprising":
        return [min(passing, key=lambda s: (mean_nll(s["scores"]), s["sample_index"]))]
    return [min(passing, key=lambda s: (s["n_tokens"], s["sample_index"]))]


def mean_nll(scores: list[float]) -> float:
    """Mean -log S(x) over a trace's tokens: its raw scores a(x) are the student's softmax at T = 1."""
    return sum(-math.log(max(a, 1e-300)) for a in scores) / max(len(scores), 1)


def select(config: SelectConfig) -> SelectResult:
    """Judge every sample of the run, write the selection into the store, return the report."""
    with TraceStore(config.store, create=False) as store:  # refuses a missing, foreign or read-only store
        run_config = store.require_run(config.run)
        if config.policy == "least_surprising" and run_config.get("score", "raw") != "raw":
            raise UserError(
                f"policy least_surprising ranks traces by the student's log-likelihood, which run {config.run!r} "
                f"does not hold (it scored with --score {run_config['score']}); generate with --score raw"
            )
        samples = list(store.samples(config.run))
        thinking_end = config.thinking_end or _thinking_end(run_config, samples)
        by_question: dict[str, list[dict]] = defaultdict(list)
        rows, dropped = [], Counter()
        for sample in tqdm(samples, desc=f"select {config.run}", unit="sample", disable=None):
            failed, answer, verdict = judge(sample, config, thinking_end)
            sample["_verdict"] = (failed, answer, verdict)
            dropped[failed] += failed is not None
            if failed is None:
                by_question[sample["question_id"]].append(sample)
        chosen = {
            (s["question_id"], s["sample_index"])
            for group in by_question.values()
            for s in choose(group, config.policy)
        }
        for s in samples:
            failed, answer, verdict = s.pop("_verdict")
            key = (s["question_id"], s["sample_index"])
            status = "dropped" if failed else "chosen" if key in chosen else "passed"
            rows.append((*key, status, failed, answer, None if verdict is None else int(verdict)))
        questions = sorted({s["question_id"] for s in samples})
        missing = [q for q in questions if q not in by_question]
        kept = [s for s in samples if (s["question_id"], s["sample_index"]) in chosen]
        kept_tokens = sum(s["n_tokens"] for s in kept)
        report = SelectResult(
            store=config.store,
            run=config.run,
            policy=config.policy,
            thinking_end=thinking_end,
            questions=len(questions),
            questions_covered=len(by_question),
            samples=len(samples),
            samples_passed=sum(len(g) for g in by_question.values()),
            samples_kept=len(chosen),
            kept_tokens=kept_tokens,
            kept_fallback_rate=sum(s["n_fallbacks"] for s in kept) / kept_tokens if kept_tokens else None,
            dropped={name: dropped[name] for name in FILTERS},
            questions_without_sample=len(missing),
            questions_without_sample_examples=missing[:10],
        )
        store.write_selection(config.run, rows, to_dict(config), report.to_json())
    write_atomically(f"{config.store}.{config.run}.select.json", json.dumps(report.to_json(), indent=2) + "\n")
    return report


def _thinking_end(run_config: dict, samples: list[dict]) -> str | None:
    if not samples:
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(run_config["student"])
    except OSError as err:
        raise UserError(
            f"cannot load the run's student tokenizer {run_config['student']!r} to find the end-of-thinking "
            f"marker ({err}); give thinking_end"
        ) from err
    markers = thinking_markers(tokenizer, samples[0]["prompt"])
    return markers[1] if markers else None
