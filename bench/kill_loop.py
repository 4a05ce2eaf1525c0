"""The kill loop of issue 12: SIGKILL the queue consumer at random moments, then check the books.

    python bench/kill_loop.py --requests 1000 --kills 8 --seed 1

Starts its own moto server and a real Prefect server (temporary home), creates the queue
(with a dead-letter queue), tables, bucket and topic, enqueues ``--requests`` requests in
messages of ``--per-message``, installs the heartbeat automation, then: starts the README's
SQS command (all three sinks, ``--requests-table``, ``--notify-topic``) and SIGKILLs it at a
random moment, ``--kills`` times; reruns until the queue is empty; runs the sweep; and
reports, as JSON:

- lost results (requests with no row in the results table), duplicate rows in DynamoDB
  and in the CSV objects, requests notified at least once and duplicate notices;
- requests stuck in processing after the sweep, messages left in the dead-letter queue;
- seconds from the last kill to an empty queue, beside the visibility timeout;
- killed runs: marked CRASHED by the automation, by the sweep, left RUNNING.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from infergraph.aws.sqs_leases import queue_depth  # noqa: E402
from infergraph.devstack.emulator import free_port, start_moto, wait_for_http  # noqa: E402

BUCKET = "kill-loop"
NOTICES: Counter[str] = Counter()
STARTED = "Beginning flow run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-message", type=int, default=10)
    parser.add_argument("--visibility", type=int, default=60, help="visibility timeout (s)")
    parser.add_argument("--max-receives", type=int, default=5, help="redrive maxReceiveCount")
    parser.add_argument(
        "--kill-after",
        type=float,
        nargs=2,
        default=(3.0, 30.0),
        metavar=("MIN", "MAX"),
        help="seconds after a run starts working to kill it (uniform)",
    )
    parser.add_argument("--heartbeat", type=int, default=30, help="flow heartbeat (s, >= 30)")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp folder)")
    parser.add_argument(
        "--redrive", action="store_true", help="then redrive the dead-letter queue and drain again"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    moto, endpoint = start_moto()
    prefect = api = None
    try:
        prefect, api = start_prefect(work)
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "PREFECT_HOME": str(work / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(args.heartbeat),
            "PYTHONPATH": str(REPO),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "OMP_NUM_THREADS": "1",
        }
        os.environ.update({k: env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})
        aws = setup_aws(endpoint, args)
        ids = enqueue(aws, args.requests, args.per_message)
        stale = 2 * args.heartbeat
        maintenance(env, work, "install-automation", "--within", str(stale))
        report = kill_loop(aws, env, work, args, rng)
        wait = report["last_kill_at"] + stale + 5 - time.time()
        if wait > 0:  # a killed run is stale once it missed two heartbeats
            time.sleep(wait)
        runs_before = flow_runs(api, "inference")
        sweep = maintenance(
            env,
            work,
            "sweep",
            "--notify-topic",
            "inference-notices",
            "--expired-after",
            str(args.visibility),
            "--stale-after",
            str(stale),
        )
        report.update(books(aws, ids, api, runs_before, report.pop("killed_runs")))
        report["sweep"] = {k: v for k, v in sweep.items() if k != "crashed_runs"}
        report["sweep_crashed_runs"] = len(sweep.get("crashed_runs", []))
        report.pop("last_kill_at")
        if args.redrive and report["messages_in_dead_letter_queue"]:
            report["after_redrive"] = after_redrive(aws, env, work, ids, api, report["runs"])
        report["workdir"] = str(work)
        print(json.dumps(report, indent=2))
    finally:
        for proc in (prefect, moto):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


# -- servers and resources ---------------------------------------------------------------


def start_prefect(work: Path) -> tuple[subprocess.Popen, str]:
    """A real Prefect server (SQLite in ``work``): the killed runs must outlive their process."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{work}/prefect.db",
    }
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=(work / "prefect-server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    wait_for_http(f"{api}/health", timeout=240, proc=proc)
    return proc, api


def setup_aws(endpoint: str, args: argparse.Namespace) -> Any:
    from prefect_aws import AwsCredentials

    from infergraph import blockconfig
    from infergraph.aws.clients import aws_client
    from infergraph.devstack import Queue, Resources, Table, Topic, provision
    from infergraph.devstack.resources import block_config
    from infergraph.predictors.digits import SAMPLES

    aws = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint},
    )
    resources = Resources(
        queues=[
            Queue(
                "inference-requests",
                block="inference-requests",
                max_receive_count=args.max_receives,
                visibility_timeout=args.visibility,
                retry_delay_seconds=10,
            ),
            Queue("inference-results", block="inference-results", dead_letter=False),
            Queue("notices-inbox", dead_letter=False),
        ],
        tables=[
            Table("inference-requests", "request_id", block="inference-requests"),
            Table("inference-results", "result_id", block="inference-results"),
        ],
        topics=[
            Topic("inference-notices", block="inference-notices", subscribe_queue="notices-inbox")
        ],
    )
    made = provision(aws, resources)
    blockconfig.apply(block_config(endpoint, made, resources, home=Path(tempfile.gettempdir())))
    s3 = aws_client("s3", aws)
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(SAMPLES.glob("*.png")):
        s3.upload_file(str(path), BUCKET, f"samples/{path.name}")
    return aws


