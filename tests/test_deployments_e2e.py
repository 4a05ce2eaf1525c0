"""prefect.yaml proven end to end: a real `prefect server start`, a process worker, the emulator
and the S3-events bridge; blocks from one command; `prefect deploy --all`; then objects landing
in S3 start the right flows by themselves.

Everything runs as it would for a user, as separate processes talking HTTP: the server on
SQLite, the worker running each flow run in its own Python process, moto in server mode, and
``python -m infergraph.events`` turning S3 notifications into Prefect events. Every
process started here is stopped at the end, whatever happens.

Selected alone with ``pytest -m e2e``; part of the plain ``python -m pytest`` run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.support.servers import REPO, free_port, wait_for_http

pytestmark = pytest.mark.e2e

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DEPLOYMENTS = {
    "inference/inference-on-demand",
    "inference/inference-from-queue",
    "inference/inference-on-upload",
    "schedule-reasoning-job/schedule-reasoning-job",
    "process-inference/process-inference",
    "refresh-bulk-loads/refresh-bulk-loads",
    "s3-events-bridge/s3-events-bridge",
    "sorting-session/sorting-session",
    "run-scenario/run-scenario",
    "sweep-requests/sweep-requests",
}


# -- processes -------------------------------------------------------------------------------


@dataclass
class Processes:
    """Processes started by this module; each in its own session so its whole tree can go."""

    logs: Path
    env: dict[str, str]
    started: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, args: list[str], **kwargs: Any) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (the child keeps it)
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )
        self.started.append((name, proc))
        return proc

    def run(self, name: str, args: list[str], timeout: float) -> str:
        """Run a command to completion; its output, or a failure that shows it."""
        done = subprocess.run(
            args,
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        (self.logs / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise AssertionError(
                f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout + done.stderr

    def stop(self, name: str, proc: subprocess.Popen) -> None:
        """SIGTERM the process and everything it started (flow runs too), then SIGKILL."""
        try:
            tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=10)
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(alive, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            self.stop(name, proc)

    def tail(self, lines: int = 40) -> str:
        out = []
        for path in sorted(self.logs.glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"---- {path.name} ----\n" + "\n".join(text))
        return "\n".join(out)


# -- the Prefect API, over plain HTTP --------------------------------------------------------


@dataclass
class Api:
    url: str

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, body or {})

    def get(self, path: str) -> Any:
        return self._call("GET", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """One API call, retried as Prefect's own client does: SQLite under a busy worker can
        be slow to answer or answer 503 (database locked; the transaction was rolled back)."""
        for attempt in range(5):
            try:
                reply = httpx.request(method, f"{self.url}{path}", json=body, timeout=60)
            except httpx.TimeoutException:
                if attempt == 4:
                    raise
                continue
            if reply.status_code == 503 and attempt < 4:
                time.sleep(1 + attempt)
                continue
            reply.raise_for_status()
            return reply.json()
        raise AssertionError("unreachable")

    def deployment(self, name: str) -> dict[str, Any]:
        return self.get(f"/deployments/name/{name}")

    def runs(self, deployment_id: str) -> list[dict[str, Any]]:
        return self.post(
            "/flow_runs/filter",
            {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"},
        )

    def wait(
        self,
        what: str,
        check: Callable[[], Any],
        timeout: float,
        processes: Processes,
        interval: float = 2.0,
    ) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f}s waiting for {what}\n{processes.tail()}"
        )


def finished(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["state_type"] in TERMINAL]


# -- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    api: Api
    processes: Processes
    home: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`prefect server start` (SQLite, loopback, own PREFECT_HOME) and a process work pool."""
    root = tmp_path_factory.mktemp("deployments")
    (root / "logs").mkdir()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "INFERGRAPH_HOME": str(root / "infergraph"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PREFECT_PROFILES_PATH", None)
    processes = Processes(root / "logs", env)
    try:
        server = processes.start(
            "server",
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-ui",
            ],
        )
        wait_for_http(f"{api_url}/health", timeout=180, proc=server)
        processes.run(
            "work-pool",
            [
                sys.executable,
                "-m",
                "prefect",
                "work-pool",
                "create",
                "process",
                "--type",
                "process",
            ],
            timeout=120,
        )
        yield Stack(Api(api_url), processes, root)
    finally:
        processes.stop_all()


