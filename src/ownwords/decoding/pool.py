"""Scale-out on Ray: the same engine in N worker processes (Ray actors), each loading its models once
on its own device; the calling process stays the only writer of anything. Same protocol as the
engine: `run(requests) -> Iterator[Trace]`, traces yielded as they come back.

Requests go out in small chunks, two in flight per worker. A worker that dies (SIGKILL, OOM, a lost
node) loses at most its unfinished chunks: they are handed out again, to the worker Ray restarts or
to another, and since every sample carries its own seed a re-run chunk yields the same traces. A
worker whose models fail to load is an error naming the worker, not a hang.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import UserError
from .engine import Engine, Request, Trace

logger = logging.getLogger(__name__)

STATS = ("teacher_forwards", "student_forwards", "tokens", "drafted", "accepted")


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            "more than one worker needs Ray, which is not installed: pip install 'ownwords[ray]'"
        ) from None
    return ray


PROBE = """
import sys, ray
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False, logging_level="ERROR")
ray.shutdown()
"""


def probe_cluster(address: str, deadline: float) -> None:
    """Can a Ray cluster be joined at `address` within `deadline` seconds? Asked in a child process,
    killed at the deadline: joining an unreachable address (or a port that is not Ray's) retries
    for minutes in this one."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True, text=True, timeout=deadline)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"no Ray cluster answered at ray_address {address!r} within {deadline:.0f} s (OWNWORDS_RAY_CONNECT_TIMEOUT); "
            "check the address (`ray start --head` prints it on the head node), or leave ray_address out to start a "
            "local instance"
        ) from None
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit code {done.returncode}"
        raise UserError(
            f"cannot join a Ray cluster at ray_address {address!r} ({why}); start one with `ray start --head`, or "
            "leave ray_address out to start a local instance"
        )


class _Worker:
    """One Ray actor: builds its engine once, then generates the chunks it is given."""

    def __init__(self, factory: Callable[[], Engine], threads: int):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.engine, self.error = None, None
        try:
            self.engine = factory()
        except Exception as err:  # reported by ready(): the driver names the worker and stops
            self.error = f"{type(err).__name__}: {err}"

    def ready(self) -> tuple[int, str | None]:
        return os.getpid(), self.error

    def run(self, chunk: list[Request]) -> tuple[list[Trace], dict]:
        if self.engine is None:
            raise RuntimeError(self.error)
        before = dict(self.engine.stats)
        traces = list(self.engine.run(chunk))
        return traces, {k: self.engine.stats[k] - before[k] for k in STATS}


