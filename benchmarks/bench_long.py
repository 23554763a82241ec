"""The engine at the real job's shape: long, ragged traces through real vocabularies, rows finishing
hundreds to thousands of tokens apart and their slots refilled; plain and speculative RSD.

    python benchmarks/bench_long.py   # last line: long_efficiency_b16=... long_efficiency_b64=... attended_ratio=... kv_peak_ratio=...

Models: bench_real_shapes.py's Qwen3-0.6B-shaped student (Qwen3 vocabulary, logits 151,936 wide) and a
teacher with Qwen2.5-0.5B's body and the Qwen2.5 vocabulary (logits 152,064 wide), random weights,
cut in depth to --layers so that this machine steps them. Length profile, a scaled-down s1K-1.1: prompts
uniform in [100, 1000] tokens; outputs log-normal (median --median-output, sigma 1) capped at 4,096,
the longest request exactly 4,096; every row stops at its own length (no EOS), so the work is fixed.

Figures, each measured in the same run:
* long_efficiency_bN: seconds of the model forward calls the run made, replayed alone in the same order
  through a fresh preallocated cache (the appends, frees and roll-backs of the run), / the engine's wall
  seconds for the whole run (admissions, finishes, RSD math and bookkeeping included); goal >= 0.85;
* attended_ratio: key positions the attention computed, padding included, / key positions of live tokens,
  over both models and every run; goal <= 1.3;
* kv_peak_ratio: the most KV bytes held at any time / the bytes allocated up front; goal <= 1.05.

On the engine before the slot cache (a DynamicCache grown by concatenation), the script measures what it
can: the forwards are timed inside the run (their concatenations included; there is no preallocated cache
to replay them through), attended / live from the attention masks, and the KV bytes held after each call
(nothing is allocated up front).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_real_shapes import QWEN3_06B, QWEN25_05B_BODY, WIDTH, model, qwen_tokenizer  # noqa: E402

from ownwords.decoding.engine import RSD, Engine, Request, Sampling  # noqa: E402
from ownwords.rsd.sampling import AcceptanceRule  # noqa: E402
from ownwords.rsd.vocab import align_vocabularies  # noqa: E402

try:
    from ownwords.decoding.slots import SlotCache
except ImportError:  # the engine before the slot cache
    SlotCache = None
    from ownwords.decoding.cache import CachedBatch


def lengths(n: int, median: int, seed: int) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) of n requests; the first has the longest output, 4096."""
    rng = random.Random(seed)
    out = [(rng.randint(100, 1000), min(4096, max(16, int(rng.lognormvariate(math.log(median), 1.0))))) for _ in range(n)]
    out[0] = (out[0][0], 4096)
    return out


class Recorder:
    """Every cache event of a run (append, free, rollback) on the slot cache, each append timed."""

    def __init__(self):
        self.events, self.seconds, self.kv_peak, self.caches = [], 0.0, 0, {}

    def install(self):
        self.saved = {name: getattr(SlotCache, name) for name in ("append", "free", "rollback")}
        recorder = self

        def append(cache, slots, rows, keep=1):
            start = time.perf_counter()
            out = recorder.saved["append"](cache, slots, rows, keep)
            recorder.seconds += time.perf_counter() - start
            recorder.events.append(("append", id(cache), list(slots), [list(r) for r in rows], keep))
            recorder.caches[id(cache)] = cache  # KV held: every cache of the run, both models
            held = sum(t.nbytes for c in recorder.caches.values() for t in c.keys + c.values)
            recorder.kv_peak = max(recorder.kv_peak, held)
            return out

        SlotCache.append = append
        SlotCache.free = lambda cache, slot: (recorder.events.append(("free", id(cache), slot)),
                                              recorder.saved["free"](cache, slot))[1]  # fmt: skip
        SlotCache.rollback = lambda cache, slot, n: (recorder.events.append(("rollback", id(cache), slot, n)),
                                                     recorder.saved["rollback"](cache, slot, n))[1]  # fmt: skip

    def uninstall(self):
        for name, fn in self.saved.items():
            setattr(SlotCache, name, fn)


@torch.inference_mode()
def replay(engine: Engine, events, longest_prompt: int) -> float:
    """Seconds of the run's forward calls alone, in order, through fresh caches of the same layout."""
    originals = [c for c in engine._caches if c is not None]
    fresh = {id(c): SlotCache(c.model, c.slots, c.capacity, c.pad_id) for c in originals}
    seconds = 0.0
    for event in events:
        cache = fresh[event[1]]
        if event[0] == "append":
            start = time.perf_counter()
            cache.append(event[2], event[3], event[4])
            seconds += time.perf_counter() - start
        elif event[0] == "free":
            cache.free(event[2])
        else:
            cache.rollback(event[2], event[3])
    return seconds


