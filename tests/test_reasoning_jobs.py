"""Job records against DynamoDB in moto's server: atomic ids, the state machine, notice claims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from blocks.dynamodb import DynamoDBTable
from infergraph.reasoning.jobs import (
    LOAD_IN_PROGRESS_STATES,
    LOAD_TERMINAL_STATES,
    LOADER_STATUSES,
    NOTICE_PENDING_STATES,
    TRANSITIONS,
    IllegalTransition,
    JobStatus,
    JobStore,
    StaleTransition,
)
from infergraph.reasoning.loaders.status import LOADER_IN_PROGRESS, LOADER_TERMINAL

S = JobStatus
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def table(aws):
    table = DynamoDBTable(
        table_name="jobs",
        partition_key="dataset",
        sort_key="date_seq",
        index_name="status-index",
        credentials=aws,
    )
    JobStore(table).create_table()
    return table


def test_simultaneous_creates_in_threads_get_distinct_ids(table):
    store = JobStore(table)
    barrier = threading.Barrier(24)

    def create(_):
        barrier.wait()
        return store.create("ds").job_id

    with ThreadPoolExecutor(24) as pool:
        ids = list(pool.map(create, range(24)))
    day = ids[0].split("_")[1]
    assert sorted(ids) == [f"ds_{day}_{n:03d}" for n in range(24)]
    # Another dataset has its own counter.
    assert store.create("other").job_id == f"other_{day}_000"


def test_simultaneous_creates_in_processes_get_distinct_ids(table, moto_endpoint, tmp_path):
    """Three processes, each with its own connections, schedule at the same instant."""
    go = tmp_path / "go"
    script = f"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from prefect_aws import AwsCredentials
from blocks.dynamodb import DynamoDBTable
from infergraph.reasoning.jobs import JobStore
creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing",
    region_name="us-east-1", aws_client_parameters={{"endpoint_url": "{moto_endpoint}"}})
store = JobStore(DynamoDBTable(table_name="jobs", partition_key="dataset", sort_key="date_seq",
    index_name="status-index", credentials=creds))
import pathlib
store.client  # connect before the start line
pathlib.Path("{tmp_path}", "ready-" + sys.argv[1]).touch()
while not pathlib.Path("{go}").exists():
    time.sleep(0.002)
with ThreadPoolExecutor(4) as pool:
    print(json.dumps(list(pool.map(lambda _: store.create("shared").job_id, range(4)))))
"""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(i)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    ids = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        ids += json.loads(out.strip().splitlines()[-1])
    assert len(ids) == len(set(ids)) == 12
    assert sorted(i.rsplit("_", 1)[1] for i in ids) == [f"{n:03d}" for n in range(12)]


def test_legal_path_records_history_and_stats(table):
    store = JobStore(table)
    job = store.create("ds", jobspec_uri="s3://b/k.rdfoxjob.json")
    job = store.transition(job, S.SCHEDULED, kubernetes={"name": "n", "namespace": "ns"})
    job = store.transition(
        job, S.INFERENCE_COMPLETE, reasoner={"bytes_per_entry": 101.891, "edb_facts": 510506725}
    )
    job = store.transition(job, S.NEPTUNE_LOAD_IN_PROGRESS, load={"load_id": "L"})
    job = store.transition(job, S.NEPTUNE_LOAD_IN_QUEUE)
    job = store.transition(job, S.NEPTUNE_LOAD_COMPLETED)
    job = store.transition(job, S.SUCCESS_NOTIFICATION_SENT)
    stored = store.get_by_id(job.job_id, "ds")
    assert stored.status == S.SUCCESS_NOTIFICATION_SENT and stored.version == 7
    assert stored.get("reasoner") == {"bytes_per_entry": 101.891, "edb_facts": 510506725}
    assert [h["status"] for h in stored.get("history")] == [
        "CREATED",
        "SCHEDULED",
        "INFERENCE_COMPLETE",
        "NEPTUNE_LOAD_IN_PROGRESS",
        "NEPTUNE_LOAD_IN_QUEUE",
        "NEPTUNE_LOAD_COMPLETED",
        "SUCCESS_NOTIFICATION_SENT",
    ]
    assert stored.get("created_at") <= stored.get("updated_at")
    assert [j.job_id for j in store.by_status(S.SUCCESS_NOTIFICATION_SENT)] == [job.job_id]


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ([], S.INFERENCE_COMPLETE),
        ([S.SCHEDULED], S.NEPTUNE_LOAD_COMPLETED),
        ([S.SCHEDULED, S.INFERENCE_FAILED], S.SUCCESS_NOTIFICATION_SENT),
        ([S.SCHEDULED, S.INFERENCE_FAILED, S.ERROR_NOTIFICATION_SENT], S.SCHEDULED),
    ],
)
def test_illegal_transition_is_refused_and_changes_nothing(table, path, target):
    store = JobStore(table)
    job = store.create("ds")
    for state in path:
        job = store.transition(job, state)
    with pytest.raises(IllegalTransition, match=f"{job.status} → {target} refused"):
        store.transition(job, target)
    stored = store.get(job.dataset, job.sort_key)
    assert (stored.status, stored.version) == (job.status, job.version)