@dataclass
class WorkerPool:
    factory: Callable[[], Engine]  # picklable; builds the engine inside each worker
    workers: int
    chunk: int = 16  # requests per task: what a worker's death can cost
    num_cpus: float = 1  # per worker
    num_gpus: float = 0  # per worker (1 with --device cuda)
    threads: int = 1  # torch threads per worker (0: torch's default)
    address: str | None = None  # an existing cluster (`ray start --head`); None: a local instance
    connect_timeout: float = float(os.environ.get("OWNWORDS_RAY_CONNECT_TIMEOUT", 60))  # seconds to reach it
    max_failures: int = 20  # worker deaths tolerated in one run before giving up
    stats: dict = field(default_factory=lambda: dict.fromkeys(STATS, 0))
    _actors: list | None = field(default=None, init=False, repr=False)
    _owns_ray: bool = field(default=False, init=False, repr=False)
    _waits: dict = field(default_factory=dict, init=False, repr=False)  # worker -> failed probes in a row

    def start(self) -> None:
        """Start the workers and wait until each has loaded its models (a failure names the worker)."""
        if self._actors is not None:
            return
        ray = import_ray()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            if self.address is not None:
                probe_cluster(self.address, self.connect_timeout)  # ray.init itself may wait forever
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        try:
            self._actors = self._start(ray)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers (and the local Ray instance, if this pool started it)."""
        if self._owns_ray:
            import_ray().shutdown()
        self._actors, self._owns_ray = None, False

    def run(self, requests: Iterable[Request]) -> Iterator[Trace]:
        requests = list(requests)
        if not requests:
            return
        started_here = self._actors is None  # a pool its caller started stays up for the next run
        self.start()
        try:
            yield from self._run(import_ray(), self._actors, requests)
        finally:
            if started_here:
                self.close()

    def _run(self, ray, actors: list, requests: list[Request]) -> Iterator[Trace]:
        queue = deque(requests[i : i + self.chunk] for i in range(0, len(requests), self.chunk))
        in_flight: dict = {}  # future -> (worker index, chunk)
        probes: dict = {}  # future of ready() -> worker index: a failed worker gets work again once it answers
        load = [0] * len(actors)  # chunks in flight per worker
        failures = 0
        while queue or in_flight:
            for i in sorted(range(len(actors)), key=load.__getitem__):
                while queue and load[i] < 2 and i not in probes.values():
                    chunk = queue.popleft()
                    in_flight[actors[i].run.remote(chunk)] = (i, chunk)
                    load[i] += 1
            (done,), _ = ray.wait([*in_flight, *probes], num_returns=1)
            if done in probes:
                self._probed(ray, actors, probes, done)
                continue
            i, chunk = in_flight.pop(done)
            load[i] -= 1
            try:
                traces, stats = ray.get(done)
            except ray.exceptions.RayTaskError:  # the task itself raised: a bug or bad input, not a death
                raise
            except ray.exceptions.RayError as err:  # the worker died: its chunk goes out again
                failures += 1
                if failures > self.max_failures:
                    raise RuntimeError(f"{failures} worker failures in one run; last: {err}") from err
                logger.warning(
                    "worker %d failed (%s); %d requests handed out again", i, type(err).__name__, len(chunk)
                )
                queue.appendleft(chunk)
                if i not in probes.values():
                    probes[actors[i].ready.remote()] = i
                continue
            for key, value in stats.items():
                self.stats[key] += value
            yield from traces

    def _probed(self, ray, actors: list, probes: dict, done) -> None:
        """A restarted worker answered (or not yet: ask again shortly, for up to a minute)."""
        i = probes.pop(done)
        try:
            pid, error = ray.get(done)
        except ray.exceptions.RayError as err:
            self._waits[i] = self._waits.get(i, 0) + 1
            if self._waits[i] > 120:
                raise RuntimeError(
                    f"worker {i} did not come back within a minute of failing ({err})"
                ) from err
            time.sleep(0.5)
            probes[actors[i].ready.remote()] = i
            return
        self._waits.pop(i, None)
        if error:
            raise UserError(f"worker {i} (pid {pid}) could not load its models after a restart: {error}")
        logger.info("worker %d is back (pid %d)", i, pid)

    def _start(self, ray) -> list:
        remote = ray.remote(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=-1, max_task_retries=0
        )(_Worker)
        actors = [remote.remote(self.factory, self.threads) for _ in range(self.workers)]
        for i, (pid, error) in enumerate(ray.get([a.ready.remote() for a in actors])):
            if error:
                raise UserError(f"worker {i} (pid {pid}) could not load its models: {error}")
        logger.info("%d Ray workers ready", len(actors))
        return actors


def engine_or_pool(factory: Callable[[], Engine], run, local: Callable[[], Engine] | None = None):
    """The one place an engine or a pool is made: `run.workers` > 1 gives a pool of Ray workers each
    building its engine with `factory` (picklable; one GPU each with a cuda device); otherwise the
    engine here, from `local` (models this process has loaded) or `factory`, with the CPU threads set.
    run: a config with workers, ray_address, batch_size, device and threads."""
    if run.workers > 1:
        return WorkerPool(
            factory,
            run.workers,
            chunk=2 * run.batch_size,
            num_gpus=1 if run.device.startswith("cuda") else 0,
            threads=run.threads or 1,
            address=run.ray_address,
        )
    if not run.device.startswith("cuda"):
        from ..models.loading import set_cpu_threads

        set_cpu_threads(run.threads)
    return (local or factory)()
