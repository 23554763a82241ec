"""Throughput of RSD generation on the standard tiny pair (teacher ~25M, student ~1M parameters).

    python benchmarks/bench_generate.py [--new-tokens 64] [--samples 32]

(a) one sequence at a time, one token per model call, each model stepping separately at batch 1 --
    the paper's design (with a KV cache, to be fair to it);
(b) the engine at batch 1, 4, 16, 32;
(c) the bare cost of the same work: prefill plus one student and one teacher forward per token, batched
    and in lock-step as RSD runs them, with nothing else (no sampling, no book-keeping).
All three run in this one process, on the same prompts; the last line prints
`speedup_b16=(b@16)/(a) overhead_b16=1-(b@16)/(c@16)`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from transformers import DynamicCache

from ownwords.data.questions import build_prompt
from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.models.loading import load_pair
from ownwords.models.tiny import make_tiny_pair


def prompts(tokenizer, n):
    return [
        build_prompt(tokenizer, f"What is {i} + {3 * i + 7}? Explain each step.", prefix="<think>\n")
        for i in range(n)
    ]


@torch.no_grad()
def one_at_a_time(student, s_tok, teacher, alignment, rsd, sampling, prompt_ids, new_tokens):
    """(a): per sample, per token: a student call, a teacher call, then the engine's own RSD step on
    that one row (so (a) and (b) differ only in batching)."""
    rsd_step = Engine(student, s_tok, teacher, alignment, sampling, rsd)._step
    tokens = 0
    for i, ids in enumerate(prompt_ids):
        gen = torch.Generator().manual_seed(i)
        s_cache, t_cache = DynamicCache(config=student.config), DynamicCache(config=teacher.config)
        s_in, t_in = torch.tensor([ids]), torch.tensor([alignment.to_teacher(ids)])
        for _ in range(new_tokens):
            s_logits = student(input_ids=s_in, past_key_values=s_cache, use_cache=True).logits[:, -1]
            t_logits = teacher(input_ids=t_in, past_key_values=t_cache, use_cache=True).logits[:, -1]
            token = int(rsd_step(s_logits, t_logits, [gen])[0][0])
            s_in, t_in = torch.tensor([[token]]), torch.tensor([alignment.to_teacher([token])])
            tokens += 1
    return tokens


def engine_run(student, s_tok, teacher, alignment, rsd, sampling, prompt_ids, new_tokens, batch):
    engine = Engine(
        student, s_tok, teacher, alignment, sampling, rsd, max_new_tokens=new_tokens, batch_size=batch
    )
    engine.stop_ids = {-1}  # measure a fixed amount of work: rows stop at the length limit only
    reqs = [Request(str(i), 0, ids, seed=i) for i, ids in enumerate(prompt_ids)]
    return sum(len(t.token_ids) for t in engine.run(reqs))


@torch.no_grad()
def bare_forward(student, teacher, alignment, prompt_ids, new_tokens, batch):
    """(c): the forwards (b) needs, batched, on prompts of equal length (no padding) with a fixed next
    token: a prefill, then per token one student and one teacher step, in lock-step as RSD runs them."""
    tokens = 0
    for start in range(0, len(prompt_ids), batch):
        rows = prompt_ids[start : start + batch]
        n = min(len(r) for r in rows)
        states = []
        for model, ids in (
            (student, [r[:n] for r in rows]),
            (teacher, [alignment.to_teacher(r)[:n] for r in rows]),
        ):
            cache, x = DynamicCache(config=model.config), torch.tensor(ids)
            model(input_ids=x, attention_mask=torch.ones_like(x), past_key_values=cache, logits_to_keep=1)
            states.append((model, cache, x[:, -1:], torch.ones_like(x)))
        for _ in range(new_tokens - 1):
            for i, (model, cache, step, mask) in enumerate(states):
                mask = torch.cat([mask, torch.ones_like(step)], 1)
                model(input_ids=step, attention_mask=mask, past_key_values=cache).logits.float()
                states[i] = (model, cache, step, mask)
        tokens += len(rows) * new_tokens
    return tokens


def timed(fn, *args):
    start = time.perf_counter()
    tokens = fn(*args)
    return tokens / (time.perf_counter() - start)


def best_of(repeats, *measures):
    """Run the measures interleaved `repeats` times; best tokens/s of each (machine noise only slows)."""
    results = [[timed(*m) for m in measures] for _ in range(repeats)]
    return [max(r[i] for r in results) for i in range(len(measures))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=32, help="samples for (b) and (c)")
    parser.add_argument("--baseline-samples", type=int, default=4, help="samples for (a), the slow loop")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best is kept")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        t_dir, s_dir = make_tiny_pair(tmp)
        student, s_tok, teacher, alignment = load_pair(str(t_dir), str(s_dir), "cpu", "float32")
    rsd, sampling = RSD(), Sampling()
    ids = prompts(s_tok, args.samples)
    print(
        f"threads={torch.get_num_threads()} teacher={sum(p.numel() for p in teacher.parameters()) / 1e6:.1f}M "
        f"student={sum(p.numel() for p in student.parameters()) / 1e6:.1f}M new_tokens={args.new_tokens}"
    )
    engine_run(student, s_tok, teacher, alignment, rsd, sampling, ids[:4], 8, 4)  # warm-up

    few = ids[: args.baseline_samples]
    baseline = (one_at_a_time, student, s_tok, teacher, alignment, rsd, sampling, few, args.new_tokens)
    engine, bare, base = {}, {}, {}
    for b in (1, 4, 16, 32):
        n = ids if b > 1 else few
        # (a) is re-measured beside each batch size: the machine's speed drifts, the ratios should not
        base[b], engine[b], bare[b] = best_of(
            args.repeats,
            baseline,
            (engine_run, student, s_tok, teacher, alignment, rsd, sampling, n, args.new_tokens, b),
            (bare_forward, student, teacher, alignment, n, args.new_tokens, b),
        )
        print(
            f"batch {b:2d}: (a) one at a time {base[b]:6.1f} tok/s   (b) engine {engine[b]:7.1f} tok/s   "
            f"(c) bare forward {bare[b]:7.1f} tok/s   overhead {1 - engine[b] / bare[b]:6.3f}   "
            f"speedup vs (a) {engine[b] / base[b]:6.2f}"
        )
    print(f"speedup_b16={engine[16] / base[16]:.2f} overhead_b16={1 - engine[16] / bare[16]:.3f}")


if __name__ == "__main__":
    main()
