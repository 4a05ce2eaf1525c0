"""Migrating from the reference batch CLI: its predictors, messages and environment, unchanged.

Expected rows come from ``tests/support/reference.py`` (what the reference's
executor made of the same image and request); AWS is moto in server mode.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from boto3.dynamodb.types import TypeDeserializer
from PIL import Image

from infergraph.aws.clients import aws_client
from infergraph.aws.dynamodb import serialize
from infergraph.inference.batch import run_batch
from infergraph.inference.cli import main
from infergraph.inference.fetch import FetchOptions
from infergraph.inference.records import ImageRecord
from infergraph.inference.reference_env import ReferenceEnvError, read_reference_env
from infergraph.inference.sources.messages import parse_body
from infergraph.predictors.digits import SAMPLES
from infergraph.predictors.loading import (
    PredictorSpec,
    PredictorSpecError,
    get_predictor,
    resolve_predictor_class,
)
from tests.support.queues import queue_counts
from tests.support.reference import SEEN, expected_row

EXAMPLE = "infergraph.predictors.examples.reference_digits"
_deserializer = TypeDeserializer()


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 5, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples(count: int) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(SAMPLES.glob("*.png"))[:count]}


def _scan(dynamodb, table: str) -> list[dict]:
    items = dynamodb.scan(TableName=table)["Items"]
    return [{k: _deserializer.deserialize(v) for k, v in i.items()} for i in items]


def _clear_reference_env(monkeypatch) -> None:
    import os

    from infergraph.inference.reference_env import PREFIXES

    for name in list(os.environ):
        if name.startswith(PREFIXES):
            monkeypatch.delenv(name)


def _same_result(got: dict, want: dict) -> None:
    """Every field the reference's row has, with its value (scores to float precision)."""
    for name, value in want.items():
        assert name in got, name
        if name == "result":
            assert [(r["class_id"], r["category_name"]) for r in got[name]] == [
                (r["class_id"], r["category_name"]) for r in value
            ]
            assert [float(r["score"]) for r in got[name]] == pytest.approx(
                [r["score"] for r in value], abs=1e-6
            )
        else:
            assert got[name] == value, name


# -- predictors --------------------------------------------------------------------------


def test_reference_predictor_gets_the_reference_meta_and_fails_per_record(aws):
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="pics")
    for name, value in {"a.png": 1, "b.png": 13, "c.png": 7, "d.png": 2}.items():
        s3.put_object(Bucket="pics", Key=name, Body=_png(value))
    request = {"request_id": "r1", "collection_id": "c9"}
    names = ("a.png", "b.png", "c.png", "d.png")
    records = [ImageRecord(f"s3://pics/{n}", dict(request)) for n in names]
    options = {"input_settings": {"sqs_queue_url": "q"}, "output_settings": {"x": "y"}}
    predictor = get_predictor(
        PredictorSpec(path="tests.support.reference:EchoMeta", options=options)
    )

    rows = run_batch(records, predictor, FetchOptions(aws, reference_fields=True)).rows

    meta = SEEN["a.png"]
    assert meta["input_settings"] == {"sqs_queue_url": "q"}
    assert meta["output_settings"] == {"x": "y"}
    info = meta["request_info"]
    assert (info["bucket"], info["key"], info["request_id"], info["collection_id"]) == (
        "pics",
        "a.png",
        "r1",
        "c9",
    )
    assert info["download_time"] > 0
    good = rows[0]
    assert (good["status"], good["pixel"], good["post_saw_meta"]) == ("ok", 1, True)
    assert good["meta_keys"] == ["input_settings", "output_settings", "request_info"]
    assert (good["bucket"], good["key"], good["errors"]) == ("pics", "a.png", [])
    assert good["download_time"] > 0 and good["collection_id"] == "c9"
    assert rows[1]["errors"] == ["predict failed: ValueError: unlucky pixel"]
    assert rows[1]["status"] == "error" and rows[1]["key"] == "b.png"
    assert "predict returned a list; the reference contract needs a dict" in rows[2]["error"]
    assert rows[3]["pixel"] == 2  # the failures stayed with their records