def test_stale_transition_is_refused_and_never_overwrites(table):
    store = JobStore(table)
    job = store.create("ds")
    first = store.transition(job, S.SCHEDULED, kubernetes={"name": "a"})
    with pytest.raises(StaleTransition, match="it is now SCHEDULED") as refused:
        store.transition(job, S.SCHEDULE_FAILED, reason="late")
    assert refused.value.current.status == S.SCHEDULED
    # Same status, older version: a stale statistics write is refused too.
    store.update(first, reasoner={"edb_facts": 1})
    with pytest.raises(StaleTransition):
        store.update(first, reasoner={"edb_facts": 2})
    stored = store.get(job.dataset, job.sort_key)
    assert stored.get("reasoner") == {"edb_facts": 1} and stored.get("reason") is None


#: Neptune's 15 loader statuses (NOTES §4), written out: loader status → the job state it
#: files the job under, and where that state may go next ("LOADING": any load state).
LOADER_STATUS_TABLE = {
    "LOAD_NOT_STARTED": ("NEPTUNE_LOAD_NOT_STARTED", "LOADING"),
    "LOAD_IN_QUEUE": ("NEPTUNE_LOAD_IN_QUEUE", "LOADING"),
    "LOAD_IN_PROGRESS": ("NEPTUNE_LOAD_IN_PROGRESS", "LOADING"),
    "LOAD_COMPLETED": ("NEPTUNE_LOAD_COMPLETED", "SUCCESS_NOTIFICATION_SENT"),
    "LOAD_CANCELLED_BY_USER": ("NEPTUNE_LOAD_CANCELLED_BY_USER", "ERROR_NOTIFICATION_SENT"),
    "LOAD_CANCELLED_DUE_TO_ERRORS": (
        "NEPTUNE_LOAD_CANCELLED_DUE_TO_ERRORS",
        "ERROR_NOTIFICATION_SENT",
    ),
    "LOAD_UNEXPECTED_ERROR": ("NEPTUNE_LOAD_UNEXPECTED_ERROR", "ERROR_NOTIFICATION_SENT"),
    "LOAD_FAILED": ("NEPTUNE_LOAD_FAILED", "ERROR_NOTIFICATION_SENT"),
    "LOAD_S3_READ_ERROR": ("NEPTUNE_LOAD_S3_READ_ERROR", "ERROR_NOTIFICATION_SENT"),
    "LOAD_S3_ACCESS_DENIED_ERROR": (
        "NEPTUNE_LOAD_S3_ACCESS_DENIED_ERROR",
        "ERROR_NOTIFICATION_SENT",
    ),
    "LOAD_COMMITTED_W_WRITE_CONFLICTS": (
        "NEPTUNE_LOAD_COMMITTED_W_WRITE_CONFLICTS",
        "ERROR_NOTIFICATION_SENT",
    ),
    "LOAD_DATA_DEADLOCK": ("NEPTUNE_LOAD_DATA_DEADLOCK", "ERROR_NOTIFICATION_SENT"),
    "LOAD_DATA_FAILED_DUE_TO_FEED_MODIFIED_OR_DELETED": (
        "NEPTUNE_LOAD_DATA_FAILED_DUE_TO_FEED_MODIFIED_OR_DELETED",
        "ERROR_NOTIFICATION_SENT",
    ),
    "LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED": (
        "NEPTUNE_LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED",
        "ERROR_NOTIFICATION_SENT",
    ),
    "LOAD_FAILED_INVALID_REQUEST": (
        "NEPTUNE_LOAD_FAILED_INVALID_REQUEST",
        "ERROR_NOTIFICATION_SENT",
    ),
}


