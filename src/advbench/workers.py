"""Where shard work runs: a pool of N workers, and what each worker keeps between shards.

``runner`` in the build config names the kind of pool (a registry, so a Dask runner with a
cluster address and GPU workers slots in as one more entry); ``workers`` its size. The same
pool serves the in-process build and the Prefect flow (whose tasks hand their shard to it).
Processes are the default: concept extraction is CPU-bound Python, and threads share one GIL.

A worker keeps opened sources and loaded models in a ``WorkerCache`` and reuses them for every
shard it processes, instead of making them per shard or per study.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

from advbench.errors import BuildError
from advbench.registry import Registry

T = TypeVar("T")


class WorkerCache:
    """Objects made once per worker (sources, models) and reused across its shards."""

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            if key not in self._items:
                self._items[key] = make()
            return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


# One per process: shared by the threads of a thread pool, private to each process of a pool.
WORKER_CACHE = WorkerCache()


def die_with_parent(parent: int) -> None:
    """A child process (pool worker, Prefect server) must not outlive the build that started
    it, even one killed with SIGKILL: PDEATHSIG where Linux has it, and a watchdog thread."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="advbench-parent-watch", daemon=True).start()


def _init_process_worker(parent: int, then: Callable[[], None] | None = None) -> None:
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if then is not None:
        then()


def process_pool(
    workers: int, *, initializer: Callable[[], None] | None = None
) -> ProcessPoolExecutor:
    """Spawned worker processes (no inherited locks or threads) that die with this process,
    even when it is killed with SIGKILL; ``initializer`` then runs in each."""
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_process_worker,
        initargs=(os.getpid(), initializer),
    )


class InlineExecutor(Executor):
    """Runs each call at once in the calling thread: one worker needs no pool."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


class Runner(ABC):
    """A kind of worker pool, ``workers`` wide; ``executor`` runs shard functions (the flow
    keeps at most ``workers`` shard tasks in flight itself)."""

    kind: ClassVar[str]

    def __init__(self, workers: int):
        self.workers = max(1, workers)

    @abstractmethod
    def executor(self) -> Executor:
        """A fresh pool; the caller shuts it down."""


RUNNERS: Registry[type[Runner]] = Registry("runner")


@RUNNERS.register("processes")
class ProcessRunner(Runner):
    """N worker processes (spawned: no inherited locks or threads), each dying with the build."""

    kind = "processes"

    def executor(self) -> Executor:
        if self.workers == 1:
            return InlineExecutor()
        return process_pool(self.workers)


@RUNNERS.register("threads")
class ThreadRunner(Runner):
    """N threads of this process: for I/O-bound sources, or code that cannot be pickled."""

    kind = "threads"

    def executor(self) -> Executor:
        if self.workers == 1:
            return InlineExecutor()
        return ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="advbench-shard")


def default_workers() -> int:
    """The number of cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_POOLS: dict[str, Executor] = {}


@contextmanager
def shared_pool(runner: Runner) -> Iterator[str]:
    """Open a pool for one build and name it, so that tasks (Prefect's, in threads of this
    process) can hand their shard to it by that name; shut it down after."""
    key = uuid.uuid4().hex
    with runner.executor() as executor:
        _POOLS[key] = executor
        try:
            yield key
        finally:
            del _POOLS[key]


def pool(key: str | None) -> Executor:
    """The pool opened under ``key``; none (a task already on a remote worker): run inline."""
    return InlineExecutor() if key is None else _POOLS[key]


def result_of(future: Future[T]) -> T:
    """A shard's result; a worker process that died ends the build in one clear line."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise BuildError(
            "a worker process died (killed, out of memory, or a script that starts a build "
            "without `if __name__ == \"__main__\":`, which spawned workers run again); "
            "no release was written"
        ) from None
