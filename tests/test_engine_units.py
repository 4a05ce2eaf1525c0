"""The inference engine's pure logic, without a Prefect server: fast, and exact about order.

``BatchPipeline`` is driven here by plain thread-pool "tasks" with the same submit/future
surface as Prefect's, so its event loop (acknowledge only after the write, nack on a
failed write, bounded batches in flight) is tested in milliseconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from infergraph.inference.artifacts import errors_markdown
from infergraph.inference.batch import BatchOutput, result_row
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.pipeline import BatchPipeline
from infergraph.inference.records import ImageRecord, ResultChunk, RowStatus
from infergraph.inference.reporting import (
    MAX_LISTED_ERRORS,
    MAX_WARNED_ERRORS,
    RunSummary,
    error_kind,
    readable_error,
)
from infergraph.inference.sinks.base import Sink
from infergraph.inference.sources.base import Source, source_label
from infergraph.inference.tracking import GroupTracker, batch_key
from infergraph.predictors.base import RecordError
from infergraph.predictors.loading import PredictorSpec
from infergraph.runs import artifact_key, entry_point

FIELDS = ("class_id", "category_name", "score")


def records(group: str | None, size: int, start: int = 0) -> list[ImageRecord]:
    return [
        ImageRecord(uri=f"s3://b/{group}-{i}.png", record_id=f"{group}#{i}", group=group,
                    group_size=size)
        for i in range(start, start + size)
    ]  # fmt: skip


def ok_row(record: ImageRecord) -> dict[str, Any]:
    return result_row(record, FIELDS, {"class_id": 1, "category_name": "1", "score": 0.9})


# -- GroupTracker ----------------------------------------------------------------------------


def test_a_group_spread_over_batches_is_released_once_whole() -> None:
    tracker = GroupTracker()
    first, second = records("m1", 3)[:2], records("m1", 3)[2:]
    ready, retry = tracker.add(first, [ok_row(r) for r in first], [False, False])
    assert (ready, retry) == ([], [])
    ready, retry = tracker.add(second, [ok_row(r) for r in second], [False])
    assert retry == []
    assert [(c.key, c.groups, len(c.results)) for c in ready] == [("m1", ["m1"], 3)]


def test_a_group_with_a_retryable_failure_is_retried_not_written() -> None:
    tracker = GroupTracker()
    batch = records("m1", 2)
    ready, retry = tracker.add(batch, [ok_row(r) for r in batch], [False, True])
    assert ready == [] and retry == ["m1"]


def test_records_without_a_group_are_written_under_a_key_that_depends_only_on_them() -> None:
    batch = records(None, 3)
    ready, _ = GroupTracker().add(batch, [ok_row(r) for r in batch], [False] * 3)
    again, _ = GroupTracker().add(batch, [ok_row(r) for r in batch], [False] * 3)
    assert [c.key for c in ready] == [c.key for c in again] == [batch_key(batch)]
    assert ready[0].groups == []
    assert batch_key(batch) != batch_key(batch[:2])


# -- RunSummary ------------------------------------------------------------------------------


def test_the_summary_counts_errors_and_accuracy_over_labelled_rows() -> None:
    summary = RunSummary(source="x")
    good = ImageRecord("a.png", fields={"label": "1"})
    wrong = ImageRecord("b.png", fields={"label": "7"})
    unlabelled = ImageRecord("c.png")
    broken = ImageRecord("d.png")
    summary.add_rows(
        [ok_row(good), ok_row(wrong), ok_row(unlabelled),
         result_row(broken, FIELDS, RecordError("not an image"))]
    )  # fmt: skip
    assert (summary.images, summary.predicted, summary.errors) == (4, 3, 1)
    assert (summary.labelled, summary.correct, summary.accuracy) == (2, 1, 0.5)
    assert summary.per_class == {"1": 3}
    assert summary.error_list == [("d.png", "not an image")]
    line = summary.summary_line()
    assert "1 errors" in line and "accuracy 50.00% of 2 labelled" in line
    assert summary.state_message() == "Completed: 3 of 4 images, 1 error"
    assert summary.outcome() == "1 of 4 failed · accuracy 50.0% of 2 labelled"


def test_time_spent_waiting_for_input_is_shown_and_left_out_of_the_rate() -> None:
    summary = RunSummary(started=0.0, finished=25.0, idle_seconds=20.0)
    summary.add_rows([ok_row(ImageRecord(f"{i}.png")) for i in range(100)])
    assert summary.images_per_second == 20.0  # 100 images in the 5 s not spent waiting
    assert "20.0 images/s over 25.00 s (20.00 s of it waiting for input)" in summary.summary_line()
    assert summary.as_dict()["idle_seconds"] == 20.0


def test_the_error_list_is_capped_but_every_error_is_counted() -> None:
    summary = RunSummary()
    bad = [ImageRecord(f"{i}.png") for i in range(MAX_LISTED_ERRORS + 5)]
    summary.add_rows([result_row(r, FIELDS, RecordError("bad")) for r in bad])
    assert summary.errors == MAX_LISTED_ERRORS + 5
    assert len(summary.error_list) == MAX_LISTED_ERRORS


def test_failed_images_are_warned_one_by_one_up_to_a_cap_then_counted() -> None:
    warned: list[str] = []
    summary = RunSummary(source="/data/in/", warn=warned.append)
    bad = [ImageRecord(f"/data/in/sub/{i}.png") for i in range(MAX_WARNED_ERRORS + 7)]
    summary.add_rows(
        [result_row(r, FIELDS, RecordError(f"{r.uri}: empty file (0 bytes)")) for r in bad]
    )
    assert len(warned) == MAX_WARNED_ERRORS
    assert warned[0] == "failed: sub/0.png: empty file (0 bytes)"
    assert summary.more_errors_line() is not None and "7 more" in summary.more_errors_line()


def test_error_messages_read_without_the_path_and_group_by_kind() -> None:
    uri = "s3://bucket/in/a.png"
    assert (
        readable_error(uri, f"cannot read {uri}: NoSuchKey: gone") == "cannot read: NoSuchKey: gone"
    )
    assert error_kind("cannot read: NoSuchKey: gone") == "cannot read: NoSuchKey"
    assert error_kind("corrupt or truncated PNG data: broken data stream") == (
        "corrupt or truncated PNG data"
    )
    assert (
        readable_error(uri, "x" * 500).endswith("…") and len(readable_error(uri, "x" * 500)) == 200
    )
    summary = RunSummary(source="s3://bucket/in/")
    rows = [result_row(ImageRecord(f"s3://bucket/in/{n}.png"), FIELDS, RecordError(e))
            for n, e in [("a", "empty file (0 bytes)"), ("b", "empty file (0 bytes)"),
                         ("c", "not a supported image (looks like text: 'hi')")]]  # fmt: skip
    summary.add_rows(rows)
    markdown = errors_markdown(summary)
    assert "| empty file | 2 |" in markdown and "| not a supported image | 1 |" in markdown
    assert "- `a.png`: empty file (0 bytes)" in markdown


def test_runs_are_named_after_their_source_and_keyed_by_entry_point() -> None:
    assert source_label("") == "samples/"
    assert source_label("/data/photos/") == "photos/"
    assert source_label("/data/photos/*.jpg") == "photos/*.jpg"
    assert source_label("sqs://inference-requests") == "sqs://inference-requests"
    assert source_label(["s3://b/k/one.png"]) == "s3://b/k/one.png"
    assert source_label(["a.png", "b.png"]) == "2 listed images"
    assert entry_point(["inference", "upload"]) == "upload" and entry_point([]) is None
    assert artifact_key("inference", "on-demand") == "inference-on-demand"
    assert artifact_key("Inference", "S3 Upload!", None) == "inference-s3-upload"


# -- BatchPipeline with thread-pool tasks ----------------------------------------------------


class _Future:
    """The part of PrefectFuture the pipeline uses, over a concurrent future."""

    def __init__(self, inner: Future) -> None:
        self._inner = inner

    def add_done_callback(self, fn: Any) -> None:
        self._inner.add_done_callback(lambda _: fn(self))

    def result(self) -> Any:
        return self._inner.result()

    def wait(self) -> None:
        self._inner.exception()


class ThreadTask:
    def __init__(self, fn: Any, pool: ThreadPoolExecutor) -> None:
        self.fn, self.pool, self.calls = fn, pool, 0

    def submit(self, *args: Any, **kwargs: Any) -> _Future:
        self.calls += 1
        unquote = [getattr(a, "unquote", lambda a=a: a)() for a in args]
        kw = {k: getattr(v, "unquote", lambda v=v: v)() for k, v in kwargs.items()}
        return _Future(self.pool.submit(self.fn, *unquote, **kw))


class Queue(Source):
    description = "test queue"

    def __init__(self, messages: dict[str, int], log: list[tuple[str, str]]) -> None:
        self.messages, self.log = messages, log
        self.nacked: list[str] = []

    def records(self) -> Iterator[ImageRecord]:
        for group, size in self.messages.items():
            yield from records(group, size)

    def ack(self, groups: Sequence[str]) -> None:
        self.log.extend(("ack", g) for g in groups)

    def nack(self, groups: Sequence[str], reason: str) -> None:
        self.nacked.extend(groups)


class LoggingSink(Sink):
    name = "log"

    def __init__(self, log: list[tuple[str, str]], fail_on: str | None = None) -> None:
        self.log, self.fail_on = log, fail_on

    def write(self, chunk: ResultChunk) -> None:
        if chunk.key == self.fail_on:
            raise ValueError(f"cannot store {chunk.key}")
        self.log.append(("write", chunk.key))


def infer(records: list[ImageRecord], index: int, predictor: Any, fetch: Any) -> BatchOutput:
    rows = [
        result_row(r, FIELDS, RecordError("corrupt") if r.record_id.endswith("#1") else
                   {"class_id": 0, "category_name": "0", "score": 1.0})
        for r in records
    ]  # fmt: skip
    return BatchOutput(rows=rows, retryable=[False] * len(rows))


def write(sinks: list[Sink], chunks: list[ResultChunk]) -> int:
    for sink in sinks:
        for chunk in chunks:
            sink.write(chunk)
    return sum(len(c.results) for c in chunks)


def run(source: Source, sink: Sink, **options: Any) -> tuple[RunSummary, ThreadTask]:
    with ThreadPoolExecutor(4) as pool:
        infer_task = ThreadTask(infer, pool)
        summary = BatchPipeline(
            source=source,
            predictor=PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"),
            infer=infer_task,
            write=ThreadTask(write, pool),
            sinks=[sink],
            fetch=FetchOptions(),
            batch_size=options.pop("batch_size", 4),
            **options,
        ).run()
    return summary, infer_task


def test_every_message_is_acknowledged_only_after_its_write() -> None:
    log: list[tuple[str, str]] = []
    summary, infer_task = run(Queue({"m1": 3, "m2": 5, "m3": 1}, log), LoggingSink(log))
    for group in ("m1", "m2", "m3"):
        assert log.index(("write", group)) < log.index(("ack", group))
    assert infer_task.calls == 3  # 9 records in batches of 4
    assert (summary.images, summary.errors, summary.written) == (9, 2, 9)  # m1#1, m2#1


def test_a_failed_write_nacks_only_its_own_message() -> None:
    log: list[tuple[str, str]] = []
    queue = Queue({"m1": 2, "m2": 2}, log)
    summary, _ = run(queue, LoggingSink(log, fail_on="m2"), batch_size=4)
    assert ("ack", "m1") in log and ("ack", "m2") not in log
    assert queue.nacked == ["m2"]
    assert summary.write_failures == 2 and summary.written == 2


def test_a_failed_batch_is_retried_for_a_queue_and_reported_for_a_listing() -> None:
    def broken(*args: Any, **kwargs: Any) -> BatchOutput:
        raise RuntimeError("model exploded")

    def run_broken(source: Source, log: list[tuple[str, str]]) -> RunSummary:
        with ThreadPoolExecutor(2) as pool:
            return BatchPipeline(
                source=source,
                predictor=PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"),
                infer=ThreadTask(broken, pool),
                write=ThreadTask(write, pool),
                sinks=[LoggingSink(log)],
                fetch=FetchOptions(),
                batch_size=2,
            ).run()

    log: list[tuple[str, str]] = []
    queue = Queue({"m1": 2}, log)
    summary = run_broken(queue, log)
    assert queue.nacked == ["m1"] and summary.retried_groups == 1
    assert log == []  # nothing written, nothing acknowledged: the message comes back

    listing = Queue({}, log)
    listing.records = lambda: iter(records(None, 2))  # type: ignore[method-assign]
    summary = run_broken(listing, log)
    assert summary.errors == 2 and [k for k, _ in log] == ["write"]
    assert all("model exploded" in e for _, e in summary.error_list)


def test_no_more_batches_are_in_flight_than_allowed() -> None:
    log: list[tuple[str, str]] = []
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def slow(records: list[ImageRecord], index: int, predictor: Any, fetch: Any) -> BatchOutput:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(0.05)
        with lock:
            running -= 1
        return infer(records, index, predictor, fetch)

    with ThreadPoolExecutor(8) as pool:
        BatchPipeline(
            source=Queue({f"m{i}": 1 for i in range(12)}, log),
            predictor=PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"),
            infer=ThreadTask(slow, pool),
            write=ThreadTask(write, pool),
            sinks=[LoggingSink(log)],
            fetch=FetchOptions(),
            batch_size=1,
            max_in_flight=2,
        ).run()
    assert peak == 2
    assert sum(1 for kind, _ in log if kind == "ack") == 12


@pytest.mark.parametrize("status", list(RowStatus))
def test_row_statuses_are_plain_strings_for_every_sink(status: RowStatus) -> None:
    import json

    assert json.loads(json.dumps({"status": status})) == {"status": status.value}
    assert f"{status}" == status.value


def test_batch_tasks_drop_the_entry_point_tag_but_keep_a_users_own() -> None:
    """A user's tag may carry a concurrency limit meant for the tasks; ``cli`` never does."""
    from prefect import tags
    from prefect.context import TagsContext

    from infergraph.runs import CLI_TAG, untagged_tasks

    with tags(CLI_TAG, "gpu"):
        with untagged_tasks():
            assert TagsContext.get().current_tags == {"gpu"}
        assert TagsContext.get().current_tags == {CLI_TAG, "gpu"}
