"""The inference flow end to end on a real Prefect server, and the pipeline's guarantees."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pytest
import torch
from PIL import Image
from prefect import flow

from flows.inference import inference
from infergraph.inference.decode import decode_image
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.pipeline import BatchPipeline
from infergraph.inference.records import ImageRecord, ResultChunk
from infergraph.inference.sinks.base import Sink
from infergraph.inference.sources.base import Source
from infergraph.predictors.digits import SAMPLES
from infergraph.predictors.digits.model import DigitsNet, to_model_input
from infergraph.predictors.loading import PredictorSpec, PredictorSpecError
from tasks.inference import infer_batch, write_results
from tests.support.images import encode

pytestmark = pytest.mark.usefixtures("prefect_server")
REPO = Path(__file__).resolve().parent.parent


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def artifacts_by_key(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    return {key: a.data for key, a in artifacts_by_key(flow_run_id).items()}


def test_shipped_samples_match_a_direct_model_loop(tmp_path: Path) -> None:
    state = inference(
        sinks=[str(tmp_path / "out.csv"), str(tmp_path / "out.jsonl")],
        batch_size=48,
        return_state=True,
    )
    summary = state.result()
    rows = {r["uri"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert summary["images"] == len(rows) == len(list(SAMPLES.glob("*.png"))) >= 300
    assert summary["errors"] == 0 and summary["accuracy"] >= 0.95

    net = DigitsNet()
    net.load_state_dict(torch.load(SAMPLES.parent / "weights.pt", weights_only=True))
    net.eval()
    correct = 0
    for path in sorted(SAMPLES.glob("*.png")):
        with torch.inference_mode():
            x = to_model_input(decode_image(path.read_bytes(), path.name))
            probs = torch.softmax(net(x.unsqueeze(0)), dim=-1)[0]
        row = rows[str(path)]
        assert row["class_id"] == int(probs.argmax()), path.name
        assert row["score"] == pytest.approx(float(probs.max()), abs=1e-5)
        correct += row["category_name"] == row["label"]
    assert summary["accuracy"] == pytest.approx(correct / len(rows))

    with open(tmp_path / "out.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {
        "uri",
        "label",
        "image_id",
        "class_id",
        "category_name",
        "score",
        "top_k",
        "status",
    } <= set(table[0])
    assert json.loads(table[0]["top_k"])[0]["class_id"] == int(table[0]["class_id"])

    data = artifacts_of(state.state_details.flow_run_id)
    table = {r["what"]: r["value"] for r in json.loads(data["inference-summary"])}
    assert table["images"] == str(len(rows)) and table["failed"].startswith("0 of ")
    assert table["accuracy"] == f"{correct / len(rows):.1%} ({correct} of {len(rows)} labelled)"
    assert table["predictor"] == "infergraph.predictors.digits:DigitsClassifier"
    assert table["batches"].startswith("48 images")
    classes = json.loads(data["inference-classes"])
    assert sum(int(r["images"].split(" of ")[0]) for r in classes) == len(rows)
    assert all(re.fullmatch(rf"\d+ of {len(rows)} \(\d+\.\d%\)", r["images"]) for r in classes)
    assert {(r["label"], r["class id"]) for r in classes} == {(str(i), str(i)) for i in range(10)}
    assert data["inference-errors"].startswith("# No errors")


def test_bad_files_become_per_record_errors(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    good = sorted(SAMPLES.glob("*.png"))[:10]
    for path in good:
        shutil.copy(path, folder / "nested" / path.name)
    png = good[0].read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    (folder / "black.png").write_bytes(encode(Image.new("L", (64, 64)), "PNG"))
    huge = np.zeros((1, 1), dtype=np.uint8)
    (folder / "huge.png").write_bytes(encode(Image.fromarray(huge).resize((3000, 3000)), "PNG"))

    state = inference(
        source=str(folder),
        sinks=[str(tmp_path / "out.jsonl"), str(tmp_path / "out.csv")],
        batch_size=4,
        max_pixels=1_000_000,
        return_state=True,
    )
    summary = state.result()
    rows = {Path(r["uri"]).name: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert summary["images"] == len(rows) == 15
    assert summary["errors"] == 4
    expected = {
        "truncated.png": "corrupt or truncated PNG",
        "empty.jpg": "empty file",
        "notes.png": "not a supported image",
        "huge.png": "over the limit of 1,000,000",
    }
    for name, reason in expected.items():
        assert rows[name]["status"] == "error" and rows[name]["class_id"] is None
        assert reason in rows[name]["error"] and name in rows[name]["error"]
    assert rows["black.png"]["status"] == "ok"
    assert all(rows[p.name]["status"] == "ok" for p in good)

    with open(tmp_path / "out.csv", newline="") as handle:
        errors_in_csv = {
            Path(r["uri"]).name for r in csv.DictReader(handle) if r["status"] == "error"
        }
    assert errors_in_csv == set(expected)

    markdown = artifacts_of(state.state_details.flow_run_id)["inference-errors"]
    assert markdown.startswith("# 4 of 15 images failed")
    for name, reason in expected.items():
        assert name in markdown and reason in markdown


def test_explicit_s3_uris_are_downloaded_concurrently_and_errors_named(
    aws: Any, tmp_path: Path
) -> None:
    from infergraph.aws.clients import aws_client

    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="images")
    uris = []
    for path in sorted(SAMPLES.glob("*.png"))[:40]:
        s3.put_object(Bucket="images", Key=f"in/{path.name}", Body=path.read_bytes())
        uris.append(f"s3://images/in/{path.name}")
    s3.put_object(Bucket="images", Key="in/broken.png", Body=b"\x89PNG\r\n\x1a\n broken")
    uris += ["s3://images/in/broken.png", "s3://images/in/missing.png", "s3://nobucket/x.png"]
    aws.save("test-flow-s3", overwrite=True)

    summary = inference(
        source=uris, sinks=[str(tmp_path / "s3.jsonl")], aws_credentials="test-flow-s3"
    )
    rows = {r["uri"]: r for r in read_jsonl(tmp_path / "s3.jsonl")}
    assert summary["images"] == len(rows) == 43 and summary["errors"] == 3
    assert all(rows[u]["status"] == "ok" for u in uris[:40])
    assert "corrupt or truncated" in rows["s3://images/in/broken.png"]["error"]
    assert "NoSuchKey" in rows["s3://images/in/missing.png"]["error"]
    assert "NoSuchBucket" in rows["s3://nobucket/x.png"]["error"]
    local = {r["uri"]: r for r in read_jsonl(tmp_path / "s3.jsonl")}
    assert local["s3://images/in/" + sorted(SAMPLES.glob("*.png"))[0].name]["class_id"] is not None


def test_a_bad_predictor_fails_before_any_data_is_read(tmp_path: Path) -> None:
    out = tmp_path / "never.csv"
    with pytest.raises(PredictorSpecError, match=r"cannot import module 'nowhere\.at\.all'"):
        inference(predictor="nowhere.at.all:Model", sinks=[str(out)])
    assert not out.exists()


def test_a_cli_run_with_broken_images_tells_its_story_through_the_api(tmp_path: Path) -> None:
    """What the UI shows of a run over a folder with broken images, read back from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterName,
        FlowRunFilterTags,
        LogFilter,
        LogFilterFlowRunId,
        LogFilterLevel,
    )
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path / f"inbox-{uuid4().hex[:8]}"
    (folder / "deep").mkdir(parents=True)
    good = sorted(SAMPLES.glob("*.png"))[:12]
    for path in good:
        shutil.copy(path, folder / path.name)
    shutil.copy(SAMPLES / "manifest.csv", folder / "manifest.csv")
    png = good[0].read_bytes()
    (folder / "deep" / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [sys.executable, str(REPO / "flows" / "inference.py"), str(folder), "--batch-size", "5",
         "--sink", str(tmp_path / "cli.jsonl"), "--option", "top_k=2"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "/15 images" not in done.stderr and "\x1b[2K" not in done.stderr  # piped: no line
    rows = read_jsonl(tmp_path / "cli.jsonl")
    assert len(rows) == 15 and all(len(r["top_k"]) == 2 for r in rows if r["status"] == "ok")

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(like_=folder.name), tags=FlowRunFilterTags(all_=["cli"])
            )
        )
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]), level=LogFilterLevel(ge_=0))
        )
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
    assert run.name == f"{folder.name}/ · 15 images · 3 errors"
    assert "cli" in run.tags and "idle" not in run.tags
    # Untagged tasks: a tagged task run costs two concurrency-slot API calls.
    assert {r.name.split("-")[0] for r in task_runs} == {"infer", "write"}
    assert all(r.tags == [] for r in task_runs), [r.tags for r in task_runs]
    assert run.state.is_completed()
    assert run.state.message == "Completed: 12 of 15 images, 3 errors"

    warnings = sorted(log.message for log in logs if log.level == logging.WARNING)
    assert len(warnings) == 3
    expected = {
        "deep/truncated.png": "corrupt or truncated PNG",
        "empty.jpg": "empty file",
        "notes.png": "looks like text",
    }
    for name, reason in expected.items():
        [line] = [w for w in warnings if f"failed: {name}: " in w]
        assert reason in line and str(folder) not in line and "b'" not in line
    info = [log.message for log in logs if log.level == logging.INFO]
    [start] = [m for m in info if m.startswith("classifying ")]
    assert str(folder) in start and "DigitsClassifier" in start and "cli.jsonl" in start
    assert "5 images, 3 in flight" in start
    assert any(m.startswith("model loaded: infergraph.predictors.digits:") for m in info)
    assert any(m.startswith("first batch done after ") for m in info)
    [end] = [m for m in info if m.startswith("done: ")]
    assert end.startswith("done: 15 images (12 predicted, 3 errors) · 15 rows written")

    data = artifacts_by_key(run.id)
    assert set(data) == {"inference-cli-summary", "inference-cli-classes", "inference-cli-errors"}
    outcome = "3 of 15 failed · accuracy "
    assert data["inference-cli-summary"].description.startswith(f"Summary: {outcome}")
    assert data["inference-cli-summary"].description.endswith("% of 12 labelled")
    table = {r["what"]: r["value"] for r in json.loads(data["inference-cli-summary"].data)}
    assert table["failed"] == "3 of 15 (20.0%)" and table["labelled"] == "12 of 12 (100.0%)"
    assert table["rows written"] == "15 (12 predictions, 3 error rows)"
    errors = data["inference-cli-errors"].data
    assert errors.startswith("# 3 of 15 images failed")
    assert "| corrupt or truncated PNG data | 1 |" in errors and "| empty file | 1 |" in errors
    assert "- `deep/truncated.png`: " in errors and errors.count(str(folder)) == 1


