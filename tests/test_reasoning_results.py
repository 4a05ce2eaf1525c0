"""No silent empty success: empty exports, loads of nothing and unrunnable rules are failures.

Real parts: moto in server mode (S3, DynamoDB, SNS → SQS), a real Prefect API, pyoxigraph.
"""

from __future__ import annotations

import pytest

from flows.reasoning import process_inference, refresh_bulk_loads, schedule_reasoning_job
from infergraph.reasoning.examples import QUERIES, write_example
from infergraph.reasoning.jobs import JobStatus
from tests.support.reasoning_env import INPUT, OUTPUT, make_env

pytestmark = pytest.mark.usefixtures("prefect_server")

DATA = b"<http://a> <http://p> <http://b> .\n"


@pytest.fixture
def env(aws, tmp_path):
    return make_env(aws, tmp_path)


def _flows(env):
    return {"jobs_table": env.table, "notices": env.topic}


def _jobspec(dataset: str, **extra):
    return {"job_bucket": INPUT, "job_key": dataset, "output_bucket": OUTPUT, **extra}


def _rules_free_dataset(env, dataset: str) -> None:
    """Data and the example queries, no rules: every export is empty."""
    env.s3.put_object(Bucket=INPUT, Key=f"{dataset}/data.nt", Body=DATA)
    for query in QUERIES:
        env.s3.put_object(Bucket=INPUT, Key=f"{dataset}/{query.name}", Body=query.read_bytes())


def _schedule_and_process(env, key: str) -> dict:
    return schedule_reasoning_job(
        INPUT,
        key,
        **_flows(env),
        aws_credentials=env.credentials,
        process_after_local_run=True,
        graph_store=env.graph,
    )


def test_empty_export_is_inference_failed_with_the_counts(env):
    _rules_free_dataset(env, "norules")
    env.put_jobspec("jobs/e.rdfoxjob.json", _jobspec("norules"))
    result = _schedule_and_process(env, "jobs/e.rdfoxjob.json")
    assert result["status"] == "ERROR_NOTIFICATION_SENT", result
    assert "the export is empty" in result["reason"]
    assert "export_suspicious_chains.rq: 0 triples" in result["reason"]
    assert "the rules derived nothing" in result["reason"]
    assert "accept_empty_results" in result["reason"]
    job = env.store.get_by_id(result["job_id"], "norules")
    assert job.get("outcome") == "INFERENCE_FAILED"
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - INFERENCE_FAILED")
    assert "Exported: 0 triples" in notice["Message"]
    assert "Errors: none" not in notice["Message"]


def test_accepted_empty_export_goes_on_with_a_warning(env):
    _rules_free_dataset(env, "norules")
    env.put_jobspec("jobs/e.rdfoxjob.json", _jobspec("norules", accept_empty_results=True))
    result = _schedule_and_process(env, "jobs/e.rdfoxjob.json")
    assert result["status"] == "NEPTUNE_LOAD_IN_PROGRESS", result
    refreshed = refresh_bulk_loads(**_flows(env), graph_store=env.graph)
    assert [n["status"] for n in refreshed["notified"]] == ["SUCCESS_NOTIFICATION_SENT"]
    (notice,) = env.notices()
    assert "Warning: the rules derived nothing" in notice["Message"]
    assert "Warning: every export query returned 0 triples" in notice["Message"]


def test_load_of_nothing_from_a_non_empty_export_is_a_failure(env):
    write_example(f"s3://{INPUT}/tx/", triples=1000, seed=3, credentials=env.credentials)
    env.put_jobspec("jobs/t.rdfoxjob.json", _jobspec("tx"))
    scheduled = schedule_reasoning_job(
        INPUT, "jobs/t.rdfoxjob.json", **_flows(env), aws_credentials=env.credentials
    )
    job_id = scheduled["job_id"]
    # The exports are truncated after the log said they had triples.
    listed = env.s3.list_objects_v2(Bucket=OUTPUT, Prefix=f"tx/{job_id}/data/")["Contents"]
    for obj in listed:
        env.s3.put_object(Bucket=OUTPUT, Key=obj["Key"], Body=b"")
    processed = process_inference(
        OUTPUT,
        f"tx/{job_id}/rdfox.log",
        **_flows(env),
        graph_store=env.graph,
        aws_credentials=env.credentials,
    )
    assert processed["status"] == "NEPTUNE_LOAD_IN_PROGRESS", processed
    refreshed = refresh_bulk_loads(**_flows(env), graph_store=env.graph)
    assert [n["outcome"] for n in refreshed["notified"]] == ["NEPTUNE_LOAD_FAILED"]
    job = env.store.get_by_id(job_id, "tx")
    assert job.status == JobStatus.ERROR_NOTIFICATION_SENT
    assert "0 records loaded, but the export had" in job.get("reason")
    (notice,) = env.notices()
    assert "0 records loaded" in notice["Message"]


def test_rules_in_a_format_the_runner_cannot_run_fail_before_any_work(env):
    env.s3.put_object(Bucket=INPUT, Key="odd/data.nt", Body=DATA)
    env.s3.put_object(Bucket=INPUT, Key="odd/rules.swrl", Body=b"whatever")
    env.put_jobspec("jobs/o.rdfoxjob.json", _jobspec("odd", rules=["rules.swrl"]))
    result = _schedule_and_process(env, "jobs/o.rdfoxjob.json")
    assert result["status"] == "ERROR_NOTIFICATION_SENT"
    assert "rules.swrl" in result["reason"] and "cannot run" in result["reason"]
    assert env.store.get_by_id(result["job_id"], "odd").get("outcome") == "INFERENCE_FAILED"
