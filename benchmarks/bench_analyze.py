"""Scoring throughput of `ownwords analyze` against a bare batched forward over the same tokens.

    python benchmarks/bench_analyze.py [--traces 16] [--length 384] [--batch 8]

Both run the ~25M tiny teacher over the same prompts + traces at the same batch size; the bare
forward is one padded call per batch returning logits at every position (the least any scorer must
do). Last line: `scoring_vs_forward=<scoring tok/s / bare tok/s>`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

import torch

from ownwords.decoding.scoring import score_tokens
from ownwords.models.facts import logits_width
from ownwords.models.loading import load_model
from ownwords.models.tiny import make_tiny_pair


@torch.no_grad()
def bare(model, prompts, traces, batch):
    for b in range(0, len(prompts), batch):
        rows = [p + t for p, t in zip(prompts[b : b + batch], traces[b : b + batch], strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)


def scoring(model, vocab, prompts, traces, batch, chunk):
    for b in range(0, len(prompts), batch):
        score_tokens(model, vocab, 0, prompts[b : b + batch], traces[b : b + batch], chunk)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=16)
    parser.add_argument("--length", type=int, default=384)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t_dir, _ = make_tiny_pair(tmp)
        model, tok = load_model(str(t_dir), "cpu", "float32")
    rng = random.Random(0)
    vocab = min(len(tok), logits_width(model))
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(30, 50))] for _ in range(args.traces)]
    traces = [
        [rng.randrange(3, vocab) for _ in range(rng.randint(args.length // 2, args.length))]
        for _ in range(args.traces)
    ]
    tokens = sum(len(p) + len(t) for p, t in zip(prompts, traces, strict=True))
    bare(model, prompts[:2], traces[:2], 2)  # warm-up
    best = {"bare": 0.0, "scoring": 0.0}
    for _ in range(args.repeats):  # interleaved; the best of each (machine noise only slows)
        for name, fn in (
            ("bare", lambda: bare(model, prompts, traces, args.batch)),
            ("scoring", lambda: scoring(model, vocab, prompts, traces, args.batch, args.chunk)),
        ):
            start = time.perf_counter()
            fn()
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
    print(
        f"threads={torch.get_num_threads()} traces={args.traces} tokens={tokens} batch={args.batch} chunk={args.chunk}"
    )
    print(f"bare batched forward {best['bare']:8.1f} tok/s")
    print(f"ownwords scoring     {best['scoring']:8.1f} tok/s")
    print(f"scoring_vs_forward={best['scoring'] / best['bare']:.3f}")


if __name__ == "__main__":
    main()