def test_every_loader_status_has_a_state_and_a_way_out():
    assert len(LOADER_STATUS_TABLE) == 15
    assert sorted(LOADER_STATUSES) == sorted(LOADER_STATUS_TABLE)
    load_states = {state for state, _ in LOADER_STATUS_TABLE.values()}
    running = {s for s, (_, way_out) in LOADER_STATUS_TABLE.items() if way_out == "LOADING"}
    assert set(LOADER_IN_PROGRESS) == running
    assert set(LOADER_TERMINAL) == set(LOADER_STATUS_TABLE) - running
    assert {str(s) for s in LOAD_IN_PROGRESS_STATES} == {f"NEPTUNE_{s}" for s in running}
    for status, (state, way_out) in LOADER_STATUS_TABLE.items():
        assert S.for_loader(status) == state, status
        allowed = {str(s) for s in TRANSITIONS[S(state)]}
        if way_out == "LOADING":
            assert S(state) not in LOAD_TERMINAL_STATES and S(state) not in NOTICE_PENDING_STATES
            assert allowed == load_states, status  # on to any load state, never to a notice
        else:
            assert S(state) in LOAD_TERMINAL_STATES and S(state) in NOTICE_PENDING_STATES
            assert allowed == {way_out}, status
    assert set(TRANSITIONS) == set(S)
    with pytest.raises(ValueError, match="unknown loader status"):
        S.for_loader("LOAD_EXPLODED")


def test_notice_claim_is_exclusive_until_its_lease_expires(table):
    store = JobStore(table)
    job = store.create("ds")
    job = store.transition(job, S.SCHEDULE_FAILED, reason="bad")
    first = store.claim_notice(job, "run-1", lease_seconds=600)
    assert first is not None and first.get("notice_claim") == "run-1"
    assert store.claim_notice(job, "run-2", lease_seconds=600) is None
    # run-1 "crashed" before publishing: once its lease is over, another run may send it.
    taken = store.claim_notice(job, "run-3", lease_seconds=0)
    assert taken is not None and taken.get("notice_claim") == "run-3"
    done = store.transition(taken, S.ERROR_NOTIFICATION_SENT, notice_sent_at="now")
    assert store.claim_notice(done, "run-4", lease_seconds=0) is None


def test_simultaneous_notice_claims_have_one_winner(table):
    """Six runs claim each of 40 notices at the same instant: one claim wins per notice.

    As in DynamoDB, a conditional write must be atomic; in a plain ``moto.server`` it is
    not, and 6 to 13 of the 40 notices had a second winner (two notices sent).
    """
    store = JobStore(table)
    jobs = [store.transition(store.create("ds"), S.SCHEDULE_FAILED, reason="x") for _ in range(40)]
    runs = 6
    barrier = threading.Barrier(runs, timeout=60)

    def claim(run: int) -> list[str]:
        won = []
        for job in jobs:
            barrier.wait()
            if store.claim_notice(job, f"run-{run}", lease_seconds=600) is not None:
                won.append(job.job_id)
        return won

    with ThreadPoolExecutor(runs) as pool:
        winners = [job_id for won in pool.map(claim, range(runs)) for job_id in won]
    assert sorted(winners) == sorted(j.job_id for j in jobs)


def test_id_delimiter_and_log_name_are_settings(table, monkeypatch):
    from infergraph.reasoning.jobs import dataset_of_job_id
    from infergraph.reasoning.steps import parse_log_key

    monkeypatch.setenv("INFERGRAPH_JOB_ID_DELIMITER", "-")
    monkeypatch.setenv("INFERGRAPH_REASONER_LOG", "reasoner.log")
    job = JobStore(table).create("my_data")
    assert job.job_id.startswith("my_data-") and job.job_id.endswith("-000")
    assert dataset_of_job_id(job.job_id) == "my_data"
    assert parse_log_key(f"my_data/{job.job_id}/reasoner.log") == ("my_data", job.job_id)
    with pytest.raises(ValueError, match=r"reasoner\.log"):
        parse_log_key(f"my_data/{job.job_id}/rdfox.log")
