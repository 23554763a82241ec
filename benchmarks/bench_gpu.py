"""The paper's shapes on a GPU: what one-sequence decoding, plain RSD and speculative RSD cost.

    python benchmarks/bench_gpu.py                       # on a CUDA GPU (bf16, the shapes below)
    python benchmarks/bench_gpu.py --device cpu --dtype float32 --layers 1 --prompt-tokens 16 \\
        --new-tokens 4 --batches 1,2                     # a smoke run of the same code on CPU

Teacher: Qwen2.5-7B's shapes (hidden 3584, 28/4 heads of 128, MLP 18944, 28 layers, logits 152,064
wide, Qwen2.5 tokenizer); student: Qwen3-0.6B's (hidden 1024, 16/8 heads, MLP 3072, 28 layers, logits
151,936 wide, Qwen3 tokenizer). Random weights (the final norm scaled so the logits spread like a
trained model's), 1k-token prompts, 1k new tokens, temperature 0.7, top-p 0.95, p_th 0.01.
For batch 1, 16, 64 and 128, tokens/s of:
(a) the one-sequence loop (the engine at batch 1: the paper's design), measured once on a few rows;
(b) plain RSD (one token per row per step); (c) speculative RSD (K drafts per teacher pass);
(d) the bare lock-step forwards (b) makes, through the same KV-cache layer, with nothing else;
and the peak GPU memory of (b). Needs ../shared/data/tokenizers and tiktoken (the dev install).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_real_shapes import QWEN3_06B, bare_steps, model, qwen_tokenizer

from ownwords.decoding.engine import RSD, Engine, Request, Sampling
from ownwords.rsd.sampling import AcceptanceRule
from ownwords.rsd.vocab import align_vocabularies

QWEN25_7B = dict(
    model_type="qwen2", hidden_size=3584, num_attention_heads=28, num_key_value_heads=4,
    intermediate_size=18944, vocab_size=152_064, tie_word_embeddings=False,
)  # fmt: skip


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def engine_tokens_per_second(engine: Engine, prompts: list[list[int]], device: str) -> float:
    engine.stop_ids = {-1}  # a fixed amount of work: rows stop at the length limit only
    sync(device)
    start = time.perf_counter()
    tokens = sum(
        len(t.token_ids) for t in engine.run([Request("q", i, p, seed=i) for i, p in enumerate(prompts)])
    )
    sync(device)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--layers", type=int, default=28, help="depth of both models (28: the real ones)")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--batches", default="1,16,64,128")
    parser.add_argument("--speculate", type=int, default=4, help="K, drafts per teacher pass in (c)")
    parser.add_argument("--one-at-a-time-rows", type=int, default=2, help="rows (a) runs, one after another")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    s_tok, t_tok = qwen_tokenizer("qwen3"), qwen_tokenizer("qwen2.5")
    student = model(QWEN3_06B, args.layers, s_tok, 8.0, seed=0).to(args.device, dtype)
    teacher = model(QWEN25_7B, args.layers, t_tok, 8.0, seed=1).to(args.device, dtype)
    alignment = align_vocabularies(s_tok, t_tok, student.config.vocab_size, teacher.config.vocab_size)
    sampling, rsd = Sampling(0.7, 0, 0.95), RSD(AcceptanceRule("threshold", 0.01), trials=5)
    gen = torch.Generator().manual_seed(0)
    ordinary = min(s_tok.all_special_ids)

    def prompts(n):
        return torch.randint(0, ordinary, (n, args.prompt_tokens), generator=gen).tolist()

    def engine(batch, speculate=0, new_tokens=args.new_tokens):
        return Engine(
            student, s_tok, teacher, alignment, sampling, rsd, max_new_tokens=new_tokens,
            max_length=args.prompt_tokens + new_tokens, batch_size=batch, speculate=speculate,
        )  # fmt: skip

    print(
        f"device={args.device} dtype={args.dtype} layers={args.layers} prompt={args.prompt_tokens} "
        f"new tokens={args.new_tokens} K={args.speculate}"
    )
    engine_tokens_per_second(engine(1, new_tokens=4), prompts(1), args.device)  # warm-up
    one = engine_tokens_per_second(engine(1), prompts(args.one_at_a_time_rows), args.device)
    print(f"(a) one sequence at a time: {one:8.1f} tok/s")
    print(
        "batch | (b) plain RSD tok/s | (c) speculative tok/s | (d) bare forwards tok/s | (b)/(a) | peak GiB"
    )
    for batch in (int(b) for b in args.batches.split(",")):
        rows = prompts(batch)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        plain = engine_tokens_per_second(engine(batch), rows, args.device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        spec = engine_tokens_per_second(engine(batch, args.speculate), rows, args.device)
        steps = bare_steps(engine(batch), rows, args.new_tokens - 1, sync=lambda: sync(args.device))
        bare = batch * len(steps) / sum(steps)
        print(f"{batch:5d} | {plain:19.1f} | {spec:21.1f} | {bare:23.1f} | {plain / one:7.1f} | {peak:8.1f}")


if __name__ == "__main__":
    main()
