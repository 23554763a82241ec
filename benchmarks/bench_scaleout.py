"""Scale-out on Ray: the same request set through 1 worker and through 2 workers (local Ray instance,
1 torch thread and 1 CPU each, so a 2-core machine holds both), on the standard tiny pair.

    python benchmarks/bench_scaleout.py [--requests 96] [--new-tokens 48] [--batch-size 8]

Each configuration is timed from its workers being ready (models loaded) to the last trace back, so
Ray's start-up and model loading are not counted; the stores of both hold the same token ids (the
per-sample seeds make a trace independent of where it ran). Last line: `scaleout_2w=<tokens/s of 2
workers / tokens/s of 1 worker>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial

import ray

from ownwords.data.questions import build_prompt
from ownwords.decoding.engine import Request
from ownwords.decoding.pool import WorkerPool
from ownwords.models.loading import load_tokenizer
from ownwords.models.tiny import make_tiny_pair
from ownwords.stages.generate import GenerateConfig, build_engine


def measure(config: GenerateConfig, requests: list[Request], workers: int) -> tuple[float, dict]:
    pool = WorkerPool(partial(build_engine, config), workers, chunk=config.batch_size, threads=1)
    pool.start()
    warm = [
        Request(f"warm{i}", 0, r.prompt_ids, seed=10**6 + i)
        for i, r in enumerate(requests[: 2 * workers * config.batch_size])
    ]
    list(pool.run(warm))  # first passes are slower: every worker warms up before the clock starts
    start = time.perf_counter()
    traces = {(t.request.question_id, t.request.sample_index): t.token_ids for t in pool.run(requests)}
    wall = time.perf_counter() - start
    pool.close()
    return sum(len(t) for t in traces.values()) / wall, traces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    teacher, student = make_tiny_pair(tempfile.mkdtemp(prefix="bench-scaleout-"))
    config = GenerateConfig(
        teacher=str(teacher),
        student=str(student),
        questions="unused.jsonl",
        max_new_tokens=args.new_tokens,
        batch_size=args.batch_size,
    )
    tok = load_tokenizer(str(student))
    requests = [
        Request(
            f"q{i}",
            0,
            build_prompt(tok, f"What is {i} + {3 * i + 7}? Explain each step.", prefix="<think>\n"),
            seed=i,
        )
        for i in range(args.requests)
    ]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    one, traces_one = measure(config, requests, 1)
    two, traces_two = measure(config, requests, 2)
    one = max(one, measure(config, requests, 1)[0])  # best of two for each, interleaved
    two = max(two, measure(config, requests, 2)[0])
    ray.shutdown()
    assert traces_one == traces_two, "the token ids must not depend on the worker count"
    print(
        f"1 worker: {one:7.1f} tok/s   2 workers: {two:7.1f} tok/s   ({args.requests} requests x {args.new_tokens} new tokens)"
    )
    print(f"scaleout_2w={two / one:.2f}")


if __name__ == "__main__":
    main()
