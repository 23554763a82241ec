"""The pool's protocol with a fake `ray`, deterministically: a worker whose call dies has its chunk
handed out again, to it once it answers its probe or to another; a task that raises is re-raised at
once; nothing is lost or doubled. (tests/decoding/test_pool.py kills real Ray workers too.)"""

import pytest

from ownwords.decoding.engine import Request, Trace
from ownwords.decoding.pool import WorkerPool
from ownwords.errors import UserError


class RayError(Exception):
    pass


class RayTaskError(RayError):
    pass


class Future:
    def __init__(self, call):
        self.call = call


class FakeRay:
    """`ray.wait` / `ray.get` over futures that run when they are got, in the order they were made."""

    class exceptions:
        RayError = RayError
        RayTaskError = RayTaskError

    def wait(self, futures, num_returns=1):
        return futures[:1], futures[1:]

    def get(self, future):
        return future.call()


class Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return Future(lambda: self.fn(*args))


class Actor:
    """A worker that answers each chunk with one trace per request; `deaths` of its first calls die."""

    def __init__(self, name, deaths=0, raises=False, probes_lost=0):
        self.name, self.deaths, self.raises, self.probes_lost = name, deaths, raises, probes_lost
        self.chunks = []
        self.run = Method(self._run)
        self.ready = Method(self._ready)

    def _run(self, chunk):
        if self.raises:
            raise RayTaskError("a bug in the task")
        if self.deaths:
            self.deaths -= 1
            raise RayError(f"worker {self.name} died")
        self.chunks.append([r.sample_index for r in chunk])
        return [Trace(r, token_ids=[r.sample_index]) for r in chunk], {"tokens": len(chunk)}

    def _ready(self):
        if self.probes_lost:
            self.probes_lost -= 1
            raise RayError("not back yet")
        return 123, None


def requests(n):
    return [Request("q", i, [1], seed=i) for i in range(n)]


def run(actors, n=20, chunk=3):
    pool = WorkerPool(factory=None, workers=len(actors), chunk=chunk)
    return pool, [t.request.sample_index for t in pool._run(FakeRay(), actors, requests(n))]


def test_a_dead_workers_chunk_is_handed_out_again_and_nothing_is_lost_or_doubled(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    pool, got = run([Actor("a", deaths=2, probes_lost=3), Actor("b")])
    assert sorted(got) == list(range(20)), "a chunk was lost or handed out twice"
    assert pool.stats["tokens"] == 20


def test_a_restarted_worker_gets_its_chunk_again_once_it_answers(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    alone = Actor("a", deaths=1, probes_lost=2)  # the only worker: nobody else could take its chunk
    _, got = run([alone], n=7)
    assert sorted(got) == list(range(7))
    assert sorted(i for c in alone.chunks for i in c) == list(range(7))


def test_a_task_that_raises_is_reraised_at_once_not_retried():
    bug = Actor("a", raises=True)
    with pytest.raises(RayTaskError, match="a bug in the task"):
        run([bug, Actor("b")])


def test_too_many_deaths_in_one_run_are_an_error():
    with pytest.raises(RuntimeError, match="worker failures in one run"):
        run([Actor("a", deaths=100)], n=6)


def test_a_worker_that_never_comes_back_is_an_error(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="did not come back within a minute"):
        run([Actor("a", deaths=1, probes_lost=10_000)], n=3)


def test_a_worker_that_cannot_load_its_models_after_a_restart_is_named():
    class Broken(Actor):
        def _ready(self):
            return 77, "OSError: no such model"

    with pytest.raises(UserError, match="worker 0 \\(pid 77\\) could not load its models after a restart"):
        run([Broken("a", deaths=1)], n=3)
