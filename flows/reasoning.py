"""Graph reasoning as Prefect flows: schedule a job, process its log, refresh its load, cancel.

``schedule_reasoning_job`` runs when a ``*.rdfoxjob.json`` lands in S3, ``process_inference``
when a job's ``rdfox.log`` lands, ``refresh_bulk_loads`` every minute (it also enforces
timeouts), and ``cancel_reasoning_job`` on request. Every step is recorded on the job in
DynamoDB with a conditional write, and every job ends with exactly one SNS notice.
``python flows/reasoning.py --help`` runs them by hand.
"""

from __future__ import annotations

import sys
from typing import Any

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect_aws import AwsCredentials
from prefect_kubernetes.credentials import KubernetesCredentials

from blocks.dynamodb import DynamoDBTable
from blocks.sns import SnsTopic
from infergraph.aws.storage import split_s3_uri
from infergraph.blockref import resolve_block
from infergraph.reasoning.control import CancelRefused
from infergraph.reasoning.jobs import (
    INVALID_JOBSPEC_DATASET,
    LOAD_IN_PROGRESS_STATES,
    JobNotFound,
    TransitionRefused,
    dataset_of_job_id,
    utcnow,
)
from infergraph.reasoning.jobs import JobStatus as S
from infergraph.reasoning.jobspec import JobSpec, JobSpecError, dataset_of, parse_jobspec
from infergraph.reasoning.runners.local import LocalRunFailed, upload_log
from infergraph.reasoning.steps import (
    DEFAULT_GRAPH_STORE,
    DEFAULT_JOBS_TABLE,
    DEFAULT_NOTICES,
    NOTICE_LEASE_SECONDS,
    GraphStore,
    credentials_block,
    fail,
    graph_store_block,
    job_summary,
    kubernetes_block,
    open_job_store,
    parse_log_key,
)
from infergraph.runs import IDLE, describe_run
from tasks.reasoning import (
    cancel_job,
    check_kubernetes_jobs,
    check_missing_logs,
    enforce_timeouts,
    read_jobspec,
    record_inference,
    refresh_loads,
    run_local_reasoning,
    send_pending_notices,
    start_bulk_load,
    submit_kubernetes_job,
)


def _told(summary: dict[str, Any]) -> State[dict[str, Any]]:
    """Name the run after its job and say the job's status in the run's state message."""
    describe_run(f"job {summary['job_id']} · {summary['status']}")
    reason = f": {summary['reason']}" if summary.get("reason") else ""
    message = f"Completed: job {summary['job_id']} {summary['status']}{reason}"
    return Completed(message=message[:300], data=summary)


def _log_run_name() -> str:
    key = str(flow_run.parameters.get("key", ""))
    parts = key.split("/")
    return f"job {parts[1]} · log" if len(parts) == 3 else key