def test_predict_alone_is_enough_and_a_class_of_neither_contract_is_named(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_png(5))
    alone = get_predictor(PredictorSpec(path="tests.support.reference:OnlyPredict"))
    rows = run_batch([ImageRecord(str(path))], alone, FetchOptions()).rows
    assert (rows[0]["status"], rows[0]["height"]) == ("ok", 4)
    assert "bucket" not in rows[0]  # reference fields only when the run asks for them

    with pytest.raises(PredictorSpecError) as caught:
        resolve_predictor_class("tests.support.reference:PredictWithoutMeta")
    message = str(caught.value)
    assert "predict(input_record, meta)" in message and "predict(batch, metas)" in message
    assert "postprocess_output(output, meta)" in message


# -- requests --------------------------------------------------------------------------


def test_a_request_naming_several_image_keys_gives_one_record_per_key():
    body = json.dumps(
        [
            {
                "request_id": "r1",
                "collection_id": "c",
                "s3_uri": "s3://b/1.png",
                "thumb": "s3://b/1t.png",
            },
            {"request_id": "r2", "collection_id": "c", "s3_uri": "s3://b/2.png"},
        ]
    )
    each = parse_body(body, ("s3_uri", "thumb"), each_key=True).requests
    assert [(r.uri, r.fields["current_s3uri_key"], r.error) for r in each[:3]] == [
        ("s3://b/1.png", "s3_uri", None),
        ("s3://b/1t.png", "thumb", None),
        ("s3://b/2.png", "s3_uri", None),
    ]
    assert "request 2 of 2 has no image URI under any of 'thumb'" in str(each[3].error)
    assert len({r.record_id for r in each}) == 4
    assert [r.uri for r in parse_body(body, ("s3_uri", "thumb")).requests] == [
        "s3://b/1.png",
        "s3://b/2.png",
    ]  # without each_key: the first key found, as before


def test_a_raw_queue_url_is_an_sqs_source_and_sink(aws):
    import infergraph.inference.aws_schemes  # noqa: F401  (registers sqs://)
    from infergraph.inference.records import ResultChunk
    from infergraph.inference.sinks.base import open_sink
    from infergraph.inference.sources.base import open_source

    sqs = aws_client("sqs", aws)
    url = sqs.create_queue(QueueName="requests")["QueueUrl"]
    out = sqs.create_queue(QueueName="out")["QueueUrl"]
    body = [{"request_id": "r1", "s3_uri": "s3://b/1.png", "thumb": "s3://b/2.png"}]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))

    source = open_source(f"sqs://{url}?image_keys=s3_uri,thumb&each_key=true", credentials=aws)
    records = list(source.records())
    assert [(r.uri, r.fields["current_s3uri_key"]) for r in records] == [
        ("s3://b/1.png", "s3_uri"),
        ("s3://b/2.png", "thumb"),
    ]
    assert source.description == "sqs://requests"
    sink = open_sink(f"sqs://{out}", credentials=aws)
    sink.open()
    sink.write(ResultChunk("k", [{"record_id": "r1|x", "n": 1}]))
    got = sqs.receive_message(QueueUrl=out)["Messages"][0]
    assert json.loads(got["Body"]) == {"record_id": "r1|x", "n": 1}
    with pytest.raises(ValueError, match="a queue URL is https://sqs"):
        open_source("sqs://https://example.com/", credentials=aws)
    source.close()


# -- the environment -------------------------------------------------------------------


