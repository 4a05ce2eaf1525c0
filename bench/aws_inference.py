"""Benchmark: S3 → model → DynamoDB through the flow, against its ceilings.

    python bench/aws_inference.py            # 4,000 images (~4 min on 2 cores)
    python bench/aws_inference.py --quick    # 1,000 images, a smoke test

Starts two moto servers on 127.0.0.1 (one for S3, one for DynamoDB, over real
HTTP: in AWS they are separate services, and one emulator process would make
DynamoDB writes compete with S3 GETs for a single interpreter lock) and a
temporary Prefect server, uploads N digit PNGs under ``s3://bench/digits/``,
then measures, each in a fresh subprocess:

- raw S3 GET: every object fetched by ``download_concurrency`` threads (the
  flow's download pool is that size, shared by the batches in flight), bodies
  discarded;
- bare model: the same N images, already in memory, decoded, preprocessed and
  predicted batch by batch in one thread (no Prefect, no I/O);
- raw DynamoDB writes: one item per image shaped like the flow's (a real
  prediction's fields and top-k), 25 per ``batch_write_item``, ``max_in_flight``
  threads;
- hand-written pipeline: the whole job as a plain script would do it, with no
  Prefect and none of infergraph's sources or sinks: list the prefix, GET,
  decode and preprocess in ``download_concurrency`` threads, predict in batches,
  ``batch_write_item`` in ``max_in_flight`` threads;
- flow: ``inference(source="s3://bench/digits/", sinks=["dynamodb://…"])``.

The issue's target is flow ≥ 0.8 × min(raw GET rate, bare model rate). Each of
those two ceilings is measured with the machine to itself, but here the
emulator runs on the same cores as the flow: an image's GET costs more CPU in
moto than the flow spends on it, and moto's server closes every connection
(Werkzeug sends ``Connection: close``), so each request also pays a TCP connect
and a server thread that real S3 would not charge. The hand-written pipeline
shows what this machine allows for the whole job, and flow / hand-written is
what the flow itself costs. The table also prints the CPU-bound ceiling:
cores / (CPU seconds of one GET + one forward pass + one write, client and
emulator together). Writes JSON (``bench/out/aws_inference.json``), including
the machine's load average, since the CPU may be shared. CPU columns: the
measured process, the two emulators, and the temporary Prefect server (which
records every task run, and on this machine shares the same cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO)]

from bench.harness import (  # noqa: E402  (needs REPO)
    credentials,
    image_keys,
    measured,
    offline_emulator_environment,
    raw_get,
    run_child,
)
from infergraph.devstack.emulator import start_moto  # noqa: E402

BUCKET, PREFIX, TABLE = "bench", "digits/", "bench-results"
RAW_TABLE = "bench-raw-writes"  # kept apart, so the flow's table holds only its items
DIGITS = "infergraph.predictors.digits:DigitsClassifier"
TARGET = 0.8


def keys(count: int) -> list[str]:
    return image_keys(PREFIX, count)


def setup(endpoint: str, dynamodb_endpoint: str, count: int) -> None:
    """The bucket with ``count`` images (cycling over the samples) and the results table."""
    from infergraph import blockconfig as block_config
    from infergraph.aws.clients import aws_client
    from infergraph.devstack import Table, create_table
    from infergraph.predictors.digits import SAMPLES

    creds = credentials(endpoint)
    s3 = aws_client("s3", creds)
    s3.create_bucket(Bucket=BUCKET)
    sources = [p.read_bytes() for p in sorted(SAMPLES.glob("*.png"))]
    with ThreadPoolExecutor(32) as pool:
        list(
            pool.map(
                lambda ik: s3.put_object(
                    Bucket=BUCKET, Key=ik[1], Body=sources[ik[0] % len(sources)]
                ),
                enumerate(keys(count)),
            )
        )
    dynamodb = aws_client("dynamodb", credentials(dynamodb_endpoint))
    for table in (TABLE, RAW_TABLE):
        create_table(dynamodb, Table(table, "result_id"))

    def moto_credentials(url: str) -> dict[str, Any]:
        return {
            "region_name": "us-east-1",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "aws_client_parameters": {"endpoint_url": url},
        }

    block_config.apply(
        {
            "aws-credentials": {
                "bench-moto": moto_credentials(endpoint),
                "bench-moto-dynamodb": moto_credentials(dynamodb_endpoint),
            },
            "dynamodb-table": {
                TABLE: {
                    "table_name": TABLE,
                    "partition_key": "result_id",
                    "credentials": "bench-moto-dynamodb",
                }
            },
        }
    )


# Child modes: each prints one JSON line with its measurements.


def result_item(row: dict[str, Any]) -> dict[str, Any]:
    """A result row as a results-table item, keyed and typed as the flow's sink keys it."""
    from infergraph.aws.dynamodb import flatten, result_id, serialize

    return serialize({**flatten(row), "result_id": result_id(row["record_id"])})