@flow(name="schedule-reasoning-job", flow_run_name="jobspec {key}", log_prints=True)
def schedule_reasoning_job(
    bucket: str,
    key: str,
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    aws_credentials: AwsCredentials | str | None = None,
    kubernetes_credentials: KubernetesCredentials | str | None = None,
    process_after_local_run: bool = False,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
) -> State[dict[str, Any]]:
    """Validate a jobspec, record the job and start it on Kubernetes or on this machine.

    Args:
        bucket: Bucket of the uploaded jobspec (*.rdfoxjob.json).
        key: Key of the jobspec in that bucket (already URL-decoded).
        jobs_table: DynamoDBTable block (name or instance) of the jobs table: partition key
            'dataset', a sort key for 'YYYY-MM-DD_NNN', index_name of the status GSI.
        notices: SnsTopic block (name or instance) that receives each job's notice.
        aws_credentials: AwsCredentials block name for S3; empty for the default AWS chain.
        kubernetes_credentials: KubernetesCredentials block name for 'runner: kubernetes'
            jobs; empty for in-cluster or ~/.kube/config.
        process_after_local_run: After a local run, process its log in this run instead of
            waiting for the S3 event (for setups without an S3 trigger).
        graph_store: Where process_after_local_run loads the output:
            `oxigraph-store/<name>` or `neptune-cluster/<name>`.
    """
    logger = get_run_logger()
    store, topic = open_job_store(jobs_table), resolve_block(notices, SnsTopic)
    credentials = credentials_block(aws_credentials)
    uri = f"s3://{bucket}/{key}"
    try:
        data = read_jobspec(bucket, key, credentials)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        data, problem = (
            b"",
            f"cannot read jobspec {uri}: {error.get('Code')}: {error.get('Message')}",
        )
    else:
        problem = None
    spec: JobSpec | None = None
    if problem is None:
        try:
            spec = parse_jobspec(data, uri)
        except JobSpecError as exc:
            problem = str(exc)
    if spec is None:
        # No usable dataset means no key to file the job under: such jobspecs share one
        # reserved partition so they are still recorded, listed and notified.
        dataset = dataset_of(data) or INVALID_JOBSPEC_DATASET
        job = store.create(dataset, jobspec_uri=uri)
        job = fail(store, topic, job, S.SCHEDULE_FAILED, problem or "invalid jobspec")
        return _told(job_summary(job))

    job = store.create(
        spec.dataset,
        jobspec_uri=uri,
        runner=spec.runner,
        jobspec=spec.model_dump(mode="json"),
        jobspec_warnings=spec.warnings() or None,
    )
    job = store.update(job, output_prefix=spec.output_prefix(job.job_id))
    for warning in job.get("jobspec_warnings") or []:
        logger.warning("jobspec %s: %s", uri, warning)
    logger.info("job %s created from %s (runner %s)", job.job_id, uri, spec.runner)
    if spec.runner == "kubernetes":
        try:
            kubernetes = submit_kubernetes_job(
                spec, job.job_id, uri, credentials, kubernetes_block(kubernetes_credentials)
            )
        except Exception as exc:
            reason = f"could not start the Kubernetes Job: {type(exc).__name__}: {exc}"
            return _told(job_summary(fail(store, topic, job, S.SCHEDULE_FAILED, reason)))
        job = store.transition(job, S.SCHEDULED, kubernetes=kubernetes, scheduled_at=utcnow())
        return _told(job_summary(job, kubernetes=kubernetes))

    job = store.transition(job, S.SCHEDULED, scheduled_at=utcnow())
    try:
        run = run_local_reasoning(spec, job.job_id, credentials)
    except LocalRunFailed as exc:
        job = fail(store, topic, job, S.INFERENCE_FAILED, str(exc))
        # Uploaded only now that the job is failed, so its arrival cannot race the failure.
        log_uri = upload_log(spec, job.job_id, exc.log, credentials)
        job = store.update(job, log_uri=log_uri)
        return _told(job_summary(job))
    summary = job_summary(job, **run)
    if process_after_local_run:
        log_bucket, log_key = split_s3_uri(run["log_uri"])
        processed = process_inference(
            log_bucket, log_key, jobs_table, notices, graph_store, aws_credentials
        )
        return _told(processed)
    return _told(summary)


@flow(name="process-inference", flow_run_name=_log_run_name, log_prints=True)
def process_inference(
    bucket: str,
    key: str,
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
    aws_credentials: AwsCredentials | str | None = None,
) -> State[dict[str, Any]]:
    """Record a finished reasoner run from its log and start the bulk load of its output.

    Args:
        bucket: Output bucket where the log arrived.
        key: Key of the log: {dataset}/{job_id}/rdfox.log (already URL-decoded).
        jobs_table: DynamoDBTable block (name or instance) of the jobs table.
        notices: SnsTopic block (name or instance) for failure notices.
        graph_store: `neptune-cluster/<name>` or `oxigraph-store/<name>` (or an instance):
            where the output is bulk-loaded.
        aws_credentials: AwsCredentials block name for S3; empty for the default AWS chain.
    """
    logger = get_run_logger()
    dataset, job_id = parse_log_key(key)
    store, topic = open_job_store(jobs_table), resolve_block(notices, SnsTopic)
    try:
        job = store.get_by_id(job_id, dataset)
    except JobNotFound as exc:
        raise JobNotFound(f"s3://{bucket}/{key} belongs to no recorded job: {exc}") from None
    try:
        if job.status == S.SCHEDULED:
            job = record_inference(
                store, topic, job, bucket, key, credentials_block(aws_credentials)
            )
        if job.status == S.INFERENCE_COMPLETE:
            job = start_bulk_load(store, topic, job, graph_store_block(graph_store))
        else:
            logger.info("job %s is %s: nothing to start", job.job_id, job.status)
    except TransitionRefused as exc:
        # Another run (a duplicate S3 event) got there first; the record is intact.
        logger.warning("%s", exc)
        job = store.get(job.dataset, job.sort_key)
    return _told(job_summary(job, load_id=(job.get("load") or {}).get("load_id")))


