"""The Neptune side: the real signed ``neptunedata`` requests, every loader status, notices.

Requests go over HTTP to a loopback server that answers like Neptune (its status reply is
the real sample in ``fixtures/reasoning/neptune_loader_status.json``).
"""

from __future__ import annotations

import json
import threading

import pytest
from prefect_aws import AwsCredentials

from blocks.neptune import NeptuneCluster
from flows.reasoning import refresh_bulk_loads
from infergraph.reasoning.jobs import LOADER_IN_PROGRESS, LOADER_STATUSES, JobStatus
from infergraph.reasoning.jobspec import parse_jobspec
from infergraph.reasoning.loaders import LoadRefused, NeptuneLoader, build_load_request
from infergraph.reasoning.notices import notice_subject
from tests.support.fake_neptune import fake_neptune
from tests.support.races import held_after
from tests.support.reasoning_env import INPUT, OUTPUT, make_env

SIGNER = AwsCredentials(
    aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="us-east-1"
)
ROLE = "arn:aws:iam::123456789012:role/NeptuneLoadFromS3"


@pytest.fixture
def neptune(fixtures_dir):
    with fake_neptune(fixtures_dir / "reasoning" / "neptune_loader_status.json") as fake:
        yield fake


def cluster(fake, **extra) -> NeptuneCluster:
    return NeptuneCluster(endpoint=fake.url, region="eu-west-1", credentials=SIGNER, **extra)


def spec(**neptune_configuration):
    body = {"job_bucket": INPUT, "job_key": "ds", "output_bucket": OUTPUT}
    if neptune_configuration:
        body["neptune_configuration"] = neptune_configuration
    return parse_jobspec(json.dumps(body), "s3://in/ds.rdfoxjob.json")