def run(engine: Engine, profile, vocab_top: int, seed: int) -> dict:
    """One whole run of the profile; the engine's wall seconds and what the cache layer did."""
    gen = torch.Generator().manual_seed(seed)
    requests = [Request("q", i, torch.randint(0, vocab_top, (p,), generator=gen).tolist(), seed=i)
                for i, (p, _) in enumerate(profile)]  # fmt: skip
    target = {i: out for i, (_, out) in enumerate(profile)}
    record = engine._record

    def stop_at_length(row, emitted):  # every row stops at its own length: a fixed amount of work
        finished = record(row, emitted)
        if not finished and len(row.trace.token_ids) >= target[row.trace.request.sample_index]:
            row.trace.finish_reason = "length"
            finished = True
        return finished

    engine._record, engine.stop_ids = stop_at_length, {-1}
    if SlotCache is None:
        return legacy_run(engine, requests)
    recorder = Recorder()
    recorder.install()
    try:
        start = time.perf_counter()
        tokens = sum(len(t.token_ids) for t in engine.run(requests))
        wall = time.perf_counter() - start
    finally:
        recorder.uninstall()
    stats = engine.cache_stats()
    forwards = replay(engine, recorder.events, max(p for p, _ in profile))
    return dict(wall=wall, tokens=tokens, forwards=forwards, in_run=recorder.seconds, attended=stats["attended"],
                live=stats["live"], kv_peak=recorder.kv_peak, kv_allocated=stats["kv_bytes"])  # fmt: skip


def legacy_run(engine: Engine, requests) -> dict:
    """The engine before the slot cache: its forwards timed in the run, masks and KV bytes read."""
    saved, seen, states = CachedBatch.append, dict(seconds=0.0, attended=0, live=0, peak=0), {}

    def append(state, rows, keep=1):
        start = time.perf_counter()
        out = saved(state, rows, keep)
        seen["seconds"] += time.perf_counter() - start
        width = max(len(r) for r in rows)
        mask = state.mask  # [B, L] after the append: 1 = a real token
        seen["attended"] += mask.shape[0] * mask.shape[1] * width
        seen["live"] += int(mask.sum()) * width
        states[id(state.model)] = state  # the running state of each model (a new one per admission)
        held = sum(layer.keys.nbytes + layer.values.nbytes for s in states.values() for layer in s.cache.layers)
        seen["peak"] = max(seen["peak"], held)
        return out

    CachedBatch.append = append
    try:
        start = time.perf_counter()
        tokens = sum(len(t.token_ids) for t in engine.run(requests))
        wall = time.perf_counter() - start
    finally:
        CachedBatch.append = saved
    return dict(wall=wall, tokens=tokens, forwards=None, in_run=seen["seconds"], attended=seen["attended"],
                live=seen["live"], kv_peak=seen["peak"], kv_allocated=0)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=1, help="of Qwen3-0.6B's 28 and Qwen2.5-0.5B's 24")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--requests", default="24,80", help="requests per batch size (more than a batch: slots refill)")
    parser.add_argument("--median-output", type=int, default=200)
    parser.add_argument("--speculate", type=int, default=2)
    parser.add_argument("--spread", type=float, default=8.0, help="final-norm scale (logits' spread)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    s_tok, t_tok = qwen_tokenizer("qwen3"), qwen_tokenizer("qwen2.5")
    student = model(QWEN3_06B, args.layers, s_tok, args.spread, seed=0)
    teacher = model(QWEN25_05B_BODY, args.layers, t_tok, args.spread, seed=1)
    alignment = align_vocabularies(s_tok, t_tok, WIDTH["qwen3"], WIDTH["qwen2.5"])
    sampling, rsd = Sampling(0.7, 0, 0.95), RSD(AcceptanceRule("threshold", 0.01), trials=5)
    top = min(s_tok.all_special_ids)  # ordinary tokens only in the prompts
    print(f"engine: {'slot cache' if SlotCache else 'DynamicCache (before the slot cache)'}; threads="
          f"{torch.get_num_threads()}; {args.layers} layer(s) each; median output {args.median_output}, max 4096")  # fmt: skip
    figures, totals = {}, dict(attended=0, live=0, peak=0, allocated=0)
    for batch, n in zip((int(b) for b in args.batches.split(",")), (int(r) for r in args.requests.split(",")), strict=True):
        profile = lengths(n, args.median_output, seed=batch)
        for k in (0, args.speculate):
            engine = Engine(student, s_tok, teacher, alignment, sampling, rsd, max_new_tokens=4096,
                            max_length=5200, batch_size=batch, speculate=k)  # fmt: skip
            r = run(engine, profile, top, seed=batch)
            forwards = r["forwards"] if r["forwards"] is not None else r["in_run"]
            efficiency = forwards / r["wall"]
            figures[(batch, k)] = efficiency
            for key, value in (("attended", r["attended"]), ("live", r["live"]), ("peak", r["kv_peak"]), ("allocated", r["kv_allocated"])):
                totals[key] += value
            print(f"batch {batch:2d} {'speculative K=' + str(k) if k else 'plain RSD':16s}: {n} requests, {r['tokens']} tokens "
                  f"in {r['wall']:.1f} s ({r['tokens'] / r['wall']:.1f} tok/s); forwards {forwards:.1f} s "
                  f"({'replayed alone' if r['forwards'] is not None else 'timed in the run'}; in the run {r['in_run']:.1f} s): "
                  f"efficiency {efficiency:.3f}; attended/live {r['attended'] / max(r['live'], 1):.3f}; KV peak "
                  f"{r['kv_peak'] / 2**30:.2f} GiB of {r['kv_allocated'] / 2**30:.2f} allocated")  # fmt: skip
    batches = sorted({b for b, _ in figures})
    line = " ".join(f"long_efficiency_b{b}={statistics.mean(v for (bb, _), v in figures.items() if bb == b):.3f}" for b in batches)
    ratio = totals["attended"] / max(totals["live"], 1)
    peak = f"{totals['peak'] / totals['allocated']:.3f}" if totals["allocated"] else "n/a (nothing allocated up front)"
    print(f"{line} attended_ratio={ratio:.3f} kv_peak_ratio={peak}")


if __name__ == "__main__":
    main()
