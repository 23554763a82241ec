"""The engine at real vocabulary sizes: what RSD costs on top of the models' own forward passes.

    python benchmarks/bench_real_shapes.py [--student-layers 4] [--teacher-layers 4] [--new-tokens 16]

Student: Qwen3-0.6B's shapes (hidden 1024, 16/8 heads of 128, MLP 3072, tied embeddings, logits
151,936 wide) with the Qwen3 tokenizer (151,669 tokens). Teacher: Qwen2.5-0.5B's body (hidden 896,
14/2 heads of 64, MLP 4864) with the Qwen2.5-7B's logits width (152,064) and the Qwen2.5 tokenizer
(151,665 tokens). Both are random and float32, cut in depth (the flags) so that a 2-core CPU can
prefill 64 prompts of 512 tokens: a full-depth 0.6B takes minutes per prefill there. Cutting depth
makes the forward passes cheaper and so the overhead *larger* than at full depth. The final norm is
scaled so the logits spread like a trained model's (a random model's are nearly flat, which would
put most of the vocabulary in every top-p nucleus); the median nucleus size is printed.

At batch 16 and 64, with 512-token prompts, temperature 0.7, top-p 0.95, threshold 0.01, the
engine's decode steps (plain RSD, one token per row per step), split inside each step into
(a) the bare forward passes (one student and one teacher call through the KV-cache layer) and
(b) the RSD math (``Engine._step``: S, T, alpha, the draws, the records), the rest being book-keeping.
overhead = step / its forwards - 1, per step (timed within the same step, so the machine's drift
between two runs does not enter it); for reference, the same forwards run alone in a separate loop.
Per-step medians; the last line prints `real_vocab_overhead_b16=… real_vocab_overhead_b64=…
math_share_b64=…` (math share = RSD math / step).
Needs ../shared/data/tokenizers and tiktoken (the dev install).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the realism tests' builders
from realvocab import WIDTH, qwen_tokenizer  # noqa: E402

from ownwords.decoding.engine import RSD, Engine, Request, Sampling  # noqa: E402
from ownwords.decoding.slots import SlotCache  # noqa: E402
from ownwords.rsd.sampling import AcceptanceRule, support_from_logits  # noqa: E402
from ownwords.rsd.vocab import align_vocabularies  # noqa: E402

QWEN3_06B = dict(
    model_type="qwen3", hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
    intermediate_size=3072, vocab_size=WIDTH["qwen3"],
)  # fmt: skip
QWEN25_05B_BODY = dict(
    model_type="qwen2", hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
    intermediate_size=4864, vocab_size=WIDTH["qwen2.5"],
)  # fmt: skip


def model(shape: dict, layers: int, tokenizer, spread: float, seed: int):
    shape = {"tie_word_embeddings": True} | shape
    config = AutoConfig.for_model(
        shape.pop("model_type"), num_hidden_layers=layers, max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None, **shape,
    )  # fmt: skip
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    lm.model.norm.weight.data.mul_(spread)  # logits' spread: a trained model's, not a random one's
    lm.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id], pad_token_id=tokenizer.pad_token_id
    )
    return lm


class Timed:
    """Wraps an engine method; records the seconds of each call (only while `on`)."""

    def __init__(self, fn):
        self.fn, self.seconds, self.on = fn, [], True

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        if self.on:
            self.seconds.append(time.perf_counter() - start)
        return out


def engine_steps(engine: Engine, prompts: list[list[int]]) -> tuple[list[float], list[float], list[float]]:
    """Per decode step: its seconds, those of the RSD math inside it, and those of its forward passes
    (the model calls through the KV-cache layer, timed inside the same step: no drift between runs)."""
    step, math_, forward = Timed(engine._plain), Timed(engine._step), Timed(SlotCache.append)
    engine._plain, engine._step = step, math_
    math_.on = forward.on = False  # the prefill's first token is not a decode step
    original, per_step = step.fn, []

    def plain(*args):
        math_.on = forward.on = True
        before = len(forward.seconds)
        try:
            return original(*args)
        finally:
            math_.on = forward.on = False
            per_step.append(sum(forward.seconds[before:]))

    step.fn = plain
    engine.stop_ids = {-1}  # a fixed amount of work: rows stop at the length limit only
    SlotCache.append = lambda *a, **k: forward(*a, **k)
    try:
        list(engine.run([Request("q", i, p, seed=i) for i, p in enumerate(prompts)]))
    finally:
        SlotCache.append = forward.fn
    return step.seconds, math_.seconds, per_step


@torch.inference_mode()  # as the engine's steps run
def bare_steps(engine: Engine, prompts: list[list[int]], steps: int, sync=lambda: None) -> list[float]:
    """Seconds of each lock-step pair of forwards (student, teacher) after a prefill of the prompts,
    made through the engine's own KV-cache layer (same masks, positions and calls), nothing else."""
    student, teacher = engine.caches(max(map(len, prompts)))
    slots = list(range(len(prompts)))
    teacher_prompts = [engine.alignment.to_teacher(p) for p in prompts]
    for cache in (student, teacher):
        cache.lengths = [0] * cache.slots
    student.append(slots, prompts)
    teacher.append(slots, teacher_prompts)
    seconds = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        student.append(slots, [p[-1:] for p in prompts])
        teacher.append(slots, [p[-1:] for p in teacher_prompts])
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--student-layers", type=int, default=4, help="of Qwen3-0.6B's 28")
    parser.add_argument("--teacher-layers", type=int, default=4, help="of Qwen2.5-0.5B's 24")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--spread", type=float, default=8.0, help="final-norm scale (logits' spread)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    s_tok, t_tok = qwen_tokenizer("qwen3"), qwen_tokenizer("qwen2.5")
    student = model(QWEN3_06B, args.student_layers, s_tok, args.spread, seed=0)
    teacher = model(QWEN25_05B_BODY, args.teacher_layers, t_tok, args.spread, seed=1)
    alignment = align_vocabularies(s_tok, t_tok, WIDTH["qwen3"], WIDTH["qwen2.5"])
    sampling, rsd = Sampling(0.7, 0, 0.95), RSD(AcceptanceRule("threshold", 0.01), trials=5)
    print(
        f"threads={torch.get_num_threads()} student={sum(p.numel() for p in student.parameters()) / 1e6:.0f}M "
        f"({args.student_layers} layers) teacher={sum(p.numel() for p in teacher.parameters()) / 1e6:.0f}M "
        f"({args.teacher_layers} layers) shared tokens={alignment.shared} prompt={args.prompt_tokens} "
        f"new tokens={args.new_tokens}"
    )
    gen = torch.Generator().manual_seed(0)
    warm = Engine(student, s_tok, teacher, alignment, sampling, rsd, max_new_tokens=3, batch_size=2)
    engine_steps(warm, torch.randint(0, min(s_tok.all_special_ids), (2, 8), generator=gen).tolist())
    overhead, share = {}, {}
    for batch in (int(b) for b in args.batches.split(",")):
        # ordinary tokens only (ids below the first special token), so no prompt ends a row early
        prompts = torch.randint(
            0, min(s_tok.all_special_ids), (batch, args.prompt_tokens), generator=gen
        ).tolist()
        with torch.no_grad():
            probe = student(torch.tensor(prompts[:4])).logits[:, -1, : alignment.student_size]
        nucleus = (support_from_logits(probe, 0.7, 0, 0.95).probs > 0).sum(-1).median().item()
        engine = Engine(
            student,
            s_tok,
            teacher,
            alignment,
            sampling,
            rsd,
            max_new_tokens=args.new_tokens,
            batch_size=batch,
        )
        step, math_, forwards = engine_steps(engine, prompts)
        bare = bare_steps(engine, prompts, args.new_tokens - 1)
        e, b, m = statistics.median(step), statistics.median(bare), statistics.median(math_)
        overhead[batch] = statistics.median(s / f - 1 for s, f in zip(step, forwards, strict=True))
        share[batch] = m / e
        print(
            f"batch {batch:2d}: engine step {e * 1000:7.1f} ms ({batch / e:6.1f} tok/s), of which forwards "
            f"{statistics.median(forwards) * 1000:7.1f} ms and RSD math {m * 1000:6.1f} ms: overhead "
            f"{overhead[batch]:6.3f}, math share {m / e:5.3f}   |   separate bare loop {b * 1000:7.1f} ms "
            f"({batch / b:6.1f} tok/s, engine/bare - 1 = {e / b - 1:+.3f})   median nucleus {nucleus:.0f} tokens"
        )
    print(" ".join(f"real_vocab_overhead_b{b}={o:.3f}" for b, o in overhead.items()), end=" ")
    print(f"math_share_b{max(share)}={share[max(share)]:.3f}")


if __name__ == "__main__":
    main()