def test_unknown_and_contradictory_variables_are_reported_together(monkeypatch, capsys):
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/requests"
    env = {
        "PREDICTOR_MODULE": "tests.support.reference",
        "PREDICTOR_CLASS_NAME": "Missing",
        "INPUT_CTXMGR_SQS_QUEUE_URL": url,
        "OUTPUT_CONTEXT_MANAGER": "S3BucketCsvFileOutputCtxManager",
        "OUTPUT_CTXMGR_FIELDNAMES": "a,b",
        "OUTPUT_CTXMGR_CSV_FIELDNAMES": "a,c",
        "OUTPUT_CTXMGR_SQS_QUEUE_URL": url,
        "OUTPUT_CTXMGR_OUTPT_S3_BUCKET": "typo",
        "RESULT_RECORD_CHUNK_SIZE": "lots",
    }
    with pytest.raises(ReferenceEnvError) as caught:
        read_reference_env(env, [])
    problems = "\n".join(caught.value.problems)
    for expected in (
        "OUTPUT_CTXMGR_OUTPT_S3_BUCKET is not a variable of the reference CLI",
        "INPUT_CTXMGR_SQS_QUEUE_URL is set, but INPUT_CONTEXT_MANAGER is S3Bucket",
        "reads the s3:// URIs given as arguments: none given",
        "OUTPUT_CTXMGR_OUTPUT_S3_BUCKET is required",
        "OUTPUT_CTXMGR_CSV_FIELDNAMES='a,c', OUTPUT_CTXMGR_FIELDNAMES='a,b'",
        "OUTPUT_CTXMGR_SQS_QUEUE_URL is set, but OUTPUT_CONTEXT_MANAGER has no SQSRecord",
        "RESULT_RECORD_CHUNK_SIZE='lots' is not a whole number",
        "has no attribute 'Missing'",
    ):
        assert expected in problems
    assert len(caught.value.problems) == 8

    _clear_reference_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(lambda **_: pytest.fail("the flow must not start"), ["--from-env"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.count("\n  ") == 8  # one line per problem, no traceback
    with pytest.raises(SystemExit) as exited:
        main(lambda **_: pytest.fail("the flow must not start"), ["--from-env", "--sink", "a.csv"])
    assert exited.value.code == 2
    assert "drop --sink" in capsys.readouterr().err


def test_s3_to_s3_csv_from_the_reference_environment(prefect_server, aws, monkeypatch):
    from flows.inference import inference

    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket="images")
    s3.create_bucket(Bucket="results")
    images = _samples(5)
    for name, body in images.items():
        s3.put_object(Bucket="images", Key=f"in/{name}", Body=body)
    s3.put_object(Bucket="images", Key="in/broken.png", Body=b"\x89PNG\r\n\x1a\n broken")
    columns = "bucket,key,category_name,is_valid,result,download_time,errors"
    _clear_reference_env(monkeypatch)
    for name, value in {
        "PREDICTOR_MODULE": EXAMPLE,
        "OUTPUT_CONTEXT_MANAGER": "S3BucketCsvFileOutputCtxManager",
        "OUTPUT_CTXMGR_OUTPUT_S3_BUCKET": "results",
        "OUTPUT_CTXMGR_CSV_FIELDNAMES": columns,
        "RESULT_RECORD_CHUNK_SIZE": "15",
        "S3_ENDPOINT": aws.aws_client_parameters.endpoint_url,
    }.items():
        monkeypatch.setenv(name, value)
    uris = [f"s3://images/in/{n}" for n in [*images, "broken.png"]]

    assert main(inference, ["--from-env", ",".join(uris[:3]), *uris[3:]]) == 0

    listed = s3.list_objects_v2(Bucket="results")["Contents"]
    assert all(o["Key"].startswith("s3bucketcsvfileoutputctxmanager/") for o in listed)
    rows = []
    for obj in listed:
        text = s3.get_object(Bucket="results", Key=obj["Key"])["Body"].read().decode()
        reader = csv.DictReader(io.StringIO(text))
        assert reader.fieldnames == columns.split(",")
        rows += list(reader)
    by_key = {r["key"]: r for r in rows}
    assert sorted(by_key) == sorted(f"in/{n}" for n in [*images, "broken.png"])
    for name, body in images.items():
        row = by_key[f"in/{name}"]
        want = expected_row(body)
        got = {
            "result": json.loads(row["result"]),
            "is_valid": row["is_valid"] == "True",
            "category_name": row["category_name"],
        }
        _same_result(got, want)
        assert (row["bucket"], row["errors"]) == ("images", "[]")
        assert float(row["download_time"]) > 0
    broken = by_key["in/broken.png"]
    assert "corrupt or truncated PNG" in json.loads(broken["errors"])[0]
    assert broken["category_name"] == "" and broken["bucket"] == "images"


def test_sqs_to_dynamodb_and_sqs_from_the_reference_environment(prefect_server, aws, monkeypatch):
    from flows.inference import inference

    endpoint = aws.aws_client_parameters.endpoint_url
    s3, sqs, dynamodb = (aws_client(s, aws) for s in ("s3", "sqs", "dynamodb"))
    s3.create_bucket(Bucket="images")
    images = _samples(5)
    names = list(images)
    for name, body in images.items():
        s3.put_object(Bucket="images", Key=name, Body=body)
    requests_url = sqs.create_queue(QueueName="requests")["QueueUrl"]
    results_url = sqs.create_queue(QueueName="results")["QueueUrl"]
    dynamodb.create_table(
        TableName="requests",
        KeySchema=[{"AttributeName": "request_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "request_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.create_table(
        TableName="results",
        KeySchema=[
            {"AttributeName": "hashkey", "KeyType": "HASH"},
            {"AttributeName": "s3_uri", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "hashkey", "AttributeType": "S"},
            {"AttributeName": "s3_uri", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    uri = {n: f"s3://images/{n}" for n in names}
    messages = [
        [
            {
                "request_id": "r1",
                "collection_id": "c1",
                "s3_uri": uri[names[0]],
                "thumbnail_uri": uri[names[1]],
            },
            {
                "request_id": "r2",
                "collection_id": "c1",
                "s3_uri": uri[names[2]],
                "thumbnail_uri": uri[names[3]],
            },
        ],
        [{"request_id": "r3", "collection_id": "c2", "s3_uri": uri[names[4]]}],  # no thumbnail
    ]
    for message in messages:
        for request in message:
            item = {"request_id": request["request_id"], "state": "queued", "origin": "api"}
            dynamodb.put_item(TableName="requests", Item=serialize(item))
        sqs.send_message(QueueUrl=requests_url, MessageBody=json.dumps(message))
    _clear_reference_env(monkeypatch)
    for name, value in {
        "PREDICTOR_MODULE": EXAMPLE,
        "INPUT_CONTEXT_MANAGER": "SQSRecordS3InputImageCtxManager",
        "INPUT_CTXMANAGER_SQS_QUEUE_URL": requests_url,
        "REQUEST_S3URI_KEYS": "s3_uri,thumbnail_uri",
        "OUTPUT_CONTEXT_MANAGER": "DynamodbOutputCtxManager,SQSRecordOutputCtxManager",
        "OUTPUT_CTXMGR_SQS_QUEUE_URL": results_url,
        "OUTPUT_CTXMGR_REQUESTS_TABLENAME": "requests",
        "OUTPUT_CTXMGR_RESULTS_TABLENAME": "results",
        "INFERGRAPH_REQUESTS_SUCCESS_STATE": "processed",
        "SQS_VISIBILITYTIMEOUT_SECONDS_ON_EXCEPTION": "0",
        "S3_ENDPOINT": endpoint,
        "SQS_ENDPOINT": endpoint,
        "DYNAMODB_ENDPOINT": endpoint,
    }.items():
        monkeypatch.setenv(name, value)

    summary = inference(from_env=True)

    assert (summary["images"], summary["errors"]) == (6, 1)
    assert queue_counts(sqs, requests_url) == (0, 0)
    requests = {r["request_id"]: r for r in _scan(dynamodb, "requests")}
    assert {k: r["state"] for k, r in requests.items()} == {
        "r1": "processed",
        "r2": "processed",
        "r3": "error",
    }
    assert "has no image URI under any of 'thumbnail_uri'" in requests["r3"]["errors"][0]
    assert requests["r1"]["origin"] == "api"  # the producer's attributes stay

    bodies = []
    while batch := sqs.receive_message(QueueUrl=results_url, MaxNumberOfMessages=10).get(
        "Messages"
    ):
        bodies += [json.loads(m["Body"]) for m in batch]
    by_record = {(b["request_id"], b["current_s3uri_key"]): b for b in bodies}
    assert len(bodies) == len(by_record) == 6
    requests_sent = {r["request_id"]: r for m in messages for r in m}
    for (request_id, image_key), body in by_record.items():
        request = requests_sent[request_id]
        if image_key not in request:
            assert body["errors"] and body["status"] == "error"
            continue
        image = images[request[image_key].rsplit("/", 1)[1]]
        _same_result(body, expected_row(image, request, image_key))
        key = request[image_key].removeprefix("s3://images/")
        assert (body["bucket"], body["key"]) == ("images", key)
        assert body["errors"] == [] and body["download_time"] > 0

    items = [i for i in _scan(dynamodb, "results") if "class_id" in i]
    assert len(items) == 5 * 3  # one item per element of each result list
    for item in items:
        assert set(item) >= {
            "hashkey",
            "s3_uri",
            "request_id",
            "class_id",
            "category_name",
            "score",
        }
        assert item["s3_uri"] == requests_sent[item["request_id"]]["s3_uri"]
