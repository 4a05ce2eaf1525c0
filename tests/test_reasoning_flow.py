"""The whole reasoning chain on one machine: jobspec → local run → log → Oxigraph load → notice.

Real parts throughout: moto in server mode (S3, DynamoDB, SNS delivering to SQS), a real
Prefect API, pyoxigraph on disk.
"""

from __future__ import annotations

import json

import pytest

from flows.reasoning import process_inference, refresh_bulk_loads, schedule_reasoning_job
from infergraph.reasoning.examples import write_example
from infergraph.reasoning.jobs import INVALID_JOBSPEC_DATASET, JobStatus
from tests.support.reasoning_env import INPUT, OUTPUT, make_env

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def env(aws, tmp_path):
    return make_env(aws, tmp_path)


def _flows(env):
    return {"jobs_table": env.table, "notices": env.topic}


def jobspec(dataset: str = "transactions", **extra):
    return {"job_bucket": INPUT, "job_key": dataset, "output_bucket": OUTPUT, **extra}


def test_local_chain_end_to_end(env):
    write_example(f"s3://{INPUT}/transactions/", triples=3000, seed=7, credentials=env.credentials)
    env.put_jobspec("jobs/transactions.rdfoxjob.json", jobspec())

    scheduled = schedule_reasoning_job(
        INPUT, "jobs/transactions.rdfoxjob.json", **_flows(env), aws_credentials=env.credentials
    )
    assert scheduled["status"] == "SCHEDULED", scheduled
    job_id = scheduled["job_id"]
    assert job_id.startswith("transactions_") and job_id.endswith(
        "_000"
    )  # numbered from 000, as the reference
    log_key = f"transactions/{job_id}/rdfox.log"
    outputs = env.s3.list_objects_v2(Bucket=OUTPUT, Prefix=f"transactions/{job_id}/data/")
    assert {o["Key"].rsplit("/", 1)[-1] for o in outputs["Contents"]} == {
        "export_high_value_chains.rq.nt",
        "export_suspicious_chains.rq.nt",
    }

    processed = process_inference(
        OUTPUT, log_key, **_flows(env), graph_store=env.graph, aws_credentials=env.credentials
    )
    assert processed["status"] == "NEPTUNE_LOAD_IN_PROGRESS", processed
    job = env.store.get_by_id(job_id, "transactions")
    reasoner = job.get("reasoner")
    assert reasoner["counts"]["fullChainCount"] > 0
    assert reasoner["idb_facts"] > reasoner["edb_facts"] > 2900

    # A duplicate S3 event changes nothing.
    again = process_inference(
        OUTPUT, log_key, **_flows(env), graph_store=env.graph, aws_credentials=env.credentials
    )
    assert again["load_id"] == processed["load_id"]
    assert env.notices(wait=0) == []

    state = refresh_bulk_loads(**_flows(env), graph_store=env.graph, return_state=True)
    assert state.message == "Completed: 1 refreshed, 1 notified"  # counts, for people
    refreshed = state.result()
    assert [r["status"] for r in refreshed["refreshed"]] == ["NEPTUNE_LOAD_COMPLETED"]
    assert [n["status"] for n in refreshed["notified"]] == ["SUCCESS_NOTIFICATION_SENT"]

    job = env.store.get_by_id(job_id, "transactions")
    assert job.status == JobStatus.SUCCESS_NOTIFICATION_SENT
    assert job.get("outcome") == "NEPTUNE_LOAD_COMPLETED"
    exported = sum(reasoner["exported"].values())
    assert job.get("load")["overall"]["totalRecords"] == exported
    # The two exports overlap (a chain can be suspicious and high-value): the graph holds
    # their union, and the loader counted the overlap as duplicates.
    union = set()
    for o in outputs["Contents"]:
        body = env.s3.get_object(Bucket=OUTPUT, Key=o["Key"])["Body"].read().decode()
        union |= {line for line in body.splitlines() if line.strip()}
    assert job.get("verification")["count"] == len(union)
    assert job.get("load")["overall"]["totalDuplicates"] == exported - len(union)
    assert [h["status"] for h in job.get("history")] == [
        "CREATED",
        "SCHEDULED",
        "INFERENCE_COMPLETE",
        "NEPTUNE_LOAD_IN_PROGRESS",
        "NEPTUNE_LOAD_COMPLETED",
        "SUCCESS_NOTIFICATION_SENT",
    ]

    (notice,) = env.notices()
    assert (
        notice["Subject"] == f"Inference Result Notification for {job_id} - NEPTUNE_LOAD_COMPLETED"
    )
    body = notice["Message"]
    assert "Dataset: transactions" in body
    assert f"fullChainCount {reasoner['counts']['fullChainCount']:,}" in body
    assert f"triples loaded: {exported:,}" in body
    assert "Errors: none" in body
    assert notice["MessageAttributes"]["status"]["Value"] == "NEPTUNE_LOAD_COMPLETED"

    # Nothing is left to refresh or notify: a second refresh sends nothing.
    later = refresh_bulk_loads(**_flows(env), graph_store=env.graph)
    assert later == {"inference_failed": [], "refreshed": [], "timed_out": [], "notified": []}
    assert env.notices(wait=0) == []


