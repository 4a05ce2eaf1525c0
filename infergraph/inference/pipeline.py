"""The streaming loop behind the inference flow.

Batches are pulled from the source by a background thread only when a slot is
free, so at most ``max_in_flight`` batches exist at once (memory is bounded by
batch size, not by the size of the data) and a queue is never read faster than
it is processed. While one batch is predicted the next ones download and decode
(each is its own task on the flow's task runner). Results are written as soon
as their group is whole, and the group is acknowledged only after that write.
A write that fails for a reason a retry cannot fix is split into one write per
chunk, so a single bad message cannot hold back (and, through repeated
redelivery, drag into the dead-letter queue) the messages written beside it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.utilities.annotations import quote

from infergraph.aws.errors import is_transient
from infergraph.inference.batch import BatchOutput, add_reference_fields, result_row
from infergraph.inference.batch_sizing import AdaptiveBatchSize, BatchSize
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.records import ImageRecord, ResultChunk
from infergraph.inference.reporting import RunSummary
from infergraph.inference.sinks.base import Sink
from infergraph.inference.sources.base import Source
from infergraph.inference.tracking import GroupTracker
from infergraph.predictors.base import RecordError
from infergraph.predictors.loading import PredictorSpec, resolve_predictor_class
from infergraph.runs import untagged_tasks

HEARTBEAT_SECONDS = 5.0
MAX_PROBLEMS = 100

#: Called with the chunks just written, before their groups are acknowledged;
#: returns problems to report (e.g. a notification that could not be sent).
AfterWrite = Callable[[list[ResultChunk]], list[str]]
#: Called with each batch as it is pulled from the source, before it is submitted
#: (in the feeder thread, beside the work in flight); returns problems to report.
BeforeBatch = Callable[[list[ImageRecord]], list[str]]


class _BatchFeeder:
    """Pulls batches from the source in a thread, one per free slot."""

    def __init__(
        self,
        batches: Iterator[list[ImageRecord]],
        slots: int,
        events: queue.Queue,
        hooks: Sequence[BeforeBatch] = (),
    ):
        self._batches = batches
        self._hooks = list(hooks)
        self._slots = threading.Semaphore(slots)
        self._events = events
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                while not self._slots.acquire(timeout=0.5):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                batch = next(self._batches, None)
                if batch is None:
                    self._events.put(("end", None))
                    return
                for hook in self._hooks:
                    try:
                        problems = hook(batch)
                    except Exception as exc:
                        problems = [f"before-batch hook failed: {type(exc).__name__}: {exc}"]
                    if problems:
                        self._events.put(("problems", problems))
                self._events.put(("batch", batch))
        except BaseException as exc:
            self._events.put(("error", exc))

    def release(self) -> None:
        self._slots.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class BatchPipeline:
    """Drives one run: source → infer tasks → write tasks → acknowledgements."""

    def __init__(
        self,
        source: Source,
        predictor: PredictorSpec,
        infer: Any,
        write: Any,
        sinks: Sequence[Sink],
        fetch: FetchOptions,
        batch_size: BatchSize,
        max_in_flight: int = 3,
        max_writes: int = 4,
        after_write: Sequence[AfterWrite] = (),
        before_batch: Sequence[BeforeBatch] = (),
        infer_runner: TaskRunner | None = None,
    ) -> None:
        """``infer_runner`` (started) runs the infer tasks, e.g. on a Dask cluster
        (infergraph/inference/runners.py); ``None`` uses the flow's own. Writes always stay here.
        ``batch_size`` is a number, or an :class:`AdaptiveBatchSize` told each batch's cost."""
        if isinstance(batch_size, int) and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_in_flight < 1 or max_writes < 1:
            raise ValueError("max_in_flight and max_writes must be at least 1")
        self.source = source
        self.predictor = predictor
        self.infer = infer
        self.write = write
        self.sinks = list(sinks)
        self.fetch = fetch
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.max_writes = max_writes
        self.after_write = list(after_write)
        self.before_batch = list(before_batch)
        self.infer_runner = infer_runner
        self._hidden_problems = 0
        self.tracker = GroupTracker()
        self.summary = RunSummary(source=source.description)
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._infers: dict[PrefectFuture, list[ImageRecord]] = {}
        self._writes: dict[PrefectFuture, list[ResultChunk]] = {}
        self._owed_slots = 0
        self._batch_index = 0

    def run(self) -> RunSummary:
        with untagged_tasks():  # no concurrency-slot round trips per task run
            return self._run()

    def _run(self) -> RunSummary:
        feeder = _BatchFeeder(
            self.source.batches(self.batch_size),
            self.max_in_flight,
            self._events,
            self.before_batch,
        )
        ended = False
        try:
            while not (ended and not self._infers and not self._writes):
                try:
                    kind, payload = self._events.get(timeout=HEARTBEAT_SECONDS)
                except queue.Empty:
                    kind, payload = "idle", None
                if kind == "batch":
                    self._submit_batch(payload)
                elif kind == "end":
                    ended = True
                elif kind == "error":
                    raise payload
                elif kind == "infer":
                    self._on_batch_done(payload)
                elif kind == "write":
                    self._on_write_done(payload)
                elif kind == "problems":
                    self.report(payload)
                while self._owed_slots and len(self._writes) < self.max_writes:
                    self._owed_slots -= 1
                    feeder.release()
                self.source.heartbeat()
        finally:
            feeder.stop()
            self._wait_for_writes()
            self.report(getattr(self.source, "problems", ()))
            if self._hidden_problems:
                self.summary.problems.append(f"… and {self._hidden_problems} more problems")
        self.summary.finished = time.perf_counter()
        self.summary.idle_seconds = self.source.idle_seconds
        return self.summary

    def report(self, problems: Iterable[str]) -> None:
        """Add problems to the summary, each once, at most ``MAX_PROBLEMS`` of them."""
        for problem in problems:
            if problem in self.summary.problems:
                continue
            if len(self.summary.problems) < MAX_PROBLEMS:
                self.summary.problems.append(problem)
            else:
                self._hidden_problems += 1

    def _submit_batch(self, records: list[ImageRecord]) -> None:
        # quote(): Prefect would otherwise walk every record (and, for writes, every
        # result row) looking for futures: a large share of the run's CPU.
        parameters = {
            "records": quote(records),
            "index": self._batch_index,
            "predictor": self.predictor,
            "fetch": self.fetch,
        }
        if self.infer_runner is None:
            future = self.infer.submit(**parameters)
        else:  # Dask reads a quote (a tuple) as a task spec: the records go bare
            future = self.infer_runner.submit(self.infer, {**parameters, "records": records})
        self._batch_index += 1
        self._infers[future] = records
        future.add_done_callback(lambda f: self._events.put(("infer", f)))

    def _on_batch_done(self, future: PrefectFuture) -> None:
        records = self._infers.pop(future)
        self._owed_slots += 1
        try:
            output: BatchOutput = future.result()
        except Exception as exc:
            output = self._failed_batch(records, exc)
        self.summary.prepare_seconds += output.prepare_seconds
        self.summary.predict_seconds += output.predict_seconds
        seconds = output.prepare_seconds + output.predict_seconds
        if isinstance(self.batch_size, AdaptiveBatchSize) and seconds > 0:
            self.batch_size.observe(len(output.rows), seconds, output.input_bytes)
        chunks, retry = self.tracker.add(records, output.rows, output.retryable)
        if retry:
            self.summary.retried_groups += len(retry)
            self.source.nack(retry, "transient failure while reading or predicting")
        for chunk in chunks:
            self.summary.add_rows(chunk.results)
        if chunks:
            self._submit_write(chunks)

    def _submit_write(self, chunks: list[ResultChunk]) -> None:
        write = self.write.submit(self.sinks, quote(chunks))
        self._writes[write] = chunks
        write.add_done_callback(lambda f: self._events.put(("write", f)))

    def _on_write_done(self, future: PrefectFuture) -> None:
        chunks = self._writes.pop(future)
        rows = sum(len(c.results) for c in chunks)
        groups = [g for c in chunks for g in c.groups]
        try:
            future.result()
        except Exception as exc:
            if len(chunks) > 1 and not is_transient(exc):
                for chunk in chunks:  # find the chunk at fault; the others get written
                    self._submit_write([chunk])
                return
            self.summary.write_failures += rows
            self.report([f"{rows} rows not written: {type(exc).__name__}: {exc}"])
            if groups:
                self.source.nack(groups, f"write failed: {type(exc).__name__}: {exc}")
            return
        self.summary.written += rows
        for hook in self.after_write:
            try:
                problems = hook(chunks)
            except Exception as exc:
                problems = [f"after-write hook failed: {type(exc).__name__}: {exc}"]
            self.report(problems)
        if groups:
            self.source.ack(groups)

    def _wait_for_writes(self) -> None:
        """On the way out (even after an error), let started writes finish and be acknowledged."""
        while self._writes:
            future = next(iter(self._writes))
            with contextlib.suppress(Exception):
                future.wait()
            self._on_write_done(future)

    def _failed_batch(self, records: list[ImageRecord], exc: BaseException) -> BatchOutput:
        """A batch whose task failed outright: every record carries the error.

        Queue records are retried (the queue's redrive policy ends a poison
        message in the dead-letter queue); others are reported as failed.
        """
        error = RecordError(f"batch failed: {type(exc).__name__}: {exc}")
        fields = resolve_predictor_class(self.predictor.path).output_fields
        rows = [result_row(r, fields, error) for r in records]
        if self.fetch.reference_fields:
            rows = [add_reference_fields(row, None) for row in rows]
        retry = is_transient(exc) or any(r.group is not None for r in records)
        return BatchOutput(rows=rows, retryable=[retry] * len(records))