def child_raw_get(endpoint: str, count: int, threads: int) -> dict[str, Any]:
    return raw_get(endpoint, BUCKET, keys(count), threads)


def child_bare_model(endpoint: str, count: int, batch_size: int) -> dict[str, Any]:
    """Decode, preprocess and predict in-memory images batch by batch: the model's ceiling."""
    from bench.bare import run_batches
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.digits import SAMPLES
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=DIGITS))
    sources = [p.read_bytes() for p in sorted(SAMPLES.glob("*.png"))]
    data = [sources[i % len(sources)] for i in range(count)]
    cpu, started = time.process_time(), time.perf_counter()
    done = run_batches(
        predictor,
        data,
        batch_size,
        lambda blob, meta: predictor.preprocess_input(decode_image(blob, meta.record_id), meta),
    )
    return measured(done, started, cpu)


def prediction_fields() -> dict[str, Any]:
    """The fields a real prediction adds to a result row (class, label, score, top-k)."""
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.digits import SAMPLES
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    predictor = get_predictor(PredictorSpec(path=DIGITS))
    sample = sorted(SAMPLES.glob("*.png"))[0]
    meta = RecordMeta("sample", str(sample))
    batch = predictor.collate(
        [predictor.preprocess_input(decode_image(sample.read_bytes(), str(sample)), meta)]
    )
    return predictor.postprocess_output(
        predictor.split(predictor.predict(batch, [meta]), 1)[0], meta
    )


def child_raw_write(endpoint: str, count: int, threads: int) -> dict[str, Any]:
    """One flow-shaped item per image written with batch_write_item: the write's own cost."""
    from prefect_aws import AwsCredentials

    from infergraph.aws.clients import aws_client

    dynamodb = aws_client("dynamodb", AwsCredentials.load("bench-moto-dynamodb"))
    prediction = prediction_fields()
    items = []
    for name in keys(count):
        uri = f"s3://{BUCKET}/{name}"
        row = {"record_id": f"raw-{uri}", "uri": uri, **prediction, "status": "ok", "error": None}
        items.append(result_item(row))
    batches = [items[i : i + 25] for i in range(0, count, 25)]
    cpu, started = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda batch: dynamodb.batch_write_item(
                    RequestItems={RAW_TABLE: [{"PutRequest": {"Item": item}} for item in batch]}
                ),
                batches,
            )
        )
    return measured(count, started, cpu)


def child_hand_written(
    endpoint: str, count: int, batch_size: int, in_flight: int, downloads: int
) -> dict[str, Any]:
    """The job as a plain script: list, GET + decode in threads, predict in batches, write.

    No Prefect, no infergraph source, sink, tracking or error handling: what the
    required work costs on this machine, to compare the flow against.
    """
    import torch
    from prefect_aws import AwsCredentials

    from infergraph.aws.clients import aws_client
    from infergraph.inference.decode import decode_image
    from infergraph.predictors.base import RecordMeta
    from infergraph.predictors.loading import PredictorSpec, get_predictor

    s3 = aws_client("s3", credentials(endpoint))
    dynamodb = aws_client("dynamodb", AwsCredentials.load("bench-moto-dynamodb"))
    predictor = get_predictor(PredictorSpec(path=DIGITS))

    def prepare(key: str) -> tuple[RecordMeta, Any]:
        uri = f"s3://{BUCKET}/{key}"
        meta = RecordMeta(f"hand-{uri}", uri)
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return meta, predictor.preprocess_input(decode_image(data, uri), meta)

    def write(rows: list[dict[str, Any]]) -> None:
        items = [result_item(r) for r in rows]
        for i in range(0, len(items), 25):
            dynamodb.batch_write_item(
                RequestItems={RAW_TABLE: [{"PutRequest": {"Item": it}} for it in items[i : i + 25]]}
            )

    def predict(batch: list[tuple[RecordMeta, Any]]) -> list[dict[str, Any]]:
        metas = [m for m, _ in batch]
        with torch.inference_mode():
            outputs = predictor.predict(predictor.collate([x for _, x in batch]), metas)
        return [
            {"record_id": m.record_id, "uri": m.uri, **predictor.postprocess_output(o, m),
             "status": "ok", "error": None}
            for o, m in zip(predictor.split(outputs, len(batch)), metas, strict=True)
        ]  # fmt: skip

    done = 0
    cpu, started = time.process_time(), time.perf_counter()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
    names = (obj["Key"] for page in pages for obj in page.get("Contents", ()))
    with ThreadPoolExecutor(downloads) as fetchers, ThreadPoolExecutor(in_flight) as writers:
        writes = []
        batch: list[tuple[RecordMeta, Any]] = []
        for prepared in fetchers.map(prepare, names):  # map keeps every GET in flight
            batch.append(prepared)
            if len(batch) == batch_size:
                writes.append(writers.submit(write, predict(batch)))
                done, batch = done + len(batch), []
        if batch:
            writes.append(writers.submit(write, predict(batch)))
            done += len(batch)
        for future in writes:
            future.result()
    return measured(done, started, cpu)


