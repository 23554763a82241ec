"""Plain vs speculative RSD on a trained tiny pair (teacher ~25M, student ~1M parameters, both fitted
to the same synthetic chats so the student often agrees with the teacher).

    python benchmarks/bench_speculative.py [--new-tokens 64] [--fresh]
    python benchmarks/bench_speculative.py --teacher T --student S   # any pair (folders, GGUF files, hub ids)

The pair is trained once (a few minutes on 2 CPU cores) and cached in ~/.cache/ownwords/bench-pair.
For batch 1 and 8 and K in {2, 4, 8}: tokens/s of plain and speculative RSD on the same prompts, the
mean accepted draft length, the acceptance rate (accepted / drafted) and teacher forward passes per
emitted token. Last line: `spec_speedup_b1=<x> acceptance=<a>` for the best K at batch 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from ownwords.data.questions import build_prompt
from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.models.loading import load_model, load_pair
from ownwords.models.tiny import arithmetic_chats, fit_lm, make_tiny_pair

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ownwords" / "bench-pair"


def trained_pair(fresh: bool) -> Path:
    if fresh and CACHE.exists():
        shutil.rmtree(CACHE)
    if (CACHE / "done").exists():
        return CACHE
    make_tiny_pair(CACHE)
    for name, steps, lr in (("student", 300, 3e-3), ("teacher", 150, 2e-3)):
        model, tok = load_model(str(CACHE / name), "cpu", "float32")
        texts = [tok.apply_chat_template(c, tokenize=False) for c in arithmetic_chats(4000, seed=1)]
        start = time.perf_counter()
        losses = fit_lm(model, tok, texts, steps, batch_size=16, lr=lr)
        print(
            f"trained {name}: {steps} steps in {time.perf_counter() - start:.0f} s, final loss {sum(losses[-10:]) / 10:.3f}"
        )
        model.save_pretrained(CACHE / name)
    (CACHE / "done").touch()
    return CACHE


def step_ms(model, n=30) -> float:
    """Milliseconds of one cached decode step at batch 1 (the cost ratio the speed-up lives on)."""
    cache = DynamicCache(config=model.config)
    model(torch.tensor([list(range(5, 45))]), past_key_values=cache, use_cache=True)
    x = torch.tensor([[7]])
    start = time.perf_counter()
    for _ in range(n):
        model(x, past_key_values=cache, use_cache=True)
    return (time.perf_counter() - start) / n * 1e3


def run(models, prompts, batch, k, new_tokens):
    student, s_tok, teacher, alignment = models
    engine = Engine(
        student,
        s_tok,
        teacher,
        alignment,
        Sampling(),
        RSD(),
        max_new_tokens=new_tokens,
        batch_size=batch,
        speculate=k,
    )
    engine.stop_ids = {-1}  # a fixed amount of work: rows stop at the length limit only
    start = time.perf_counter()
    tokens = sum(
        len(t.token_ids) for t in engine.run([Request(str(i), 0, p, seed=i) for i, p in enumerate(prompts)])
    )
    return tokens / (time.perf_counter() - start), engine.stats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--fresh", action="store_true", help="retrain the cached pair")
    parser.add_argument("--teacher", help="another pair's teacher (with --student) instead of the trained tiny one")
    parser.add_argument("--student")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.teacher and args.student:
        models = load_pair(args.teacher, args.student, "cpu", "float32")
    else:
        path = trained_pair(args.fresh)
        models = load_pair(str(path / "teacher"), str(path / "student"), "cpu", "float32")
    student, s_tok, teacher, _ = models
    prompts = [build_prompt(s_tok, chat[0]["content"]) for chat in arithmetic_chats(args.prompts, seed=99)]
    t_ms, s_ms = step_ms(teacher), step_ms(student)
    print(
        f"threads={torch.get_num_threads()} teacher step {t_ms:.2f} ms, student step {s_ms:.2f} ms "
        f"(cost ratio {t_ms / s_ms:.1f}x), new_tokens={args.new_tokens}"
    )
    run(models, prompts[:2], 2, 2, 8)  # warm-up
    best = {}
    for batch in (1, 8):
        plain, plain_stats = run(models, prompts, batch, 0, args.new_tokens)
        # teacher passes per emitted token of one row (a batched pass serves every row at once)
        print(
            f"batch {batch}: plain RSD {plain:7.1f} tok/s, teacher passes/token "
            f"{plain_stats['teacher_forwards'] * batch / plain_stats['tokens']:.3f}"
        )
        for k in (2, 4, 8):
            tps, st = run(models, prompts, batch, k, args.new_tokens)
            blocks = st["drafted"] / k
            acceptance = st["accepted"] / st["drafted"]
            print(
                f"  K={k}: {tps:7.1f} tok/s  speedup {tps / plain:5.2f}  acceptance {acceptance:.3f}  "
                f"mean accepted {st['accepted'] / blocks:.2f}/{k}  teacher passes/token "
                f"{st['teacher_forwards'] * batch / st['tokens']:.3f}"
            )
            if batch == 1 and tps / plain > best.get("speedup", 0):
                best = dict(speedup=tps / plain, acceptance=acceptance, k=k)
    print(f"spec_speedup_b1={best['speedup']:.2f} acceptance={best['acceptance']:.3f}")


if __name__ == "__main__":
    main()
