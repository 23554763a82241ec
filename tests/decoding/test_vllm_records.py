"""The vllm backend's records from vLLM's outputs, without vLLM (a stand-in answers `generate`): the
fields the hf engine writes, finish reasons, the stop token kept, and requests handed over a chunk at
a time so that a long run's traces reach the store as they finish. (Real vLLM: test_vllm.py.)"""

import math
from types import SimpleNamespace

import pytest

from ownwords.decoding import vllm
from ownwords.decoding.engine import Request, Sampling
from ownwords.decoding.vllm import STUDENT, Role, VLLMEngine


class FakeLLM:
    """Each prompt answered with tokens 5, 6 and then: EOS id 2 (odd seeds), a stop string, or nothing
    (length); vLLM's log-probabilities log(0.5) for each."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append(len(prompts))
        outs = []
        for p in params:
            ending = ("stop", 2, [5, 6, 2]) if p.seed % 3 == 1 else ("stop", "##", [5, 6]) if p.seed % 3 == 2 else (
                "length", None, [5, 6])  # fmt: skip
            ids = ending[2][: p.max_tokens]
            steps = [{t: SimpleNamespace(logprob=math.log(0.5))} for t in ids]
            outs.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, logprobs=steps, finish_reason=ending[0],
                                                                 stop_reason=ending[1])]))  # fmt: skip
        return outs


@pytest.fixture
def fake(monkeypatch):
    llm = FakeLLM()
    monkeypatch.setattr(vllm, "load_llm", lambda *settings: llm)
    monkeypatch.setattr("ownwords.models.loading.model_source", lambda name: name)  # no model folder needed
    return llm


class Params(SimpleNamespace):
    pass


@pytest.fixture(autouse=True)
def sampling_params(monkeypatch):
    """vLLM's SamplingParams, as the fields the engine sets."""
    import sys

    module = SimpleNamespace(SamplingParams=Params)
    monkeypatch.setitem(sys.modules, "vllm", module)


def test_records_and_finish_reasons_are_the_hf_engines(fake):
    engine = VLLMEngine("m", None, Sampling(0.7, 0, 0.95), STUDENT, max_new_tokens=8, max_length=64, batch_size=2,
                        stop_ids=[2], stop_strings=("##",))  # fmt: skip
    traces = list(engine.run([Request("q", i, [1, 1], seed=i) for i in range(3)] + [Request("long", 0, [1] * 64, 9)]))
    assert [t.request.question_id for t in traces] == ["long", "q", "q", "q"]  # no room: at once, as on hf
    long, length, eos, stop = traces
    assert long.finish_reason == "length" and long.token_ids == []
    assert (length.finish_reason, eos.finish_reason, stop.finish_reason) == ("length", "eos", "stop")
    assert eos.token_ids == [5, 6, 2] and eos.scores == [0.5, 0.5, 0.5] and all(math.isnan(p) for p in eos.teacher_probs)
    assert eos.fallbacks == [False] * 3 and eos.trials == [0] * 3
    teacher = VLLMEngine("m", None, Sampling(0.7, 0, 0.95), Role("teacher_probs", False, 1), stop_ids=[2])
    (t,) = teacher.run([Request("q", 0, [1], seed=1)])
    assert t.teacher_probs == [0.5] * 3 and all(math.isnan(s) for s in t.scores) and t.trials == [1] * 3


def test_a_stop_token_vllm_leaves_out_is_kept_as_the_hf_engine_keeps_it(fake, monkeypatch):
    def without_the_stop_token(prompts, params, use_tqdm=False):
        steps = [{5: SimpleNamespace(logprob=0.0)}]
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[5], logprobs=steps, finish_reason="stop",
                                                         stop_reason=2)])]  # fmt: skip

    monkeypatch.setattr(fake, "generate", without_the_stop_token)
    (t,) = VLLMEngine("m", None, Sampling(), STUDENT, stop_ids=[2]).run([Request("q", 0, [1], seed=0)])
    assert t.token_ids == [5, 2] and t.finish_reason == "eos" and t.scores[0] == 1.0 and math.isnan(t.scores[1])


def test_requests_go_to_vllm_a_chunk_at_a_time_and_the_first_traces_come_before_the_last_chunk_runs(fake):
    engine, chunk = VLLMEngine("m", None, Sampling(), STUDENT, batch_size=2), vllm.CHUNK_ROWS * 2
    requests = [Request("q", i, [1], seed=3 * i) for i in range(2 * chunk + 3)]
    traces = engine.run(requests)
    next(traces)
    assert fake.calls == [chunk]  # the first chunk's traces are out; the rest not yet asked
    rest = list(traces)
    assert fake.calls == [chunk, chunk, 3] and len(rest) + 1 == len(requests)
    assert [t.request.sample_index for t in rest] == list(range(1, len(requests)))