def test_a_run_that_finds_no_images_is_idle_and_publishes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / f"empty-{uuid4().hex[:8]}"
    empty.mkdir()
    state = inference(source=str(empty), sinks=[str(tmp_path / "none.jsonl")], return_state=True)
    assert state.message == "Completed: idle, no images to classify"
    assert state.result()["images"] == 0
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name == f"{empty.name}/ · idle" and "idle" in run.tags
    assert artifacts_by_key(run.id) == {}


# The pipeline's guarantees, with instrumented sources and sinks.


class CountingSource(Source):
    """Many small batches; remembers how far reading ran ahead of writing."""

    description = "counting source"

    def __init__(self, batches: int, sink: RecordingSink) -> None:
        self.total = batches
        self.sink = sink
        self.pulled = 0
        self.max_ahead = 0
        self.paths = [str(p) for p in sorted(SAMPLES.glob("*.png"))]

    def records(self) -> Iterator[ImageRecord]:
        raise AssertionError("the pipeline reads batches")

    def batches(self, batch_size: int) -> Iterator[list[ImageRecord]]:
        for i in range(self.total):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - self.sink.chunks_written)
            yield [ImageRecord(uri=self.paths[(i * batch_size + j) % len(self.paths)],
                               record_id=f"{i}-{j}") for j in range(batch_size)]  # fmt: skip


