"""A detector through the batch machinery: flow, sinks (per-box rows or JSON), summary, /predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from flows.inference import inference
from infergraph.detection.predictor import Detector
from infergraph.inference.batch import run_batch
from infergraph.inference.boxes import lay_out
from infergraph.inference.decode import decode_image
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.records import (
    BOX_FIELDS,
    BoxLayout,
    ImageRecord,
    ResultChunk,
    box_record_id,
)
from infergraph.inference.sinks.base import SinkError, open_sink
from infergraph.inference.sinks.s3_csv import S3CsvSink
from infergraph.predictors.loading import PredictorSpec, get_predictor
from tests.support.api import running_api

SAMPLES = Path(__file__).resolve().parent.parent / "infergraph" / "detection" / "samples"
DETECTOR = "infergraph.detection.predictor:Detector"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a.data for a in found}


@pytest.mark.usefixtures("prefect_server")
def test_detector_through_the_flow_one_row_per_box_or_json(tmp_path: Path) -> None:
    sinks = [str(tmp_path / "boxes.csv"), str(tmp_path / "images.jsonl?boxes=json")]
    state = inference(
        source=str(SAMPLES / "*.jpg"),
        predictor=DETECTOR,
        sinks=sinks,
        batch_size=5,
        return_state=True,
    )
    summary = state.result()
    images = {Path(r["uri"]).name: r for r in read_jsonl(tmp_path / "images.jsonl")}
    assert len(images) == summary["images"] == 12 and summary["errors"] == 0

    detector = Detector()
    detector.load()
    names = sorted(images)
    direct = detector.detect([decode_image((SAMPLES / n).read_bytes(), n) for n in names])
    for name, boxes in zip(names, direct, strict=True):
        assert images[name]["boxes"] == boxes and images[name]["box_count"] == len(boxes)
    total = sum(len(b) for b in direct)
    assert summary["boxes"] == total > 12

    rows = read_csv(tmp_path / "boxes.csv")
    assert len(rows) == total
    assert {*BOX_FIELDS, "box_index", "image_record_id", "record_id"} <= set(rows[0])
    assert "boxes" not in rows[0]
    assert len({r["record_id"] for r in rows}) == total  # one deterministic key per box
    first = images[names[0]]
    mine = [r for r in rows if r["image_record_id"] == first["record_id"]]
    assert [r["record_id"] for r in mine] == [
        box_record_id(first["record_id"], i) for i in range(len(first["boxes"]))
    ]
    assert float(mine[0]["x2"]) == first["boxes"][0]["x2"] and mine[0]["label"] in (
        "item",
        "container",
    )

    artifacts = artifacts_of(state.state_details.flow_run_id)
    summary_key = next(k for k in artifacts if k.endswith("-summary"))
    metrics = {r["what"]: r["value"] for r in json.loads(artifacts[summary_key])}
    assert metrics["boxes"] == str(total)
    classes = json.loads(artifacts[summary_key.replace("-summary", "-classes")])
    per_label = {r["label"]: int(r["boxes"].split(" of ")[0]) for r in classes}
    assert per_label["item"] + per_label["container"] == total

    inference(source=str(SAMPLES / "*.jpg"), predictor=DETECTOR, sinks=sinks, batch_size=3)
    assert sorted(r["record_id"] for r in read_csv(tmp_path / "boxes.csv")) == sorted(
        r["record_id"] for r in rows
    )  # a rerun writes the same keys, whatever the batching


def test_images_without_boxes_and_errors_keep_one_row_with_the_same_columns() -> None:
    box = {"class_id": 1, "label": "container", "score": 0.8, "x1": 0, "y1": 0, "x2": 5, "y2": 5}
    rows = [
        {"record_id": "a", "boxes": [box, box], "box_count": 2, "status": "ok", "error": None},
        {"record_id": "b", "boxes": [], "box_count": 0, "status": "ok", "error": None},
        {"record_id": "c", "boxes": None, "box_count": None, "status": "error", "error": "bad"},
        {"record_id": "d", "uri": "d.png", "class_id": 3, "status": "ok"},
    ]
    out = lay_out(rows, BoxLayout.ROWS)
    assert [r["record_id"] for r in out] == ["a#box0", "a#box1", "b", "c", "d"]
    assert set(out[0]) == set(out[2]) == set(out[3])
    assert (
        out[2]["x1"] is None
        and out[3]["error"] == "bad"
        and out[3]["box_index"] is None
        and out[4] == rows[3]
    )
    assert lay_out(rows, BoxLayout.JSON) == rows


def test_a_box_breaking_the_contract_fails_only_its_record() -> None:
    records = [ImageRecord(uri=str(p)) for p in sorted(SAMPLES.glob("*.jpg"))[:3]]
    output = run_batch(
        records,
        get_predictor(PredictorSpec(path="tests.support.predictors:BadBoxes")),
        FetchOptions(),
    )
    assert [r["status"] for r in output.rows] == ["ok", "error", "ok"]
    assert "box 0 lacks x2" in output.rows[1]["error"]


def test_the_boxes_option_on_every_sink_and_its_mistakes(tmp_path: Path) -> None:
    box = {"class_id": 0, "label": "item", "score": 0.9, "x1": 1, "y1": 2, "x2": 3, "y2": 4}
    chunk = ResultChunk("k1", [{"record_id": "r", "uri": "u", "boxes": [box, box], "status": "ok"}])
    per_box = S3CsvSink("bucket", "out/")
    whole = S3CsvSink("bucket", "out/")
    whole.boxes = BoxLayout.JSON
    assert per_box.objects(chunk)[0][1].decode().count("\n") == 3  # header + 2 boxes
    text = whole.objects(chunk)[0][1].decode()
    assert text.count("\n") == 2 and '""x2"":3' in text

    assert open_sink(str(tmp_path / "a.csv?boxes=json")).boxes is BoxLayout.JSON
    assert open_sink(str(tmp_path / "a.jsonl")).boxes is BoxLayout.ROWS
    with pytest.raises(SinkError, match="boxes='xml' is not one of rows, json"):
        open_sink(str(tmp_path / "a.csv?boxes=xml"))
    with pytest.raises(SinkError, match="only option is"):
        open_sink(str(tmp_path / "a.csv?gzip=true"))


def test_predict_returns_boxes(tmp_path: Path) -> None:
    sample = sorted(SAMPLES.glob("*.jpg"))[0]
    detector = Detector()
    detector.load()
    expected = detector.detect([decode_image(sample.read_bytes(), sample.name)])[0]
    with running_api(tmp_path, INFERGRAPH_API_PREDICTOR=DETECTOR) as api:
        response = httpx.post(
            f"{api.url}/predict",
            files={"file": (sample.name, sample.read_bytes())},
            headers={"Authorization": f"Bearer {api.token()}"},
            timeout=60,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["boxes"] == expected and body["box_count"] == len(expected) > 0
