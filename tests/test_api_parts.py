"""The API's parts on their own: micro-batcher, request-log queue, sign-in limiter, users."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from infergraph.api.auth import FailedLoginLimiter
from infergraph.api.batcher import BatcherClosed, MicroBatcher
from infergraph.api.requestlog import RequestContext, RequestLog
from infergraph.api.users import UsersError, UserStore, hash_password, hash_rounds, parse_users
from infergraph.inference.records import ResultChunk
from infergraph.inference.sinks.base import JsonLinesFileSink, Sink
from tests.support.waiting import wait_until


def test_batcher_routes_results_and_respects_max_size() -> None:
    seen: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        seen.append(items)
        return [i * 10 for i in items]

    async def scenario() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_size=8, max_wait=0.05)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(50)))
        await batcher.close()
        return list(results)

    assert asyncio.run(scenario()) == [i * 10 for i in range(50)]
    assert sorted(i for batch in seen for i in batch) == list(range(50))
    # 50 submissions queued before the first pass share passes of at most 8: ceil(50 / 8) = 7
    assert [len(b) for b in seen] == [8, 8, 8, 8, 8, 8, 2]


def test_batcher_waits_only_for_records_on_their_way() -> None:
    seen: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        seen.append(items)
        return items

    async def scenario() -> None:
        # max_wait is an hour: a batch that waited for it would trip the 30 s guards below.
        batcher: MicroBatcher[str, str] = MicroBatcher(run, max_size=8, max_wait=3600)
        batcher.start()
        # Nothing announced: no waiting for company.
        assert await asyncio.wait_for(batcher.submit("alone"), 30) == "alone"
        announced, queued = asyncio.Event(), asyncio.Event()

        async def late() -> str:
            with batcher.expecting() as ticket:
                announced.set()
                await queued.wait()  # "decoding" while the early record waits
                for _ in range(10):  # every ready task runs: the batcher has looked at "early"
                    await asyncio.sleep(0)
                return await batcher.submit("late", ticket)

        async def early() -> str:
            await announced.wait()
            queued.set()  # submit() queues the record before it first awaits
            return await batcher.submit("early")

        got = await asyncio.wait_for(asyncio.gather(late(), early()), 30)
        assert got == ["late", "early"]
        await batcher.close()

    asyncio.run(scenario())
    assert seen == [["alone"], ["early", "late"]]  # the early one waited for the announced one


def test_batcher_failure_reaches_every_caller_and_it_keeps_serving() -> None:
    def run(items: list[int]) -> list[int]:
        if 13 in items:
            raise RuntimeError("bad batch")
        return items

    async def scenario() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, max_size=4, max_wait=0.05)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in (11, 12, 13)), return_exceptions=True
        )
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert await batcher.submit(7) == 7
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(8)
        assert batcher.stats.forward_passes == 2
        assert batcher.stats.sizes == {3: 1, 1: 1}

    asyncio.run(scenario())


class GatedSink(Sink):
    """A real JSON Lines sink that cannot write until the gate opens (a stalled backend)."""

    def __init__(self, path: Path) -> None:
        self.inner = JsonLinesFileSink(path)
        self.name = str(path)
        self.gate = threading.Event()

    def open(self) -> None:
        self.inner.open()

    def write(self, chunk: ResultChunk) -> None:
        self.gate.wait(30)
        self.inner.write(chunk)


def test_request_log_drops_rows_rather_than_blocking_when_full(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path / "log.jsonl")
    log = RequestLog([sink], ("class_id",), max_queue=2, chunk_rows=1, flush_seconds=0.01)
    log.open()
    contexts = [
        RequestContext(f"r{i}", "2025-01-01T00:00:00Z", "POST", "/x", "c") for i in range(6)
    ]
    log.record(contexts[0], 200)  # taken by the writer, which then stalls on the gate
    wait_until(lambda: not log.stats()["queued_requests"], timeout=10, interval=0.01)
    recording = threading.Thread(target=lambda: [log.record(c, 500) for c in contexts[1:]])
    recording.start()
    recording.join(10)
    assert not recording.is_alive() and not sink.gate.is_set()  # never waits for the sink
    assert log.stats()["rows_dropped"] == 3  # two fit in the queue
    sink.gate.set()
    log.close()
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in rows] == ["r0", "r1", "r2"]
    assert rows[1]["status_code"] == 500 and rows[1]["success"] is False
    assert set(rows[0]) >= {"record_id", "class_id", "latency_ms", "error"}
    assert log.stats()["rows_written"] == 3


def test_limiter_counts_attempts_until_they_succeed() -> None:
    limiter = FailedLoginLimiter(limit=2, window=60)
    assert limiter.begin("a", now=0) is None
    assert limiter.begin("a", now=1) is None
    assert limiter.begin("a", now=2) == pytest.approx(58)  # in flight attempts count too
    limiter.succeeded("a")
    assert limiter.begin("a", now=3) is None
    assert limiter.begin("b", now=3) is None  # per client
    assert limiter.begin("a", now=61) is None  # the first failure has aged out


def test_users_file_errors_name_the_line_and_unknown_users_cost_a_hash(tmp_path: Path) -> None:
    good = hash_password("pw", rounds=5)
    with pytest.raises(UsersError, match=r"users:2: the hash for 'bob' is not a bcrypt hash"):
        parse_users(f"alice:{good}\nbob:plaintext\n", "users")
    with pytest.raises(UsersError, match=r"users:2: user 'alice' appears twice"):
        parse_users(f"alice:{good}\nalice:{good}\n", "users")
    with pytest.raises(UsersError, match="72"):
        hash_password("x" * 73)
    path = tmp_path / "users"
    path.write_text(f"# comment\n\nalice:{good}\n")
    store = UserStore.from_file(path)
    assert store.verify("alice", "pw") and not store.verify("alice", "nope")
    assert not store.verify("nobody", "pw")
    assert hash_rounds(store._dummy) == 5  # unknown names are checked at the users' cost
    assert not store.verify("alice", "pw" + "x" * 80)