class RecordingSink(Sink):
    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.chunks_written = 0
        self.fail = fail
        self.lock = threading.Lock()

    def write(self, chunk: ResultChunk) -> None:
        if self.fail:
            raise ValueError("table does not exist")
        with self.lock:
            self.rows.extend(chunk.results)
            self.chunks_written += 1


class FakeQueue(Source):
    """Messages of several images each, acknowledged like a queue would be."""

    description = "fake queue"

    def __init__(self, sink: RecordingSink, sizes: list[int]) -> None:
        self.sink = sink
        self.sizes = sizes
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.rows_at_ack: dict[str, int] = {}
        paths = [str(p) for p in sorted(SAMPLES.glob("*.png"))]
        self.records_ = [
            ImageRecord(uri=paths[(m * 7 + j) % len(paths)], fields={"message": f"m{m}"},
                        record_id=f"m{m}-{j}", group=f"m{m}", group_size=size)
            for m, size in enumerate(sizes) for j in range(size)
        ]  # fmt: skip

    def records(self) -> Iterator[ImageRecord]:
        yield from self.records_

    def ack(self, groups: list[str]) -> None:
        for group in groups:
            with self.sink.lock:
                self.rows_at_ack[group] = sum(r["message"] == group for r in self.sink.rows)
        self.acked.extend(groups)

    def nack(self, groups: list[str], reason: str) -> None:
        self.nacked.extend(groups)


@flow
def drive(source, sinks, batch_size, max_in_flight=2):  # type: ignore[no-untyped-def]
    return BatchPipeline(
        source=source,
        predictor=PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"),
        infer=infer_batch,
        write=write_results,
        sinks=sinks,
        fetch=FetchOptions(),
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        max_writes=2,
    ).run()


def test_reading_never_runs_far_ahead_of_writing() -> None:
    sink = RecordingSink()
    source = CountingSource(60, sink)
    summary = drive(source, [sink], batch_size=3, max_in_flight=2)
    assert summary.images == len(sink.rows) == 180
    assert source.pulled == 60
    # in flight: 2 predicting + 2 written-but-unconfirmed, and one being pulled
    assert source.max_ahead <= 2 + 2 + 1


def test_groups_are_acknowledged_once_and_only_after_all_their_rows_are_written() -> None:
    sink = RecordingSink()
    sizes = [1, 5, 2, 7, 3, 4]
    queue = FakeQueue(sink, sizes)
    summary = drive(queue, [sink], batch_size=4)
    assert sorted(queue.acked) == sorted(f"m{i}" for i in range(len(sizes)))
    assert queue.rows_at_ack == {f"m{i}": size for i, size in enumerate(sizes)}
    assert queue.nacked == [] and summary.written == sum(sizes)


def test_a_failing_sink_leaves_every_group_unacknowledged() -> None:
    sink = RecordingSink(fail=True)
    queue = FakeQueue(sink, [2, 3, 1])
    summary = drive(queue, [sink], batch_size=2)
    assert queue.acked == []
    assert sorted(queue.nacked) == ["m0", "m1", "m2"]
    assert summary.write_failures == 6 and summary.written == 0
    assert any("table does not exist" in p for p in summary.problems)