def child_flow(endpoint: str, count: int, batch_size: int, in_flight: int, downloads: int) -> dict:
    from prefect_aws import AwsCredentials

    from flows.inference import inference
    from infergraph.aws.clients import aws_client

    cpu, started = time.process_time(), time.perf_counter()
    summary = inference(
        source=f"s3://{BUCKET}/{PREFIX}",
        sinks=[f"dynamodb://{TABLE}"],
        aws_credentials="bench-moto",
        batch_size=batch_size,
        max_in_flight=in_flight,
        download_concurrency=downloads,
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    dynamodb = aws_client("dynamodb", AwsCredentials.load("bench-moto-dynamodb"))
    pages = dynamodb.get_paginator("scan")
    stored = sum(page["Count"] for page in pages.paginate(TableName=TABLE, Select="COUNT"))
    return {
        "images": summary["images"],
        "errors": summary["errors"],
        "items_in_table": stored,
        "wall_seconds": wall,
        "images_per_second": summary["images"] / wall,
        "pipeline_images_per_second": summary["images_per_second"],
        "cpu_seconds": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="S3 → model → DynamoDB benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--images", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-in-flight", type=int, default=3)
    parser.add_argument("--download-concurrency", type=int, default=16)
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="runs of the GET, pipeline and flow cases (best kept)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "out" / "aws_inference.json")
    parser.add_argument("--child", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.child:
        mode, endpoint, count, *rest = args.child
        runner = {
            "raw-get": child_raw_get,
            "raw-write": child_raw_write,
            "bare-model": child_bare_model,
            "hand-written": child_hand_written,
            "flow": child_flow,
        }
        print(json.dumps(runner[mode](endpoint, int(count), *map(int, rest))))
        return

    count = args.images or (1000 if args.quick else 4000)
    threads = args.download_concurrency
    offline_emulator_environment()
    import psutil
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "images": count,
        "settings": {
            "batch_size": args.batch_size,
            "max_in_flight": args.max_in_flight,
            "download_concurrency": args.download_concurrency,
            "raw_get_threads": threads,
            "repeats": args.repeats,
        },
        "load_average_before": os.getloadavg(),
    }
    moto, endpoint = start_moto()
    moto_dynamodb, dynamodb_endpoint = start_moto()
    try:
        with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=180):
            env = {
                **os.environ,
                "PREFECT_API_URL": str(PREFECT_API_URL.value()),
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PYTHONPATH": str(REPO),
                "PREFECT_HOME": tmp,
            }
            setup(endpoint, dynamodb_endpoint, count)
            common = [endpoint, str(count)]
            emulators = [psutil.Process(moto.pid), psutil.Process(moto_dynamodb.pid)]
            # The temporary Prefect server: the harness's only other process.
            ours = {p.pid for p in emulators}
            servers = [p for p in psutil.Process().children(recursive=True) if p.pid not in ours]

            def cpu(processes: list[psutil.Process]) -> float:
                return sum(sum(p.cpu_times()[:2]) for p in processes)

            def measure(mode: str, *extra: int) -> dict[str, Any]:
                before, server_before = cpu(emulators), cpu(servers)
                result = run_child(__file__, [mode, *common, *map(str, extra)], env)
                result["moto_cpu_seconds"] = cpu(emulators) - before
                result["prefect_server_cpu_seconds"] = cpu(servers) - server_before
                return result

            pipeline = [args.batch_size, args.max_in_flight, args.download_concurrency]
            results["bare_model"] = measure("bare-model", args.batch_size)
            results["raw_write"] = measure("raw-write", args.max_in_flight)
            # The cases that share the CPU with the emulator vary from run to run by
            # ±10%: they take turns, and each keeps its best run.
            runs: dict[str, list[dict[str, Any]]] = {"raw_get": [], "hand_written": [], "flow": []}
            for _ in range(max(1, args.repeats)):
                runs["raw_get"].append(measure("raw-get", threads))
                runs["hand_written"].append(measure("hand-written", *pipeline))
                runs["flow"].append(measure("flow", *pipeline))
            for name, measured in runs.items():
                results[name] = max(measured, key=lambda r: r["images_per_second"])
                results[name]["all_images_per_second"] = [r["images_per_second"] for r in measured]
    finally:
        for proc in (moto, moto_dynamodb):
            proc.terminate()
            proc.wait(timeout=10)
    results["load_average_after"] = os.getloadavg()
    ceiling = min(
        results["raw_get"]["images_per_second"], results["bare_model"]["images_per_second"]
    )
    results["ceiling_images_per_second"] = ceiling
    results["ratio"] = results["flow"]["images_per_second"] / ceiling
    results["target"] = TARGET
    hand_written = results["hand_written"]["images_per_second"]
    results["hand_written_ratio"] = hand_written / ceiling
    results["flow_vs_hand_written"] = results["flow"]["images_per_second"] / hand_written
    # The emulator runs on the same cores as the flow, so the ceilings are not
    # independent: every image costs the CPU of a GET, a forward pass and a write
    # (client and emulator), and two cores can do only so many of those a second.
    per_image = {
        name: sum(
            results[name][k]
            for k in ("cpu_seconds", "moto_cpu_seconds", "prefect_server_cpu_seconds")
        )
        / results[name]["images"]
        for name in ("raw_get", "bare_model", "raw_write", "hand_written", "flow")
    }
    required = per_image["raw_get"] + per_image["bare_model"] + per_image["raw_write"]
    results["cpu_seconds_per_image"] = per_image
    results["cpu_bound_ceiling_images_per_second"] = (os.cpu_count() or 1) / required
    results["cpu_bound_ratio"] = (
        results["flow"]["images_per_second"] / results["cpu_bound_ceiling_images_per_second"]
    )
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")


def print_table(results: dict[str, Any]) -> None:
    threads = results["settings"]["raw_get_threads"]
    rows = [
        (f"raw S3 GET ({threads} threads)", results["raw_get"]),
        ("bare model (in memory)", results["bare_model"]),
        ("raw DynamoDB batch writes", results["raw_write"]),
        ("hand-written pipeline", results["hand_written"]),
        ("flow S3 → model → DynamoDB", results["flow"]),
    ]
    print(f"\n{'case':<32}{'images':>7}{'seconds':>9}{'images/s':>10}"
          f"{'CPU ms/image':>14}{'moto':>7}{'Prefect':>9}")  # fmt: skip
    for name, row in rows:
        n = row["images"]
        print(f"{name:<32}{n:>7}{row['wall_seconds']:>9.2f}{row['images_per_second']:>10.1f}"
              f"{1000 * row['cpu_seconds'] / n:>14.2f}"
              f"{1000 * row['moto_cpu_seconds'] / n:>7.2f}"
              f"{1000 * row['prefect_server_cpu_seconds'] / n:>9.2f}")  # fmt: skip
    flow = results["flow"]
    print(f"{'':<34}(flow pipeline alone: {flow['pipeline_images_per_second']:.1f} images/s; "
          f"{flow['items_in_table']} items in the table)")  # fmt: skip
    per_image = {k: 1000 * v for k, v in results["cpu_seconds_per_image"].items()}
    print(
        f"CPU per image, client + emulator + Prefect server: GET {per_image['raw_get']:.2f} ms "
        f"+ model "
        f"{per_image['bare_model']:.2f} ms + write {per_image['raw_write']:.2f} ms = "
        f"{sum(per_image[k] for k in ('raw_get', 'bare_model', 'raw_write')):.2f} ms of "
        f"required work (hand-written: {per_image['hand_written']:.2f} ms, flow: "
        f"{per_image['flow']:.2f} ms); on {results['machine']['cpus']} "
        f"shared cores that allows {results['cpu_bound_ceiling_images_per_second']:.1f} "
        f"images/s, and the flow reaches {results['cpu_bound_ratio']:.2f} of it"
    )
    target = results["target"]
    verdict = "met" if results["ratio"] >= target else "MISSED"
    print(
        f"flow / min(raw GET, bare model) = {results['ratio']:.2f} (target ≥ {target:.2f}: "
        f"{verdict}); the hand-written pipeline reaches {results['hand_written_ratio']:.2f} of "
        f"that ceiling on these shared cores, and the flow {results['flow_vs_hand_written']:.2f} "
        f"of the hand-written pipeline; load average {results['load_average_before'][0]:.2f} → "
        f"{results['load_average_after'][0]:.2f}"
    )


if __name__ == "__main__":
    main()