@flow(name="refresh-bulk-loads", flow_run_name="refresh", log_prints=True)
def refresh_bulk_loads(
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
    kubernetes_credentials: KubernetesCredentials | str | None = None,
    notice_lease_seconds: float = NOTICE_LEASE_SECONDS,
    aws_credentials: AwsCredentials | str | None = None,
) -> State[dict[str, Any]]:
    """Poll loads in progress, enforce timeouts, and send each finished job its notice.

    Args:
        jobs_table: DynamoDBTable block (name or instance) of the jobs table.
        notices: SnsTopic block (name or instance) that receives the notices.
        graph_store: `neptune-cluster/<name>` or `oxigraph-store/<name>` (or an instance):
            the loader asked for load statuses; its timeouts are the default limits.
        kubernetes_credentials: KubernetesCredentials block name used to spot Kubernetes
            reasoning Jobs that failed or finished without a log; empty for in-cluster or
            ~/.kube/config.
        notice_lease_seconds: How long a claimed, unsent notice stays reserved for the run
            that claimed it before another run may send it.
        aws_credentials: AwsCredentials block name for S3 (looking for logs); empty for the
            graph store block's credentials.
    """
    store, topic = open_job_store(jobs_table), resolve_block(notices, SnsTopic)
    graph = graph_store_block(graph_store)
    kubernetes = kubernetes_block(kubernetes_credentials)
    failed = check_kubernetes_jobs(store, topic, kubernetes)
    failed += check_missing_logs(
        store, topic, graph, kubernetes, credentials_block(aws_credentials)
    )
    loads = refresh_loads(store, graph)
    timed_out = enforce_timeouts(store, topic, graph, kubernetes)
    notified = send_pending_notices(store, topic, notice_lease_seconds)
    if loads["problems"]:
        # Everything else was refreshed and notified; the run still shows what went wrong.
        raise RuntimeError("could not refresh: " + "; ".join(loads["problems"]))
    counts = {
        "inference_failed": failed,
        "refreshed": loads["refreshed"],
        "timed_out": timed_out,
        "notified": notified,
    }
    sizes = {k: len(v) if isinstance(v, list) else v for k, v in counts.items()}
    told = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in sizes.items() if n)
    if told:
        describe_run(f"refresh · {told}")
    else:  # the every-minute tick mostly finds nothing: easy to tell apart in the list
        describe_run(f"refresh · {IDLE}", add_tags=[IDLE])
    return Completed(message=f"Completed: {told or IDLE}", data=counts)


@flow(name="cancel-reasoning-job", flow_run_name="cancel job {job_id}", log_prints=True)
def cancel_reasoning_job(
    job_id: str,
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
    kubernetes_credentials: KubernetesCredentials | str | None = None,
) -> State[dict[str, Any]]:
    """Cancel a job: delete its Kubernetes Job or cancel its bulk load, fail it, notify once.

    A job that has already finished is left unchanged; the result then carries `refused`.

    Args:
        job_id: The job, e.g. transactions_2024-05-01_000.
        jobs_table: DynamoDBTable block (name or instance) of the jobs table.
        notices: SnsTopic block (name or instance) that receives the notice.
        graph_store: `neptune-cluster/<name>` or `oxigraph-store/<name>`: where its load runs.
        kubernetes_credentials: KubernetesCredentials block name for Kubernetes jobs.
    """
    store, topic = open_job_store(jobs_table), resolve_block(notices, SnsTopic)
    job = store.get_by_id(job_id, dataset_of_job_id(job_id))
    # Only a load in progress needs the graph store (a Kubernetes-only setup may have none).
    graph = graph_store_block(graph_store) if job.status in LOAD_IN_PROGRESS_STATES else None
    try:
        job = cancel_job(store, topic, job, graph, kubernetes_block(kubernetes_credentials))
    except CancelRefused as exc:
        get_run_logger().warning("%s", exc)
        return Completed(message=f"Refused: {exc}", data=job_summary(job, refused=str(exc)))
    return Completed(message=f"Completed: job {job_id} is {job.status}", data=job_summary(job))


if __name__ == "__main__":
    from infergraph.reasoning.cli import main

    sys.exit(
        main(schedule_reasoning_job, process_inference, refresh_bulk_loads, cancel_reasoning_job)
    )