def test_start_sends_every_configured_field_signed(neptune):
    loader = NeptuneLoader(cluster(neptune))
    request = build_load_request(
        spec(
            source_format="nquads",
            iam_role=ROLE,
            region="us-west-2",
            mode="RESUME",
            fail_on_error=False,
            parallelism="OVERSUBSCRIBE",
            update_single_cardinality_properties=True,
            queue_request=False,
            named_graph="http://example.org/graph",
            base_uri="http://example.org/base/",
            dependencies=["11111111-2222-3333-4444-555555555555"],
        ),
        "s3://out/ds/ds_2024-01-01_001/data/",
        *loader.defaults(),
    )
    assert loader.start(request) == "a1cac8fa-ad02-4e28-9dc6-12f3e7b57ff8"
    (sent,) = neptune.requests
    assert (sent["method"], sent["path"]) == ("POST", "/loader")
    assert json.loads(sent["body"]) == {
        "source": "s3://out/ds/ds_2024-01-01_001/data/",
        "format": "nquads",
        "iamRoleArn": ROLE,
        "region": "us-west-2",  # boto3 calls it s3BucketRegion; the wire name is region
        "mode": "RESUME",
        "failOnError": False,
        "parallelism": "OVERSUBSCRIBE",
        "parserConfiguration": {
            "baseUri": "http://example.org/base/",
            "namedGraphUri": "http://example.org/graph",
        },
        "updateSingleCardinalityProperties": True,
        "queueRequest": False,
        "dependencies": ["11111111-2222-3333-4444-555555555555"],
    }
    auth = sent["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/neptune-db/aws4_request" in auth


def test_block_supplies_role_and_region_defaults(neptune):
    loader = NeptuneLoader(cluster(neptune, iam_role_arn=ROLE))
    loader.start(build_load_request(spec(), "s3://out/ds/j/data/", *loader.defaults()))
    body = json.loads(neptune.requests[0]["body"])
    assert body["iamRoleArn"] == ROLE and body["region"] == "eu-west-1"
    # The reference's deployment-wide loader settings are the default.
    assert body["format"] == "turtle" and body["failOnError"] is False
    assert body["updateSingleCardinalityProperties"] is True and body["queueRequest"] is True
    assert "parserConfiguration" not in body and "dependencies" not in body


def test_no_role_is_refused_before_any_request(neptune):
    loader = NeptuneLoader(cluster(neptune))
    with pytest.raises(LoadRefused, match="no IAM role") as refused:
        loader.start(build_load_request(spec(), "s3://out/ds/j/data/", *loader.defaults()))
    assert refused.value.status == "LOAD_FAILED_INVALID_REQUEST"
    assert neptune.requests == []


def test_loader_refusal_maps_to_terminal_status(neptune):
    neptune.start_error = (
        400,
        {"code": "BadRequestException", "requestId": "r1", "detailedMessage": "bad source"},
    )
    loader = NeptuneLoader(cluster(neptune, iam_role_arn=ROLE))
    with pytest.raises(LoadRefused, match="BadRequestException") as refused:
        loader.start(build_load_request(spec(), "s3://out/ds/j/data/", *loader.defaults()))
    assert refused.value.status == "LOAD_FAILED_INVALID_REQUEST"


def test_status_reads_the_real_sample(neptune, fixtures_dir):
    sample = json.loads((fixtures_dir / "reasoning" / "neptune_loader_status.json").read_text())
    status = NeptuneLoader(cluster(neptune)).status("a1cac8fa-ad02-4e28-9dc6-12f3e7b57ff8")
    assert status.status == "LOAD_COMPLETED"
    assert status.overall == sample["payload"]["overallStatus"]
    assert status.overall["totalRecords"] == 41220091
    assert status.feed_count == [{"LOAD_COMPLETED": 4}]
    (sent,) = neptune.requests
    assert sent["path"] == "/loader/a1cac8fa-ad02-4e28-9dc6-12f3e7b57ff8"
    assert sent["query"]["details"] == ["true"] and sent["query"]["errors"] == ["true"]


def test_verification_counts_by_sparql_and_gremlin(neptune):
    neptune.sparql_count = 1234
    loader = NeptuneLoader(cluster(neptune))
    rdf = loader.verify(build_load_request(spec(named_graph="http://g"), "s3://o/d/"))
    assert rdf["count"] == 1234
    sparql = neptune.requests[-1]
    assert sparql["path"] == "/sparql" and b"GRAPH+%3Chttp%3A%2F%2Fg%3E" in sparql["body"]
    assert "neptune-db/aws4_request" in sparql["headers"]["Authorization"]
    csv = loader.verify(build_load_request(spec(source_format="csv"), "s3://o/d/"))
    assert csv["vertices"] == 7 and csv["edges"] == 7 and csv["count"] == 14
    gremlin = [json.loads(r["body"]) for r in neptune.requests if r["path"] == "/gremlin"]
    assert gremlin == [{"gremlin": "g.V().count()"}, {"gremlin": "g.E().count()"}]


def _loading_job(env, request, load_id):
    store = env.store
    job = store.create("ds", jobspec=json.loads(spec().model_dump_json()), runner="local")
    job = store.transition(job, JobStatus.SCHEDULED)
    job = store.transition(
        job, JobStatus.INFERENCE_COMPLETE, reasoner={"counts": {"fullChainCount": 2}}
    )
    load = {"store": "neptune", "load_id": load_id, "request": request.record()}
    return store.transition(job, JobStatus.NEPTUNE_LOAD_IN_PROGRESS, load=load)


@pytest.mark.usefixtures("prefect_server")
def test_refresh_handles_all_fifteen_statuses(aws, tmp_path, neptune):
    env = make_env(aws, tmp_path)
    request = build_load_request(spec(iam_role=ROLE), "s3://out/ds/j/data/")
    jobs = {}
    for status in LOADER_STATUSES:
        neptune.statuses[f"load-{status}"] = status
        jobs[status] = _loading_job(env, request, f"load-{status}")
    neptune.sparql_count = 99

    result = refresh_bulk_loads(
        jobs_table=env.table, notices=env.topic, graph_store=cluster(neptune)
    )

    assert len(result["refreshed"]) == 15
    notices = {n["MessageAttributes"]["job_id"]["Value"]: n for n in env.notices()}
    assert len(notices) == 12  # one per terminal status, none for the three still running
    for status, job in jobs.items():
        current = env.store.get(job.dataset, job.sort_key)
        if status in LOADER_IN_PROGRESS:
            assert current.status == f"NEPTUNE_{status}"
            assert current.get("load")["overall"]["status"] == status
            assert job.job_id not in notices
            continue
        notice = notices[job.job_id]
        assert notice["Subject"] == notice_subject(job.job_id, f"NEPTUNE_{status}")
        assert notice["MessageAttributes"]["status"]["Value"] == f"NEPTUNE_{status}"
        assert current.get("outcome") == f"NEPTUNE_{status}"
        if status == "LOAD_COMPLETED":
            assert current.status == JobStatus.SUCCESS_NOTIFICATION_SENT
            assert current.get("verification")["count"] == 99
            assert "triples loaded: 41,220,091" in notice["Message"]
            assert "Time to load: 50 min 14 s" in notice["Message"]
        else:
            assert current.status == JobStatus.ERROR_NOTIFICATION_SENT
            assert "PARSING_ERROR: Expected '<' s3://x/data/a.nt" in notice["Message"]
            assert f"ended {status}" in notice["Message"]


@pytest.mark.usefixtures("prefect_server")
def test_concurrent_refreshes_send_each_notice_once(aws, tmp_path, neptune):
    """Three refreshes that have all read the finished jobs before any of them claims one."""
    env = make_env(aws, tmp_path)
    request = build_load_request(spec(iam_role=ROLE), "s3://out/ds/j/data/")
    jobs = [_loading_job(env, request, f"load-{i}") for i in range(6)]
    results, errors = [], []

    def refresh():
        try:
            results.append(
                refresh_bulk_loads(
                    jobs_table=env.table, notices=env.topic, graph_store=cluster(neptune)
                )
            )
        except Exception as exc:  # reported below, with the barrier's state
            errors.append(exc)

    def pending_notices(params):
        return params.get("ExpressionAttributeValues", {}).get(":s") == {
            "S": JobStatus.NEPTUNE_LOAD_COMPLETED
        }

    # Each run waits, holding its list of finished jobs, until every run has read it: all
    # three then try to notify all six jobs, and only the notice claim keeps it to one each.
    with held_after(env.table.client(), "Query", pending_notices, parties=3) as barrier:
        threads = [threading.Thread(target=refresh) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    assert not errors and len(results) == 3, (errors, barrier.broken)
    notices = env.notices()
    assert sorted(n["MessageAttributes"]["job_id"]["Value"] for n in notices) == sorted(
        j.job_id for j in jobs
    )
    assert sum(len(r["notified"]) for r in results) == 6
    for job in jobs:
        assert (
            env.store.get(job.dataset, job.sort_key).status == JobStatus.SUCCESS_NOTIFICATION_SENT
        )


def _timed_job(env, load_id, **jobspec):
    body = {"job_bucket": INPUT, "job_key": "ds", "output_bucket": OUTPUT, **jobspec}
    store = env.store
    job = store.create("ds", jobspec=body, runner="local")
    job = store.transition(job, JobStatus.SCHEDULED)
    job = store.transition(job, JobStatus.INFERENCE_COMPLETE)
    request = build_load_request(spec(iam_role=ROLE), "s3://out/ds/j/data/")
    load = {"store": "neptune", "load_id": load_id, "request": request.record()}
    return store.transition(job, JobStatus.NEPTUNE_LOAD_IN_PROGRESS, load=load)


def _deletes(neptune) -> list[str]:
    return [r["path"] for r in neptune.requests if r["method"] == "DELETE"]


@pytest.mark.usefixtures("prefect_server")
def test_load_timeout_cancels_the_load_and_notifies_once(aws, tmp_path, neptune):
    env = make_env(aws, tmp_path)
    late = _timed_job(env, "load-late", load_timeout_minutes=0.0001)
    patient = _timed_job(env, "load-patient")  # the block's default: 12 hours
    neptune.statuses.update({"load-late": "LOAD_IN_PROGRESS", "load-patient": "LOAD_IN_PROGRESS"})
    graph = cluster(neptune)

    result = refresh_bulk_loads(jobs_table=env.table, notices=env.topic, graph_store=graph)
    assert [t["job_id"] for t in result["timed_out"]] == [late.job_id]
    assert _deletes(neptune) == ["/loader/load-late"]
    job = env.store.get(late.dataset, late.sort_key)
    assert job.status == JobStatus.ERROR_NOTIFICATION_SENT
    assert job.get("outcome") == "NEPTUNE_LOAD_CANCELLED_BY_USER"
    assert "load timeout" in job.get("reason") and "load-late cancelled" in job.get("reason")
    still = env.store.get(patient.dataset, patient.sort_key)
    assert still.status == JobStatus.NEPTUNE_LOAD_IN_PROGRESS

    again = refresh_bulk_loads(jobs_table=env.table, notices=env.topic, graph_store=graph)
    assert again["timed_out"] == [] and _deletes(neptune) == ["/loader/load-late"]
    (notice,) = env.notices()
    assert notice["Subject"].endswith(" - NEPTUNE_LOAD_CANCELLED_BY_USER")
    assert "load timeout" in notice["Message"]


@pytest.mark.usefixtures("prefect_server")
def test_cancel_stops_a_load_and_refuses_a_finished_job(aws, tmp_path, neptune):
    from flows.reasoning import cancel_reasoning_job

    env = make_env(aws, tmp_path)
    job = _timed_job(env, "load-running")
    neptune.statuses["load-running"] = "LOAD_IN_PROGRESS"
    graph = cluster(neptune)
    flows = {"jobs_table": env.table, "notices": env.topic, "graph_store": graph}

    result = cancel_reasoning_job(job.job_id, **flows)
    assert result["status"] == "ERROR_NOTIFICATION_SENT" and "refused" not in result
    assert _deletes(neptune) == ["/loader/load-running"]
    cancelled = env.store.get(job.dataset, job.sort_key)
    assert cancelled.get("outcome") == "NEPTUNE_LOAD_CANCELLED_BY_USER"
    assert cancelled.get("reason") == "cancelled by user; load load-running cancelled"
    assert len(env.notices()) == 1

    again = cancel_reasoning_job(job.job_id, **flows)
    assert "already finished (ERROR_NOTIFICATION_SENT)" in again["refused"]
    unchanged = env.store.get(job.dataset, job.sort_key)
    assert unchanged.version == cancelled.version and unchanged.attrs == cancelled.attrs
    assert _deletes(neptune) == ["/loader/load-running"] and env.notices(wait=0) == []


def test_cancel_cli_names_a_bad_job_id(capsys):
    from infergraph.reasoning.cli import main

    with pytest.raises(SystemExit) as exc:
        main(None, None, None, None, argv=["cancel", "not-a-job-id"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: ")  # the mistake, then the fix
    assert err[0].endswith("'not-a-job-id' is not a job id ({dataset}_YYYY-MM-DD_NNN)")
    assert err[1].startswith("fix: see ")
