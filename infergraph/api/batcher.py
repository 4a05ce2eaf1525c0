"""Gather concurrent requests into micro-batches so many clients share one forward pass.

A batch closes when ``max_size`` records wait, when ``max_wait`` seconds have
passed since its first record arrived, or as soon as no other record is on its
way: callers announce a record with :meth:`MicroBatcher.expecting` before they
decode it, so a lone request never waits for company that is not coming.
Records that arrive while a forward pass runs form the next batch, so under
load batches grow by themselves. Forward passes run one at a time in a
dedicated thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosed(RuntimeError):
    """The server is shutting down; the record was not predicted."""


@dataclass(slots=True)
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[Any]
    arrived: float


@dataclass(slots=True)
class BatchStats:
    """What the batcher did: evidence that clients share forward passes."""

    forward_passes: int = 0
    records: int = 0
    largest: int = 0
    busy_seconds: float = 0.0
    sizes: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_passes": self.forward_passes,
            "records": self.records,
            "largest_batch": self.largest,
            "mean_batch": round(self.records / self.forward_passes, 3)
            if self.forward_passes
            else 0.0,
            "busy_seconds": round(self.busy_seconds, 3),
            "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


class Expected:
    """A record announced to the batcher: while it is held, open batches may wait for it."""

    def __init__(self, batcher: MicroBatcher[Any, Any]) -> None:
        self._batcher = batcher
        self._held = True
        batcher._upcoming += 1

    def release(self) -> None:
        if self._held:
            self._held = False
            self._batcher._upcoming -= 1
            self._batcher._wakeup.set()


class MicroBatcher(Generic[T, R]):
    """``await submit(item)`` returns ``run([... item ...])[i]`` for that item's batch.

    ``run`` receives the items of one batch and returns one result per item, in
    order; it runs in a single worker thread. If it raises, every record of the
    batch gets the exception.
    """

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_size: int,
        max_wait: float,
    ) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self._run = run
        self.max_size = max_size
        self.max_wait = max(0.0, max_wait)
        self.stats = BatchStats()
        self._pending: deque[_Pending[T]] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._upcoming = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="micro-batcher")

    @contextlib.contextmanager
    def expecting(self) -> Iterator[Expected]:
        """Announce a record that is being prepared; pass the ticket to :meth:`submit`."""
        ticket = Expected(self)
        try:
            yield ticket
        finally:
            ticket.release()

    async def submit(self, item: T, ticket: Expected | None = None) -> R:
        if self._closed or self._task is None:
            raise BatcherClosed("the prediction service is not running")
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop.create_future(), loop.time())
        self._pending.append(pending)
        if ticket is not None:
            ticket.release()
        self._wakeup.set()
        return await pending.future

    async def close(self, timeout: float = 30.0) -> None:
        """Predict what is already queued, then stop; after ``timeout`` fail the rest."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout)
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(BatcherClosed("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._pending[0].arrived + self.max_wait
            while len(self._pending) < self.max_size and self._upcoming and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            count = min(len(self._pending), self.max_size)
            batch = [self._pending.popleft() for _ in range(count)]
            batch = [p for p in batch if not p.future.done()]  # callers that gave up
            if batch:
                await self._predict(loop, batch)

    async def _predict(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[T]]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} returned {len(results)} results")
        except asyncio.CancelledError:
            _fail(batch, BatcherClosed("the server is shutting down"))
            raise
        except Exception as exc:
            _fail(batch, exc)
        else:
            for p, result in zip(batch, results, strict=True):
                if not p.future.done():
                    p.future.set_result(result)
        finally:
            stats = self.stats
            stats.forward_passes += 1
            stats.records += len(batch)
            stats.largest = max(stats.largest, len(batch))
            stats.sizes[len(batch)] += 1
            stats.busy_seconds += time.perf_counter() - started


def _fail(batch: list[_Pending[Any]], exc: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)
