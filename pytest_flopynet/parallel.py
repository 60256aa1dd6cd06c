"""Runs picklable tasks at once and hands results back as they finish: in spawned processes of this
machine (Processes) or as Ray tasks (Ray: the cluster at `address` / RAY_ADDRESS, else an embedded local
one). Both stay up until close(), so a pytest session pays their start once. flopynet sweep and a test's
seeds (--flopynet-seeds-workers) share them."""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any, Callable, Iterator

from .errors import FlopynetError


class Engine:
    """run(fn, tasks) yields fn(task) for every task as they finish; close() stops what it started."""

    def run(self, fn: Callable[[Any], Any], tasks: list) -> Iterator[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Processes(Engine):
    """Up to `workers` spawned processes (torch is not forked)."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=get_context("spawn"))

    def run(self, fn: Callable[[Any], Any], tasks: list) -> Iterator[Any]:
        for future in as_completed([self._pool.submit(fn, t) for t in tasks]):
            yield future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Ray(Engine):
    """One Ray task per task, each declaring one CPU (and a GPU where the cluster has them: the executors
    train on it). Without Ray installed: one error saying that `needs` needs it and how to install it."""

    def __init__(self, address: str | None = None, workers: int | None = None, needs: str = "this run"):
        try:
            import ray
        except ImportError:
            raise FlopynetError(f"{needs} needs Ray: pip install 'pytest-flopynet[ray]'") from None
        self._ray, self._started = ray, not ray.is_initialized()
        if self._started:
            options = {"address": address} if address else {"num_cpus": workers} if workers else {}
            ray.init(include_dashboard=False, log_to_driver=False, **options)

    def run(self, fn: Callable[[Any], Any], tasks: list) -> Iterator[Any]:
        ray = self._ray
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(fn)
        pending = [remote.remote(t) for t in tasks]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
