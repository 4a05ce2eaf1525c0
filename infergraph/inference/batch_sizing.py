"""Batch sizes chosen from what batches cost, so a user need not pick one.

Each batch is one task run, whose fixed cost (a few tens of milliseconds of
Prefect bookkeeping) halves the throughput of a cheap model at a batch of 64,
while 64 decoded 24-megapixel photos take gigabytes. So the size follows two
measurements of the batches done so far: seconds per image (a batch should take
about ``target_seconds``, making the fixed cost a few percent) and bytes of
model input per image (the batches in flight must fit ``memory_budget``). The
first batches are small and grow at most fourfold each, so the first results
arrive quickly and a bad guess costs little. A large batch is still predicted
``FORWARD_BATCH`` images at a time: the budget counts model inputs, while a
forward pass's activations grow with the images in it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: A fixed size, or a function giving the size of the next batch.
BatchSize = int | Callable[[], int]

AUTO = 0  # the flow's batch_size that means "sized here"
STABLE_SIZE = 64  # AUTO's size where reruns must cut the same batches
#: Most images in one forward pass of an automatically sized batch: a batch of
#: 2,048 digits are cheap to hold, but their activations in one pass took 500 MB.
FORWARD_BATCH = 64
FIRST = 8
LARGEST = 1024
TARGET_SECONDS = 2.0
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def sizer(size: BatchSize) -> Callable[[], int]:
    """``size`` as a function (a fixed size is a constant one)."""
    if callable(size):
        return size
    return lambda: size


@dataclass
class AdaptiveBatchSize:
    """The next batch's size from the cost of the batches measured so far (thread-safe)."""

    in_flight: int = 3
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    target_seconds: float = TARGET_SECONDS
    first: int = FIRST
    largest: int = LARGEST
    _last: int = 0
    _largest_used: int = 0
    _seconds_per_image: float | None = None
    _bytes_per_image: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self) -> int:
        with self._lock:
            if self._seconds_per_image is None:
                wanted = self.first if not self._last else self._last * 2
            else:
                wanted = int(self.target_seconds / max(self._seconds_per_image, 1e-6))
                wanted = min(wanted, 4 * max(self._last, self.first))
            if self._bytes_per_image:
                fits = self.memory_budget / self.in_flight / self._bytes_per_image
                wanted = min(wanted, int(fits))
            self._last = max(1, min(wanted, self.largest))
            self._largest_used = max(self._largest_used, self._last)
            return self._last

    def observe(self, images: int, seconds: float, input_bytes: int) -> None:
        """A batch of ``images`` took ``seconds`` of work and ``input_bytes`` of model input."""
        if images <= 0:
            return
        with self._lock:
            per_image, previous = seconds / images, self._seconds_per_image
            # Smoothed, but a slower batch counts at once: too large is worse than too small.
            if previous is not None and per_image < previous:
                per_image = 0.5 * (previous + per_image)
            self._seconds_per_image = per_image
            self._bytes_per_image = max(self._bytes_per_image, input_bytes / images)

    def describe(self) -> str:
        """What the sizing found, for the run's last line."""
        if self._seconds_per_image is None:
            return "batches sized automatically"
        return (
            f"batches of up to {self._largest_used} images "
            f"({self._seconds_per_image * 1000:.2f} ms, {self._bytes_per_image / 1024:.0f} KiB "
            "of model input per image)"
        )


def batch_sizes(
    batch_size: int, in_flight: int, memory_mib: int, stable: bool = False
) -> BatchSize:
    """The flow's batch parameters as a size: fixed, or adaptive for ``AUTO``.

    ``stable`` (see :func:`stable_batches`) keeps ``AUTO`` at :data:`STABLE_SIZE`.
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be a positive number of images or {AUTO} (automatic)")
    if memory_mib < 1:
        raise ValueError(f"batch_memory_mib must be at least 1, got {memory_mib}")
    if batch_size != AUTO:
        return batch_size
    if stable:
        return STABLE_SIZE
    return AdaptiveBatchSize(in_flight=max(1, in_flight), memory_budget=memory_mib * 2**20)


def stable_batches(source: Any, sinks: Sequence[Any]) -> bool:
    """Whether reruns must cut the same batches: a listing written to chunk-named objects.

    Records without a group (a folder, an S3 listing) are written in chunks named
    after the records of their batch, and an object sink (S3 CSV) stores each chunk
    under that name: a rerun overwrites its objects only if it cuts the same
    batches, which measured sizes would not. Queue records are chunked per message.
    """
    return not getattr(source, "grouped", False) and any(
        getattr(sink, "named_by_chunk", False) for sink in sinks
    )


def forward_batch(size: BatchSize) -> int:
    """Most images per forward pass: a fixed batch is one pass, as it always was."""
    return FORWARD_BATCH if isinstance(size, AdaptiveBatchSize) else 0


def describe_batches(size: BatchSize, in_flight: int, downloads: int, task_runner: str) -> str:
    """The run's batch settings in words (its first log line and summary)."""
    sizes = size.describe() if isinstance(size, AdaptiveBatchSize) else f"{size} images"
    return f"{sizes}, {in_flight} in flight, {downloads} parallel downloads, runner {task_runner}"