def enqueue(aws: Any, count: int, per_message: int) -> list[str]:
    from infergraph.aws.clients import aws_client
    from infergraph.aws.dynamodb import serialize
    from infergraph.predictors.digits import SAMPLES

    sqs, dynamodb = aws_client("sqs", aws), aws_client("dynamodb", aws)
    url = sqs.get_queue_url(QueueName="inference-requests")["QueueUrl"]
    images = sorted(p.name for p in SAMPLES.glob("*.png"))
    requests = [
        {"request_id": f"req-{i:05d}", "s3_uri": f"s3://{BUCKET}/samples/{images[i % len(images)]}"}
        for i in range(count)
    ]
    for request in requests:
        dynamodb.put_item(
            TableName="inference-requests", Item=serialize({**request, "state": "queued"})
        )
    for start in range(0, count, per_message):
        sqs.send_message(
            QueueUrl=url, MessageBody=json.dumps(requests[start : start + per_message])
        )
    return [r["request_id"] for r in requests]


# -- the loop ----------------------------------------------------------------------------


def consumer(env: dict[str, str], log: Path) -> subprocess.Popen:
    """The README's SQS command, every sink, the requests table and notices."""
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "flows" / "inference.py"),
            "sqs://inference-requests",
            "--sink",
            "dynamodb://inference-results",
            "--sink",
            f"s3://{BUCKET}/results/",
            "--sink",
            "sqs://inference-results",
            "--requests-table",
            "inference-requests",
            "--notify-topic",
            "inference-notices",
            "--aws-credentials",
            "local-aws",
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def kill_loop(
    aws: Any, env: dict[str, str], work: Path, args: argparse.Namespace, rng: random.Random
) -> dict[str, Any]:
    from infergraph.aws.clients import aws_client

    sqs = aws_client("sqs", aws)
    url = sqs.get_queue_url(QueueName="inference-requests")["QueueUrl"]
    kills, runs, killed_runs = 0, 0, []
    last_kill = time.time()
    while kills < args.kills and sum(queue_depth(sqs, url)) > 0:
        log = work / f"run-{runs:02d}.log"
        proc = consumer(env, log)
        runs += 1
        while STARTED not in log.read_text(errors="replace") and proc.poll() is None:
            time.sleep(0.2)
        began = time.monotonic()
        deadline = began + rng.uniform(*args.kill_after)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            last_kill = time.time()
            killed_runs.append(run_id(log))
            print(f"kill {kills}: run {runs}, {time.monotonic() - began:.1f} s in", flush=True)
    print(f"{kills} kills in {runs} runs; draining", flush=True)
    empty_at, runs = drain(sqs, url, env, work, runs)
    return {
        "requests": args.requests,
        "kills": kills,
        "runs": runs,
        "visibility_timeout_s": args.visibility,
        "seconds_from_last_kill_to_empty_queue": round(empty_at - last_kill, 1),
        "last_kill_at": last_kill,
        "killed_runs": [r for r in killed_runs if r],
    }


def drain(sqs: Any, url: str, env: dict[str, str], work: Path, runs: int) -> tuple[float, int]:
    """Rerun the consumer until the queue is empty; (when it was first empty, runs so far)."""
    empty_at = None
    while empty_at is None:
        log = work / f"run-{runs:02d}.log"
        proc = consumer(env, log)
        runs += 1
        while proc.poll() is None:
            if empty_at is None and sum(queue_depth(sqs, url)) == 0:
                empty_at = time.time()
            time.sleep(0.5)
        if proc.returncode != 0:
            print(f"run {runs} ended with {proc.returncode}: see {log}", flush=True)
        if empty_at is None and sum(queue_depth(sqs, url)) == 0:
            empty_at = time.time()
    return empty_at, runs


def run_id(log: Path) -> str | None:
    """The flow run id a consumer's log names (the run's UI link)."""
    text = log.read_text(errors="replace")
    found = re.search(r"flow-run/([0-9a-f-]{36})", text)
    return found.group(1) if found else None


