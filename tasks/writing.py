"""The Prefect task that writes chunks of results to every sink at once."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.errors import retry_if_transient
from tasks.records import ResultChunk
from tasks.sinks import Sink


def write_chunks(sinks: Sequence[Sink], chunks: Sequence[ResultChunk]) -> int:
    """Write every chunk to every sink, the sinks in parallel; all must succeed."""

    def write_all(sink: Sink) -> None:
        for chunk in chunks:
            sink.write(chunk)

    if len(sinks) == 1:
        write_all(sinks[0])
    else:
        with ThreadPoolExecutor(len(sinks), thread_name_prefix="sink") as pool:
            futures = [(sink, pool.submit(write_all, sink)) for sink in sinks]
        errors = [(s, f.exception()) for s, f in futures if f.exception() is not None]
        if errors:
            if len(errors) == 1:
                raise errors[0][1]  # type: ignore[misc]
            raise ExceptionGroup(
                "sinks failed: " + ", ".join(s.name for s, _ in errors),
                [e for _, e in errors],  # type: ignore[misc]
            )
    return sum(len(c.results) for c in chunks)


@task(
    name="write-results",
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_if_transient,
)
def write_results(sinks: list[Sink], chunks: list[ResultChunk]) -> int:
    """Store chunks in every sink; a failure fails the task, never just a log line."""
    return write_chunks(sinks, chunks)