def test_s3_uploads_drive_the_deployed_flows(stack: Stack, aws: Any) -> None:
    from infergraph.aws.clients import aws_client
    from infergraph.predictors.digits import SAMPLES
    from infergraph.reasoning.examples import write_example

    api, processes = stack.api, stack.processes
    endpoint = aws.aws_client_parameters.endpoint_url
    began = time.monotonic()

    def mark(stage: str) -> None:  # shown with the output of a failing run
        print(f"[{time.monotonic() - began:6.1f}s] {stage}")

    # One command: resources, S3 → SQS notifications and every block the deployments name.
    processes.run(
        "local-aws-up",
        [sys.executable, "-m", "infergraph.devstack", "up", "--endpoint", endpoint, "--no-samples"],
        timeout=120,
    )
    processes.start(
        "worker",
        [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            "process",
            "--type",
            "process",
            "--limit",
            "4",
        ],
    )
    mark("blocks saved")
    deployed = processes.run(
        "deploy", [sys.executable, "-m", "prefect", "deploy", "--all"], timeout=240
    )
    assert "not found in provided values" not in deployed  # no unresolved template in the file
    mark("deployed")
    processes.start("bridge", [sys.executable, "-m", "infergraph.events", "--queue", "s3-events"])

    deployments = {name: api.deployment(name) for name in DEPLOYMENTS}
    ids = {name: d["id"] for name, d in deployments.items()}

    s3 = aws_client("s3", aws)
    write_example("s3://reasoning-input/transactions/", triples=1500, seed=3, credentials=aws)
    jobspec = {
        "job_bucket": "reasoning-input",
        "job_key": "transactions",
        "output_bucket": "reasoning-output",
    }
    s3.put_object(
        Bucket="reasoning-input", Key="jobs/transactions.rdfoxjob.json", Body=json.dumps(jobspec)
    )
    images = {  # key → true label; a space and a '%' prove the bridge URL-decodes keys
        "incoming/six one.png": ("digit_0006.png", 6),
        "incoming/batch/nine.png": ("digit_0009.png", 9),
        "incoming/one%1.png": ("digit_0011.png", 1),
    }
    for key, (name, _) in images.items():
        s3.put_object(Bucket="infergraph-local", Key=key, Body=(SAMPLES / name).read_bytes())
    # Not an image: the bridge emits it as kind "other" and no deployment reacts to it.
    s3.put_object(Bucket="infergraph-local", Key="incoming/notes.txt", Body=b"hello")

    # Requests for inference-from-queue (images outside the notified prefix); drained by a
    # run started now, as its 5-minute schedule would.
    queued = {"req-e2e-1": ("digit_0014.png", 4), "req-e2e-2": ("digit_0017.png", 7)}
    sqs, dynamodb = aws_client("sqs", aws), aws_client("dynamodb", aws)
    requests_url = sqs.get_queue_url(QueueName="inference-requests")["QueueUrl"]
    notices_topic = aws_client("sns", aws).create_topic(Name="inference-notices")["TopicArn"]
    for request_id, (name, _) in queued.items():
        key = f"queued/{name}"
        s3.put_object(Bucket="infergraph-local", Key=key, Body=(SAMPLES / name).read_bytes())
        request = {"request_id": request_id, "s3_uri": f"s3://infergraph-local/{key}"}
        dynamodb.put_item(
            TableName="inference-requests",
            Item={"request_id": {"S": request_id}, "state": {"S": "queued"}},
        )
        sqs.send_message(QueueUrl=requests_url, MessageBody=json.dumps([request]))
    from_queue = api.post(f"/deployments/{ids['inference/inference-from-queue']}/create_flow_run")
    assert notices_topic.endswith(":inference-notices")

    # -- the jobspec: schedule → local reasoner → rdfox.log → process-inference -------------
    schedule_runs = api.wait(
        "the triggered schedule-reasoning-job run",
        lambda: finished(api.runs(ids["schedule-reasoning-job/schedule-reasoning-job"])),
        timeout=180,
        processes=processes,
    )
    mark("schedule-reasoning-job finished")
    [scheduled] = schedule_runs
    assert scheduled["state_type"] == "COMPLETED", scheduled["state"]
    assert scheduled["parameters"]["bucket"] == "reasoning-input"
    assert scheduled["parameters"]["key"] == "jobs/transactions.rdfoxjob.json"
    assert scheduled["name"].startswith("job transactions_"), scheduled["name"]
    assert scheduled["state"]["message"].startswith("Completed: job transactions_")

    process_runs = api.wait(
        "the process-inference run triggered by rdfox.log",
        lambda: finished(api.runs(ids["process-inference/process-inference"])),
        timeout=150,
        processes=processes,
    )
    mark("process-inference finished")
    [processed] = process_runs
    assert processed["state_type"] == "COMPLETED", processed["state"]
    assert processed["parameters"]["bucket"] == "reasoning-output"
    dataset, job_id, log_name = processed["parameters"]["key"].split("/")
    assert (dataset, log_name) == ("transactions", "rdfox.log")
    job = _job(aws, dataset, job_id)
    assert job.status == "NEPTUNE_LOAD_IN_PROGRESS", job

    # -- refresh: scheduled every minute by the server; one run now instead of waiting ------
    refresh = deployments["refresh-bulk-loads/refresh-bulk-loads"]
    assert [s["schedule"].get("cron") for s in refresh["schedules"]] == ["* * * * *"]
    auto = [r for r in api.runs(refresh["id"]) if r["auto_scheduled"]]
    assert auto, "the scheduler created no run for refresh-bulk-loads"
    assert all(r["expected_start_time"] for r in auto)
    # A run now rather than at the next minute. If a scheduled run is already going, this
    # one is cancelled by the deployment's limit of 1 (CANCEL_NEW) and that run does the work.
    api.post(f"/deployments/{refresh['id']}/create_flow_run", {})
    api.wait(
        "the job's notice, sent by a refresh run",
        lambda: _job(aws, dataset, job_id).status == "SUCCESS_NOTIFICATION_SENT",
        timeout=120,
        processes=processes,
        interval=2,
    )
    mark("notice sent")
    job = _job(aws, dataset, job_id)
    assert job.get("outcome") == "NEPTUNE_LOAD_COMPLETED"
    refreshes = finished(api.runs(refresh["id"]))
    assert "COMPLETED" in {r["state_type"] for r in refreshes}
    # The topic delivers raw to the reasoning-notices queue: body, with the status attribute.
    [notice] = _messages(aws, "reasoning-notices")
    assert notice["MessageAttributes"]["status"]["StringValue"] == "NEPTUNE_LOAD_COMPLETED"
    assert f"Dataset: {dataset}" in notice["Body"] and job_id in notice["Body"]

    # -- images: one completed run each, results in the sink ----------------------------------
    upload_runs = api.wait(
        "one finished on-upload run per image",
        lambda: (
            len(done := finished(api.runs(ids["inference/inference-on-upload"]))) >= len(images)
            and done
        ),
        timeout=180,
        processes=processes,
    )
    mark("on-upload runs finished")
    assert [r["state_type"] for r in upload_runs] == ["COMPLETED"] * len(images), [
        r["state"] for r in upload_runs
    ]
    uris = {f"s3://infergraph-local/{key}" for key in images}
    assert {u for r in upload_runs for u in r["parameters"]["source"]} == uris
    # The runs list: named after the image, tagged with the entry point, counts in the state.
    assert {r["name"] for r in upload_runs} == {f"{u} · 1 image" for u in uris}
    assert all("upload" in r["tags"] for r in upload_runs)
    assert {r["state"]["message"] for r in upload_runs} == {"Completed: 1 image"}
    logs = api.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [upload_runs[0]["id"]]}}})
    said = [entry["message"] for entry in logs]
    assert any("pull step" in m for m in said), said  # no "Downloading flow code from storage"
    assert not any("Downloading flow code" in m for m in said), said
    rows = _scan(aws, "inference-results")
    by_uri = {row["uri"]: row for row in rows}
    assert {u for u in by_uri if "/incoming/" in u} == uris
    for key, (_, label) in images.items():
        row = by_uri[f"s3://infergraph-local/{key}"]
        assert (row["status"], int(row["class_id"])) == ("ok", label), row

    # -- the queue: every request answered, marked completed and announced --------------------
    api.wait(
        "the inference-from-queue run",
        lambda: _state(api, from_queue["id"]) in TERMINAL,
        timeout=120,
        processes=processes,
    )
    assert _state(api, from_queue["id"]) == "COMPLETED"
    rows = _scan(aws, "inference-results")
    by_request = {row.get("request_id"): row for row in rows if row.get("request_id")}
    for request_id, (_, label) in queued.items():
        assert int(by_request[request_id]["class_id"]) == label, by_request[request_id]
    states = {r["request_id"]: r["state"] for r in _scan(aws, "inference-requests")}
    assert states == dict.fromkeys(queued, "completed")
    depth = sqs.get_queue_attributes(
        QueueUrl=requests_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(depth.values()) == {"0"}, depth
    announced = " ".join(m["Body"] for m in _messages(aws, "inference-notices"))
    assert all(request_id in announced for request_id in queued), announced

    # -- what prefect.yaml promised -----------------------------------------------------------
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for entry in spec["deployments"]:
        deployment = next(d for n, d in deployments.items() if n.endswith("/" + entry["name"]))
        limit = entry["concurrency_limit"]
        wanted = limit if isinstance(limit, dict) else {"limit": limit}
        held = deployment["global_concurrency_limit"] or {}
        assert held.get("limit") == wanted["limit"], (entry["name"], held)
        strategy = (deployment.get("concurrency_options") or {}).get("collision_strategy")
        assert (strategy or "ENQUEUE") == wanted.get("collision_strategy", "ENQUEUE")
        assert deployment["work_pool_name"] == "process"
        assert deployment["job_variables"]["working_dir"] == str(REPO)
    queue = deployments["inference/inference-from-queue"]
    assert [s["schedule"].get("interval") for s in queue["schedules"]] == [300.0]
    form = deployments["inference/inference-on-demand"]["parameter_openapi_schema"]
    assert "sqs://" in form["properties"]["source"]["description"]
    # The text file's event reached the server and started nothing.
    assert len(api.runs(ids["inference/inference-on-upload"])) == len(images)
    for name in DEPLOYMENTS:
        failed = [
            r
            for r in finished(api.runs(ids[name]))
            if r["state_type"] != "COMPLETED"
            # CANCEL_NEW at work: a tick that found a run going (refresh, bridge).
            and r["state"]["message"] != "Deployment concurrency limit reached."
        ]
        assert not failed, (name, [r["state"] for r in failed])


def _state(api: Api, run_id: str) -> str:
    return api.get(f"/flow_runs/{run_id}")["state_type"]


def _scan(credentials: Any, table: str) -> list[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    from infergraph.aws.clients import aws_client

    plain = TypeDeserializer().deserialize
    pages = aws_client("dynamodb", credentials).get_paginator("scan").paginate(TableName=table)
    return [
        {k: plain(v) for k, v in item.items()} for page in pages for item in page.get("Items", [])
    ]


def _job(credentials: Any, dataset: str, job_id: str) -> Any:
    from infergraph.reasoning.jobs import JobStore
    from tests.support.reasoning_env import jobs_table

    return JobStore(jobs_table(credentials)).get_by_id(job_id, dataset)


def _messages(credentials: Any, queue: str) -> list[dict[str, Any]]:
    from infergraph.aws.clients import aws_client

    sqs = aws_client("sqs", credentials)
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    reply = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2, MessageAttributeNames=["All"]
    )
    return reply.get("Messages", [])


@pytest.mark.parametrize(("pool", "worker_type"), [("kubernetes", "kubernetes"), ("ecs", "ecs")])
def test_container_pools_accept_the_job_variables(
    stack: Stack, pool: str, worker_type: str
) -> None:
    """`prefect deploy --pool kubernetes|ecs`: the same file, validated by the server against
    the pool's own job template; every variable the file sets is one that template reads."""
    api, processes = stack.api, stack.processes
    processes.run(
        f"work-pool-{pool}",
        [sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", worker_type],
        timeout=120,
    )
    # What the README tells users: point `&work_pool` at the pool, set the image, deploy.
    text = (REPO / "prefect.yaml").read_text()
    assert text.count("work_pool: &work_pool process\n") == 1
    variant = stack.home / f"prefect.{pool}.yaml"
    variant.write_text(text.replace("&work_pool process", f"&work_pool {pool}"))
    for name, value in {
        "infergraph_image": "registry.example.com/infergraph:1.0",
        "infergraph_task_role_arn": "arn:aws:iam::123456789012:role/infergraph-flows",
    }.items():
        if not api.post("/variables/filter", {"variables": {"name": {"any_": [name]}}}):
            api.post("/variables/", {"name": name, "value": value})
    done = subprocess.run(
        [
            *(sys.executable, "-m", "prefect", "deploy", "--prefect-file", str(variant)),
            *("--name", "refresh-bulk-loads", "--name", "schedule-reasoning-job"),
        ],
        cwd=REPO,
        env=processes.env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    template = api.get(f"/work_pools/{pool}")["base_job_template"]["variables"]["properties"]
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = set(spec["definitions"]["job_variables"][pool])
    assert declared <= set(template), declared - set(template)
    for name in (
        "refresh-bulk-loads/refresh-bulk-loads",
        "schedule-reasoning-job/schedule-reasoning-job",
    ):
        deployment = api.deployment(name)
        assert deployment["work_pool_name"] == pool
        variables = deployment["job_variables"]
        assert variables["image"] == "registry.example.com/infergraph:1.0"
        if pool == "ecs":
            assert variables["task_role_arn"].endswith(":role/infergraph-flows")
        sizes = {"cpu_request", "memory_request"} if pool == "kubernetes" else {"cpu", "memory"}
        assert sizes <= set(variables) and sizes <= set(template)
    big = api.deployment("schedule-reasoning-job/schedule-reasoning-job")["job_variables"]
    small = api.deployment("refresh-bulk-loads/refresh-bulk-loads")["job_variables"]
    key = "memory_request" if pool == "kubernetes" else "memory"
    assert _bytes(big[key]) > _bytes(small[key])


def _bytes(quantity: str | int) -> float:
    """A Kubernetes memory quantity (512Mi, 4Gi) or ECS MiB in bytes, to compare sizes."""
    text = str(quantity)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text) * 2**20
