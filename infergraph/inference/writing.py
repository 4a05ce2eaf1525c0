"""Writing chunks of results to every sink at once."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import Sink


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