def maintenance(env: dict[str, str], work: Path, *args: str) -> dict[str, Any]:
    log = work / f"maintenance-{args[0]}.log"
    done = subprocess.run(
        [sys.executable, str(REPO / "flows" / "maintenance.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"maintenance {args[0]} failed: see {log}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def after_redrive(
    aws: Any, env: dict[str, str], work: Path, ids: list[str], api: str, runs: int
) -> dict[str, Any]:
    """Redrive the dead-letter queue (reopening swept requests), drain, count again."""
    from infergraph.aws.clients import aws_client

    moved = maintenance(env, work, "redrive", "--queue", "inference-requests")["moved"]
    sqs = aws_client("sqs", aws)
    url = sqs.get_queue_url(QueueName="inference-requests")["QueueUrl"]
    drain(sqs, url, env, work, runs)
    counted = books(aws, ids, api, flow_runs(api, "inference"), [])
    keep = (
        "lost_results",
        "duplicate_rows_dynamodb",
        "duplicate_rows_csv",
        "notified_at_least_once",
        "duplicate_notices",
        "request_states_after_sweep",
        "messages_in_dead_letter_queue",
        "runs_left_running",
    )
    return {"moved": moved, **{k: counted[k] for k in keep}}


# -- the books ---------------------------------------------------------------------------


def flow_runs(api: str, flow_name: str) -> dict[str, str]:
    """Flow run id → state type, for every run of ``flow_name``."""
    body = {"flows": {"name": {"any_": [flow_name]}}, "limit": 200}
    runs = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()
    return {r["id"]: r["state_type"] for r in runs}


def books(
    aws: Any, ids: list[str], api: str, runs_before: dict[str, str], killed: list[str]
) -> dict[str, Any]:
    from infergraph.aws.clients import aws_client
    from infergraph.aws.dynamodb import deserialize

    dynamodb, s3, sqs = (aws_client(s, aws) for s in ("dynamodb", "s3", "sqs"))
    results = scan(dynamodb, "inference-results", deserialize)
    per_request = Counter(str(r.get("request_id")) for r in results)
    csv_rows: Counter[str] = Counter()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="results/"):
        for obj in page.get("Contents", []):
            text = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read().decode()
            csv_rows.update(r["request_id"] for r in csv.DictReader(io.StringIO(text)))
    notices = NOTICES  # every notice read so far: books are counted twice with --redrive
    inbox = sqs.get_queue_url(QueueName="notices-inbox")["QueueUrl"]
    while messages := sqs.receive_message(
        QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=600
    ).get("Messages", []):
        for m in messages:
            body = json.loads(m["Body"])
            notice = json.loads(body["Message"]) if "Message" in body else body
            if "requests" not in notice:
                print(f"not a notice: {m['Body'][:300]}", flush=True)
                continue
            notices.update(str(r["request_id"]) for r in notice["requests"])
            sqs.delete_message(QueueUrl=inbox, ReceiptHandle=m["ReceiptHandle"])
    requests = scan(dynamodb, "inference-requests", deserialize)
    states = Counter(r.get("state") for r in requests)
    dlq = sqs.get_queue_url(QueueName="inference-requests-dlq")["QueueUrl"]
    runs_after = flow_runs(api, "inference")
    return {
        "lost_results": sum(1 for i in ids if per_request[i] == 0),
        "duplicate_rows_dynamodb": sum(n - 1 for n in per_request.values() if n > 1),
        "duplicate_rows_csv": sum(n - 1 for n in csv_rows.values() if n > 1),
        "missing_rows_csv": sum(1 for i in ids if csv_rows[i] == 0),
        "notified_at_least_once": sum(1 for i in ids if notices[i] > 0),
        "duplicate_notices": sum(n - 1 for n in notices.values() if n > 1),
        "request_states_after_sweep": dict(states),
        "stuck_in_processing_after_sweep": states.get("processing", 0),
        "messages_in_dead_letter_queue": sum(queue_depth(sqs, dlq)),
        "killed_runs_crashed_before_sweep": sum(
            1 for r in killed if runs_before.get(r) == "CRASHED"
        ),
        "killed_runs_found": len(killed),
        "runs_left_running": sum(1 for s in runs_after.values() if s == "RUNNING"),
        "run_states": dict(Counter(runs_after.values())),
    }


def scan(dynamodb: Any, table: str, deserialize: Any) -> list[dict[str, Any]]:
    items, kwargs = [], {}
    while True:
        page = dynamodb.scan(TableName=table, **kwargs)
        items += [deserialize(i) for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


if __name__ == "__main__":
    main()