@pytest.mark.parametrize(
    ("body", "dataset", "expected"),
    [
        (
            json.dumps(jobspec(requested_cores="four")),
            "transactions",
            "requested_cores: Input should be a valid integer",
        ),
        (
            json.dumps(jobspec(requested_cores=0, output_bucket="Bad_Bucket")),
            "transactions",
            "requested_cores: Input should be greater than or equal to 1",
        ),
        (
            json.dumps({"job_bucket": INPUT, "job_key": "transactions"}),
            "transactions",
            "output_bucket: required field is missing",
        ),
        ('{"job_key": "transactions", ', INVALID_JOBSPEC_DATASET, "not valid JSON"),
        (json.dumps({"output_bucket": OUTPUT}), INVALID_JOBSPEC_DATASET, "job_key: required"),
    ],
    ids=["wrong-type", "bad-values", "missing-field", "not-json", "no-dataset"],
)
def test_bad_jobspec_is_recorded_and_notified(env, body, dataset, expected):
    key = "jobs/bad.rdfoxjob.json"
    env.put_jobspec(key, body)
    result = schedule_reasoning_job(INPUT, key, **_flows(env), aws_credentials=env.credentials)
    uri = f"s3://{INPUT}/{key}"
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert expected in result["reason"] and uri in result["reason"]
    assert "Traceback" not in result["reason"]
    job = env.store.get_by_id(result["job_id"], dataset)
    assert job.get("outcome") == "SCHEDULE_FAILED"
    assert [h["status"] for h in job.get("history")] == [
        "CREATED",
        "SCHEDULE_FAILED",
        "ERROR_NOTIFICATION_SENT",
    ]
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - SCHEDULE_FAILED")
    assert expected in notice["Message"] and uri in notice["Message"]


def test_missing_jobspec_object_is_recorded(env):
    result = schedule_reasoning_job(
        INPUT, "jobs/gone.rdfoxjob.json", **_flows(env), aws_credentials=env.credentials
    )
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "NoSuchKey" in result["reason"]
    assert result["job_id"].startswith(f"{INVALID_JOBSPEC_DATASET}_")
    assert len(env.notices()) == 1


def test_local_run_failure_is_inference_failed(env):
    # A rule file that is not SPARQL: the run stops, the job says why, the log is kept.
    env.s3.put_object(
        Bucket=INPUT, Key="broken/data.nt", Body=b"<http://a> <http://p> <http://b> .\n"
    )
    env.s3.put_object(Bucket=INPUT, Key="broken/rule.ru", Body=b"INSERT nonsense")
    env.put_jobspec("jobs/broken.rdfoxjob.json", jobspec("broken"))
    result = schedule_reasoning_job(
        INPUT, "jobs/broken.rdfoxjob.json", **_flows(env), aws_credentials=env.credentials
    )
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "rule.ru is not valid SPARQL Update" in result["reason"]
    job = env.store.get_by_id(result["job_id"], "broken")
    assert job.get("outcome") == "INFERENCE_FAILED"
    log = env.s3.get_object(Bucket=OUTPUT, Key=f"broken/{result['job_id']}/rdfox.log")[
        "Body"
    ].read()
    assert b"LOADTIME-" in log
    # The log's (late) arrival does not resurrect the job.
    after = process_inference(
        OUTPUT, f"broken/{result['job_id']}/rdfox.log", **_flows(env), graph_store=env.graph
    )
    assert after["status"] == "ERROR_NOTIFICATION_SENT"
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - INFERENCE_FAILED")


