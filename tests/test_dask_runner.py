"""The inference flow on Dask: the same rows as on threads, the model loaded once per worker."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.inference import inference
from infergraph.inference.runners import TaskRunnerChoiceError, infer_task_runner
from infergraph.predictors.base import RecordMeta
from infergraph.predictors.digits import SAMPLES, DigitsClassifier

pytestmark = pytest.mark.usefixtures("prefect_server")

#: Loads of TracedDigits in this process; read on each Dask worker after a run.
LOADS = 0
PREDICTOR = f"{__name__}:TracedDigits"


class TracedDigits(DigitsClassifier):
    """The shipped classifier, counting its loads and naming the process of each result."""

    output_fields = (*DigitsClassifier.output_fields, "pid")

    def load(self) -> None:
        global LOADS
        LOADS += 1
        super().load()

    def postprocess_output(self, output: Any, meta: RecordMeta) -> dict[str, Any]:
        return {**super().postprocess_output(output, meta), "pid": os.getpid()}


def loads_in_this_process() -> tuple[int, int]:
    return os.getpid(), LOADS


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {r["record_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a record was written twice"
    return by_id


def assert_same_rows(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    """Same records, same fields; scores may differ only in float rounding (thread counts)."""
    assert got.keys() == want.keys()
    for record_id, row in want.items():
        other = got[record_id]
        assert other.keys() == row.keys(), record_id
        for key, value in row.items():
            if key == "pid":
                continue
            if key == "score":
                assert other[key] == pytest.approx(value, abs=1e-6), record_id
            elif key == "top_k" and value is not None:
                assert [(t["class_id"], t["category_name"]) for t in other[key]] == [
                    (t["class_id"], t["category_name"]) for t in value
                ], record_id
                assert [t["score"] for t in other[key]] == pytest.approx(
                    [t["score"] for t in value], abs=1e-6
                ), record_id
            else:
                assert other[key] == value, (record_id, key)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Every shipped sample plus four files that cannot be classified."""
    bad = tmp_path_factory.mktemp("bad")
    png = next(iter(sorted(SAMPLES.glob("*.png")))).read_bytes()
    (bad / "truncated.png").write_bytes(png[: len(png) // 2])
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.png").write_text("this is not an image")
    paths = [str(p) for p in sorted(SAMPLES.glob("*.png"))]
    paths[100:100] = [str(bad / n) for n in ("truncated.png", "empty.png", "notes.png")]
    paths.append(str(bad / "missing.png"))
    return paths


@pytest.fixture(scope="module")
def on_threads(images: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The rows of the default runner: the reference every Dask run must reproduce."""
    out = tmp_path_factory.mktemp("threads") / "rows.jsonl"
    summary = inference(source=images, predictor=PREDICTOR, sinks=[str(out)], batch_size=40)
    assert summary["images"] == len(images) and summary["errors"] == 4
    rows = read_rows(out)
    assert {r["pid"] for r in rows.values() if r["status"] == "ok"} == {os.getpid()}
    return rows


def test_a_temporary_dask_cluster_gives_the_same_rows_as_threads(
    images: list[str], on_threads: dict[str, dict], tmp_path: Path
) -> None:
    out = tmp_path / "rows.jsonl"
    summary = inference(
        source=images,
        predictor=PREDICTOR,
        sinks=[str(out)],
        batch_size=40,
        max_in_flight=3,
        task_runner="dask?workers=2&threads=1",
    )
    rows = read_rows(out)
    assert_same_rows(rows, on_threads)
    # Predicted in the two worker processes, not in the flow's.
    pids = {r["pid"] for r in rows.values() if r["status"] == "ok"}
    assert len(pids) == 2 and os.getpid() not in pids
    assert summary["images"] == len(images) and summary["written"] == len(images)
    errors = {Path(r["uri"]).name: r["error"] for r in rows.values() if r["status"] == "error"}
    assert errors.keys() == {"truncated.png", "empty.png", "notes.png", "missing.png"}
    assert "corrupt or truncated PNG" in errors["truncated.png"]
    assert "empty file" in errors["empty.png"]
    assert "not a supported image" in errors["notes.png"]
    assert "missing.png" in errors["missing.png"]
    assert sum(r["status"] == "ok" for r in rows.values()) == len(images) - 4


@pytest.fixture
def dask_cluster() -> Iterator[Any]:
    """A separate two-process Dask cluster, as an existing scheduler would be."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def test_an_existing_scheduler_loads_the_model_once_per_worker_process(
    images: list[str], on_threads: dict[str, dict], dask_cluster: Any, tmp_path: Path
) -> None:
    out = tmp_path / "rows.jsonl"
    address = dask_cluster.scheduler.address
    assert address.startswith("tcp://")
    inference(
        source=images,
        predictor=PREDICTOR,
        sinks=[str(out)],
        batch_size=20,  # 19 batches over 2 workers: each worker predicts many
        max_in_flight=4,
        task_runner=address.replace("tcp://", "dask://"),
    )
    assert_same_rows(read_rows(out), on_threads)

    loads = dask_cluster.run(loads_in_this_process)  # worker address → (pid, loads)
    assert len(loads) == 2
    assert len({pid for pid, _ in loads.values()} | {os.getpid()}) == 3
    # Both workers predicted many batches, and each loaded the model exactly once.
    assert [n for _, n in loads.values()] == [1, 1]


@pytest.mark.parametrize(
    ("choice", "reason"),
    [
        ("dask?workers=0", "workers must be a whole number"),
        ("dask?threads=two", "threads must be a whole number"),
        ("dask?cores=2", "unknown option 'cores'"),
        ("dask?memory=", "memory needs a size"),
        ("tcp://:8786", "scheme://host:port"),
        ("tcp://scheduler:port", "Port could not be cast"),
        ("ray://head:10001", "is not one of"),
        ("Threads", "is not one of"),
    ],
)
def test_a_bad_task_runner_value_is_named(choice: str, reason: str) -> None:
    with pytest.raises(TaskRunnerChoiceError, match=reason) as raised:
        infer_task_runner(choice)
    assert repr(choice) in str(raised.value)


def test_task_runner_values_map_to_dask_settings() -> None:
    assert infer_task_runner("threads") is None
    local = infer_task_runner("dask?workers=3&threads=2&memory=2GiB")
    assert local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["threads_per_worker"] == 2
    assert local.cluster_kwargs["memory_limit"] == "2GiB"
    from dask.system import CPU_COUNT

    assert infer_task_runner("dask").cluster_kwargs["n_workers"] == CPU_COUNT
    assert infer_task_runner("dask://10.0.0.5").address == "tcp://10.0.0.5:8786"
    assert infer_task_runner("tls://sched.internal:9000").address == "tls://sched.internal:9000"


def test_a_bad_task_runner_fails_the_flow_before_reading(tmp_path: Path) -> None:
    out = tmp_path / "rows.jsonl"
    with pytest.raises(TaskRunnerChoiceError, match="is not one of"):
        inference(source=str(SAMPLES), sinks=[str(out)], task_runner="processes")
    assert not out.exists()


def test_an_existing_cluster_needs_an_api_its_workers_can_reach() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(TaskRunnerChoiceError, match="set PREFECT_API_URL"):
            infer_task_runner("tcp://10.0.0.5:8786")
        assert infer_task_runner("dask") is not None  # a local cluster reaches any server