def test_garbage_log_is_inference_failed(env):
    """A log with none of the reasoner's lines (e.g. a crashed pod's) fails the job, once."""
    env.put_jobspec("jobs/k.rdfoxjob.json", jobspec("garbage"))
    job = env.store.create("garbage", jobspec=jobspec("garbage"), runner="kubernetes")
    job = env.store.transition(job, JobStatus.SCHEDULED)
    key = f"garbage/{job.job_id}/rdfox.log"
    env.s3.put_object(Bucket=OUTPUT, Key=key, Body=b"exec /opt/RDFox: exec format error\r\n")
    result = process_inference(
        OUTPUT, key, **_flows(env), graph_store=env.graph, aws_credentials=env.credentials
    )
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert (
        "none of the reasoner's lines" in result["reason"]
        and "exec format error" in result["reason"]
    )
    assert env.store.get_by_id(job.job_id, "garbage").get("outcome") == "INFERENCE_FAILED"
    assert len(env.notices()) == 1


def test_log_key_that_is_not_a_log_is_refused(env):
    with pytest.raises(ValueError, match="not a reasoner log key"):
        process_inference(
            OUTPUT, "transactions/x/data/out.nt", **_flows(env), graph_store=env.graph
        )


def test_one_run_chain_and_a_jobspec_that_redirects_the_load(env):
    """process_after_local_run chains the flows without an S3 trigger; a jobspec naming
    another cluster than the deployment's is refused as an invalid load request."""
    write_example(f"s3://{INPUT}/small/", triples=1000, seed=3, credentials=env.credentials)
    env.put_jobspec("jobs/a.rdfoxjob.json", jobspec("small"))
    result = schedule_reasoning_job(
        INPUT,
        "jobs/a.rdfoxjob.json",
        **_flows(env),
        aws_credentials=env.credentials,
        process_after_local_run=True,
        graph_store=env.graph,
    )
    assert result["status"] == "NEPTUNE_LOAD_IN_PROGRESS" and result["load_id"]

    other = {"cluster_endpoint": "https://other.cluster.neptune.amazonaws.com:8182"}
    env.put_jobspec("jobs/b.rdfoxjob.json", jobspec("small", neptune_configuration=other))
    result = schedule_reasoning_job(
        INPUT,
        "jobs/b.rdfoxjob.json",
        **_flows(env),
        aws_credentials=env.credentials,
        process_after_local_run=True,
        graph_store=env.graph,
    )
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "asks for cluster 'https://other.cluster" in result["reason"]
    job = env.store.get_by_id(result["job_id"], "small")
    assert job.get("outcome") == "NEPTUNE_LOAD_FAILED_INVALID_REQUEST"
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - NEPTUNE_LOAD_FAILED_INVALID_REQUEST")


def test_notice_claimed_by_a_crashed_run_is_sent_after_its_lease(env):
    job = env.store.create("ds", jobspec_uri="s3://x/y")
    job = env.store.transition(job, JobStatus.SCHEDULE_FAILED, reason="bad jobspec")
    assert env.store.claim_notice(job, "run-that-crashed", lease_seconds=3600) is not None

    live = refresh_bulk_loads(**_flows(env), graph_store=env.graph, notice_lease_seconds=3600)
    assert live["notified"] == [] and env.notices(wait=0) == []

    expired = refresh_bulk_loads(**_flows(env), graph_store=env.graph, notice_lease_seconds=0)
    assert [n["job_id"] for n in expired["notified"]] == [job.job_id]
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - SCHEDULE_FAILED") and "bad jobspec" in notice["Message"]
    assert env.store.get(job.dataset, job.sort_key).status == JobStatus.ERROR_NOTIFICATION_SENT
