"""Graph reasoning as three Prefect flows: schedule a job, process its log, refresh its load.

``schedule_reasoning_job`` runs when a ``*.rdfoxjob.json`` lands in S3, ``process_inference``
when a job's ``rdfox.log`` lands, and ``refresh_bulk_loads`` every minute. Every step is
recorded on the job in DynamoDB with a conditional write, and every job ends with
exactly one SNS notice. ``python flows/reasoning.py --help`` runs them by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python flows/reasoning.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from botocore.exceptions import ClientError
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect_aws import AwsCredentials
from prefect_kubernetes.credentials import KubernetesCredentials

from blocks.aws import aws_client
from blocks.dynamodb import DynamoDBTable
from blocks.neptune import NeptuneCluster
from blocks.oxigraph import OxigraphStore
from blocks.resolve import resolve_block
from blocks.sns import SnsTopic
from tasks.reasoning import k8s_job
from tasks.reasoning.jobs import (
    INVALID_JOBSPEC_DATASET,
    LOAD_IN_PROGRESS_STATES,
    LOAD_TERMINAL_STATES,
    NOTICE_PENDING_STATES,
    Job,
    JobNotFound,
    JobStatus,
    JobStore,
    TransitionRefused,
    split_job_id,
    utcnow,
)
from tasks.reasoning.jobspec import JobSpec, JobSpecError, dataset_of, parse_jobspec
from tasks.reasoning.loaders import LoadRefused, LoadRequest, build_load_request, open_loader
from tasks.reasoning.local_runner import LocalRunFailed, run_local_job, upload_log
from tasks.reasoning.notices import notice_subject, publish_notice
from tasks.reasoning.rdfox_log import LogParseError, parse_rdfox_log
from tasks.storage import split_s3_uri

S = JobStatus
DEFAULT_JOBS_TABLE = "reasoning-jobs"
DEFAULT_NOTICES = "reasoning-notices"
DEFAULT_GRAPH_STORE = "oxigraph-store/reasoning-graph"
NOTICE_LEASE_SECONDS = 900.0

GraphStore = NeptuneCluster | OxigraphStore


# -- resolving blocks ----------------------------------------------------------------------------


def _store(jobs_table: DynamoDBTable | str) -> JobStore:
    return JobStore(resolve_block(jobs_table, DynamoDBTable))


def _credentials(value: AwsCredentials | str | None) -> AwsCredentials | None:
    return None if value is None else resolve_block(value, AwsCredentials)


def _kubernetes(value: KubernetesCredentials | str | None) -> KubernetesCredentials | None:
    return None if value is None else resolve_block(value, KubernetesCredentials)


def _graph_store(value: GraphStore | str) -> GraphStore:
    """A block instance, or ``slug/name`` (``neptune-cluster/prod``, ``oxigraph-store/local``)."""
    if isinstance(value, NeptuneCluster | OxigraphStore):
        return value
    slug, _, name = value.partition("/")
    types = {cls.get_block_type_slug(): cls for cls in (NeptuneCluster, OxigraphStore)}
    if not name or slug not in types:
        raise ValueError(
            f"graph_store {value!r}: expected 'neptune-cluster/<name>' or 'oxigraph-store/<name>'"
        )
    return resolve_block(name, types[slug])


# -- shared steps ----------------------------------------------------------------------------------


def _spec_of(job: Job) -> JobSpec:
    return JobSpec.model_validate_json(json.dumps(job.get("jobspec")))


def notify(store: JobStore, topic: SnsTopic, job: Job, lease: float = NOTICE_LEASE_SECONDS) -> Job:
    """Send ``job``'s one notice: claim it (conditional write), publish, then record it.

    If this run dies between claim and publish, the claim expires after ``lease`` seconds
    and a later refresh sends the notice: a rare duplicate is preferred over a lost
    failure notice (FIFO topics de-duplicate even that).
    """
    logger = get_run_logger()
    claimed = store.claim_notice(job, uuid.uuid4().hex, lease)
    if claimed is None:
        logger.info("notice for %s (%s) is claimed by another run", job.job_id, job.status)
        return job
    message_id = publish_notice(topic, claimed)
    target = (
        S.SUCCESS_NOTIFICATION_SENT
        if claimed.status == S.NEPTUNE_LOAD_COMPLETED
        else S.ERROR_NOTIFICATION_SENT
    )
    now = utcnow()
    notice = {
        "subject": notice_subject(claimed.job_id, claimed.status),
        "message_id": message_id,
        "sent_at": now,
        "topic_arn": topic.topic_arn,
    }
    logger.info("sent %s notice for %s: %s", claimed.status, claimed.job_id, message_id)
    return store.transition(
        claimed, target, outcome=str(claimed.status), notice=notice, notice_sent_at=now
    )


def _fail(
    store: JobStore, topic: SnsTopic, job: Job, target: JobStatus, reason: str, **attrs: Any
) -> Job:
    """Record a failure with its reason and send the error notice; never raises for staleness."""
    get_run_logger().warning("job %s → %s: %s", job.job_id, target, reason)
    try:
        job = store.transition(job, target, reason=reason, completed_at=utcnow(), **attrs)
    except TransitionRefused as exc:
        get_run_logger().warning("%s", exc)
        return job
    return notify(store, topic, job)


def _summary(job: Job, **extra: Any) -> dict[str, Any]:
    return {"job_id": job.job_id, "status": str(job.status), "reason": job.get("reason"), **extra}


# -- schedule ------------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def read_jobspec(bucket: str, key: str, credentials: AwsCredentials | None) -> bytes:
    return aws_client("s3", credentials).get_object(Bucket=bucket, Key=key)["Body"].read()


@task(cache_policy=NO_CACHE)
def submit_kubernetes_job(
    spec: JobSpec,
    job_id: str,
    jobspec_uri: str,
    credentials: AwsCredentials | None,
    kubernetes: KubernetesCredentials | None,
) -> dict[str, str]:
    """List the dataset, build and validate the manifest, create the Job."""
    bucket, prefix = split_s3_uri(spec.dataset_location)
    s3 = aws_client("s3", credentials)
    names = [
        obj["Key"][len(prefix) :]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")
    ]
    queries = spec.queries if spec.queries is not None else [n for n in names if n.endswith(".rq")]
    texts = {
        q: s3.get_object(Bucket=bucket, Key=prefix + q)["Body"].read().decode("utf-8", "replace")
        for q in queries
        if q in names
    }
    missing = [q for q in [*queries, *(spec.rules or [])] if q not in names]
    if missing:
        raise FileNotFoundError(f"not in {spec.dataset_location}: {', '.join(missing)}")
    files = k8s_job.classify_files(names, texts, spec)
    if not files.data:
        raise FileNotFoundError(f"no data files in {spec.dataset_location}")
    manifest = k8s_job.build_manifest(spec, job_id, files, jobspec_uri)
    k8s_job.validate_manifest(manifest)
    name = k8s_job.create_job(manifest, kubernetes)
    return {"name": name, "namespace": spec.namespace}


@task(cache_policy=NO_CACHE)
def run_local_reasoning(
    spec: JobSpec, job_id: str, credentials: AwsCredentials | None
) -> dict[str, Any]:
    result = run_local_job(spec, job_id, credentials)
    return {"log_uri": result.log_uri, "outputs": result.outputs, "rounds": result.rounds}


@flow(name="schedule-reasoning-job", log_prints=True)
def schedule_reasoning_job(
    bucket: str,
    key: str,
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    aws_credentials: AwsCredentials | str | None = None,
    kubernetes_credentials: KubernetesCredentials | str | None = None,
    process_after_local_run: bool = False,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
) -> dict[str, Any]:
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
            'oxigraph-store/<name>' or 'neptune-cluster/<name>'.
    """
    logger = get_run_logger()
    store, topic = _store(jobs_table), resolve_block(notices, SnsTopic)
    credentials = _credentials(aws_credentials)
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
        job = _fail(store, topic, job, S.SCHEDULE_FAILED, problem or "invalid jobspec")
        return _summary(job)

    job = store.create(
        spec.dataset,
        jobspec_uri=uri,
        runner=spec.runner,
        jobspec=spec.model_dump(mode="json"),
    )
    job = store.update(job, output_prefix=spec.output_prefix(job.job_id))
    logger.info("job %s created from %s (runner %s)", job.job_id, uri, spec.runner)
    if spec.runner == "kubernetes":
        try:
            kubernetes = submit_kubernetes_job(
                spec, job.job_id, uri, credentials, _kubernetes(kubernetes_credentials)
            )
        except Exception as exc:
            reason = f"could not start the Kubernetes Job: {type(exc).__name__}: {exc}"
            return _summary(_fail(store, topic, job, S.SCHEDULE_FAILED, reason))
        job = store.transition(job, S.SCHEDULED, kubernetes=kubernetes, scheduled_at=utcnow())
        return _summary(job, kubernetes=kubernetes)

    job = store.transition(job, S.SCHEDULED, scheduled_at=utcnow())
    try:
        run = run_local_reasoning(spec, job.job_id, credentials)
    except LocalRunFailed as exc:
        job = _fail(store, topic, job, S.INFERENCE_FAILED, str(exc))
        # Uploaded only now that the job is failed, so its arrival cannot race the failure.
        log_uri = upload_log(spec, job.job_id, exc.log, credentials)
        job = store.update(job, log_uri=log_uri)
        return _summary(job)
    summary = _summary(job, **run)
    if process_after_local_run:
        log_bucket, log_key = split_s3_uri(run["log_uri"])
        return process_inference(
            log_bucket, log_key, jobs_table, notices, graph_store, aws_credentials
        )
    return summary


# -- process the log -----------------------------------------------------------------------------


def parse_log_key(key: str) -> tuple[str, str]:
    """``{dataset}/{job_id}/rdfox.log`` → (dataset, job_id); ValueError for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[2] != "rdfox.log" or not parts[0] or not parts[1]:
        raise ValueError(f"{key!r} is not a reasoner log key ({{dataset}}/{{job_id}}/rdfox.log)")
    split_job_id(parts[1], parts[0])
    return parts[0], parts[1]


@task(cache_policy=NO_CACHE)
def record_inference(
    store: JobStore,
    topic: SnsTopic,
    job: Job,
    bucket: str,
    key: str,
    credentials: AwsCredentials | None,
) -> Job:
    """Parse the log onto the job: INFERENCE_COMPLETE, or INFERENCE_FAILED with the reason."""
    uri = f"s3://{bucket}/{key}"
    s3 = aws_client("s3", credentials)
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        stats = parse_rdfox_log(text, uri)
    except LogParseError as exc:
        return _fail(store, topic, job, S.INFERENCE_FAILED, str(exc), log_uri=uri)
    data_prefix = key.rsplit("/", 1)[0] + "/data/"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=data_prefix, MaxKeys=1)
    if not listed.get("KeyCount"):
        reason = f"the reasoner published no output files under s3://{bucket}/{data_prefix}"
        return _fail(
            store, topic, job, S.INFERENCE_FAILED, reason, log_uri=uri, reasoner=stats.as_record()
        )
    return store.transition(
        job,
        S.INFERENCE_COMPLETE,
        reasoner=stats.as_record(),
        log_uri=uri,
        inference_completed_at=utcnow(),
    )


@task(cache_policy=NO_CACHE)
def start_bulk_load(store: JobStore, topic: SnsTopic, job: Job, graph_store: GraphStore) -> Job:
    """Start loading the job's ``data/`` prefix: NEPTUNE_LOAD_IN_PROGRESS with its load id."""
    spec = _spec_of(job)
    loader = open_loader(graph_store)
    role, region = loader.defaults()
    request = build_load_request(spec, spec.output_prefix(job.job_id) + "data/", role, region)
    load = {"store": loader.kind, "request": request.record()}
    wanted = spec.neptune_configuration.cluster_endpoint
    if wanted and (
        not isinstance(graph_store, NeptuneCluster)
        or wanted.rstrip("/").split("://")[-1] != graph_store.endpoint.split("://")[-1]
    ):
        reason = (
            f"the jobspec asks for cluster {wanted!r} but this deployment loads into "
            f"{getattr(graph_store, 'endpoint', None) or 'the local graph store'}"
        )
        return _fail(store, topic, job, S.NEPTUNE_LOAD_FAILED_INVALID_REQUEST, reason, load=load)
    try:
        load_id = loader.start(request)
    except LoadRefused as exc:
        return _fail(store, topic, job, S.for_loader(exc.status), str(exc), load=load)
    return store.transition(
        job, S.NEPTUNE_LOAD_IN_PROGRESS, load={**load, "load_id": load_id}, load_started_at=utcnow()
    )


@flow(name="process-inference", log_prints=True)
def process_inference(
    bucket: str,
    key: str,
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
    aws_credentials: AwsCredentials | str | None = None,
) -> dict[str, Any]:
    """Record a finished reasoner run from its log and start the bulk load of its output.

    Args:
        bucket: Output bucket where the log arrived.
        key: Key of the log: {dataset}/{job_id}/rdfox.log (already URL-decoded).
        jobs_table: DynamoDBTable block (name or instance) of the jobs table.
        notices: SnsTopic block (name or instance) for failure notices.
        graph_store: 'neptune-cluster/<name>' or 'oxigraph-store/<name>' (or an instance):
            where the output is bulk-loaded.
        aws_credentials: AwsCredentials block name for S3; empty for the default AWS chain.
    """
    logger = get_run_logger()
    dataset, job_id = parse_log_key(key)
    store, topic = _store(jobs_table), resolve_block(notices, SnsTopic)
    try:
        job = store.get_by_id(job_id, dataset)
    except JobNotFound as exc:
        raise JobNotFound(f"s3://{bucket}/{key} belongs to no recorded job: {exc}") from None
    try:
        if job.status == S.SCHEDULED:
            job = record_inference(store, topic, job, bucket, key, _credentials(aws_credentials))
        if job.status == S.INFERENCE_COMPLETE:
            job = start_bulk_load(store, topic, job, _graph_store(graph_store))
        else:
            logger.info("job %s is %s: nothing to start", job.job_id, job.status)
    except TransitionRefused as exc:
        # Another run (a duplicate S3 event) got there first; the record is intact.
        logger.warning("%s", exc)
        job = store.get(job.dataset, job.sort_key)
    return _summary(job, load_id=(job.get("load") or {}).get("load_id"))


# -- refresh -------------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
def check_kubernetes_jobs(
    store: JobStore, topic: SnsTopic, kubernetes: KubernetesCredentials | None
) -> list[dict[str, Any]]:
    """SCHEDULED Kubernetes jobs whose pods failed become INFERENCE_FAILED (no log will come)."""
    results = []
    for job in store.by_status(S.SCHEDULED):
        if job.get("runner") != "kubernetes" or not job.get("kubernetes"):
            continue
        where = job.get("kubernetes")
        try:
            outcome = k8s_job.job_outcome(where["name"], where["namespace"], kubernetes)
        except Exception as exc:  # the cluster being unreachable must not stop the refresh
            get_run_logger().error("cannot check Kubernetes Job of %s: %s", job.job_id, exc)
            continue
        if outcome.state == "failed":
            job = _fail(store, topic, job, S.INFERENCE_FAILED, outcome.reason)
            results.append(_summary(job))
    return results


@task(cache_policy=NO_CACHE)
def refresh_loads(store: JobStore, graph_store: GraphStore) -> dict[str, list[Any]]:
    """Ask the loader about every load in progress; store statuses, counters and verification.

    One job's failure (an unknown load id, an unreachable store) is reported and does not
    stop the others.
    """
    logger = get_run_logger()
    loader = open_loader(graph_store)
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    # Snapshot first: a job moving between in-progress states must be asked once per run.
    jobs = {j.job_id: j for s in sorted(LOAD_IN_PROGRESS_STATES) for j in store.by_status(s)}
    for job in jobs.values():
        try:
            summary = _refresh_one(store, loader, job)
        except TransitionRefused as exc:
            logger.info("%s", exc)
            continue
        except Exception as exc:
            problems.append(f"{job.job_id}: {type(exc).__name__}: {exc}")
            logger.error("could not refresh %s: %s", job.job_id, exc)
            continue
        if summary:
            results.append(summary)
    return {"refreshed": results, "problems": problems}


def _refresh_one(store: JobStore, loader: Any, job: Job) -> dict[str, Any] | None:
    load = dict(job.get("load") or {})
    if load.get("store") not in (None, loader.kind):
        raise ValueError(f"loaded by {load['store']}, but the graph store is {loader.kind}")
    status = loader.status(load["load_id"])
    target = S.for_loader(status.status)
    load.update(overall=status.overall, feed_count=status.feed_count, errors=status.errors)
    attrs: dict[str, Any] = {"load": load, "load_checked_at": utcnow()}
    if target in LOAD_TERMINAL_STATES:
        attrs["completed_at"] = utcnow()
    if target == S.NEPTUNE_LOAD_COMPLETED:
        try:
            attrs["verification"] = loader.verify(LoadRequest.from_record(load["request"]))
        except Exception as exc:  # a failed count must not hide a completed load
            attrs["verification"] = {"error": f"{type(exc).__name__}: {exc}"}
    reason = None
    if target in LOAD_TERMINAL_STATES and target != S.NEPTUNE_LOAD_COMPLETED:
        reason = f"bulk load {load['load_id']} ended {status.status}"
    job = store.transition(job, target, reason=reason, **attrs)
    return _summary(job, load_id=load["load_id"])


@task(cache_policy=NO_CACHE)
def send_pending_notices(store: JobStore, topic: SnsTopic, lease: float) -> list[dict[str, Any]]:
    """One notice for every job in a terminal state that has not had its notice yet."""
    sent = []
    for state in sorted(NOTICE_PENDING_STATES):
        for job in store.by_status(state):
            try:
                done = notify(store, topic, job, lease)
            except TransitionRefused as exc:
                get_run_logger().info("%s", exc)
                continue
            except Exception as exc:  # e.g. SNS down: the claim lapses and a later run retries
                get_run_logger().error("notice for %s not sent: %s", job.job_id, exc)
                continue
            if done.status != job.status:
                sent.append(_summary(done, outcome=job.status))
    return sent


@flow(name="refresh-bulk-loads", log_prints=True)
def refresh_bulk_loads(
    jobs_table: DynamoDBTable | str = DEFAULT_JOBS_TABLE,
    notices: SnsTopic | str = DEFAULT_NOTICES,
    graph_store: GraphStore | str = DEFAULT_GRAPH_STORE,
    kubernetes_credentials: KubernetesCredentials | str | None = None,
    notice_lease_seconds: float = NOTICE_LEASE_SECONDS,
) -> dict[str, Any]:
    """Poll loads in progress, record their outcome and send each finished job its notice.

    Args:
        jobs_table: DynamoDBTable block (name or instance) of the jobs table.
        notices: SnsTopic block (name or instance) that receives the notices.
        graph_store: 'neptune-cluster/<name>' or 'oxigraph-store/<name>' (or an instance):
            the loader asked for load statuses.
        kubernetes_credentials: KubernetesCredentials block name used to spot Kubernetes
            reasoning Jobs whose pods failed; empty for in-cluster or ~/.kube/config.
        notice_lease_seconds: How long a claimed, unsent notice stays reserved for the run
            that claimed it before another run may send it.
    """
    store, topic = _store(jobs_table), resolve_block(notices, SnsTopic)
    failed = check_kubernetes_jobs(store, topic, _kubernetes(kubernetes_credentials))
    loads = refresh_loads(store, _graph_store(graph_store))
    notified = send_pending_notices(store, topic, notice_lease_seconds)
    if loads["problems"]:
        # Everything else was refreshed and notified; the run still shows what went wrong.
        raise RuntimeError("could not refresh: " + "; ".join(loads["problems"]))
    return {"inference_failed": failed, "refreshed": loads["refreshed"], "notified": notified}


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs-table", default=DEFAULT_JOBS_TABLE, help="DynamoDBTable block name")
    parser.add_argument("--notices", default=DEFAULT_NOTICES, help="SnsTopic block name")
    parser.add_argument(
        "--graph-store", default=DEFAULT_GRAPH_STORE, help="slug/name of the store block"
    )
    parser.add_argument("--aws-credentials", default=None, help="AwsCredentials block name")
    parser.add_argument(
        "--kubernetes-credentials", default=None, help="KubernetesCredentials block name"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    schedule = sub.add_parser("schedule", help="schedule the job of s3://BUCKET/KEY")
    schedule.add_argument("uri", help="s3://bucket/key of a *.rdfoxjob.json")
    schedule.add_argument(
        "--process", action="store_true", help="process a local run's log at once"
    )
    process = sub.add_parser("process", help="process s3://BUCKET/{dataset}/{job_id}/rdfox.log")
    process.add_argument("uri")
    sub.add_parser("refresh", help="refresh bulk loads and send notices")
    example = sub.add_parser(
        "example", help="write the example dataset to a folder or s3:// prefix"
    )
    example.add_argument("dest")
    example.add_argument("--triples", type=int, default=10_000)
    example.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    common = {"jobs_table": args.jobs_table, "notices": args.notices}
    if args.command == "example":
        from tasks.reasoning.examples import write_example

        creds = _credentials(args.aws_credentials)
        data = write_example(args.dest, args.triples, args.seed, credentials=creds)
        print(f"wrote {data.triple_count} triples, rules and queries to {args.dest}")
        return 0
    if args.command == "schedule":
        bucket, key = split_s3_uri(args.uri)
        result = schedule_reasoning_job(
            bucket,
            key,
            **common,
            aws_credentials=args.aws_credentials,
            kubernetes_credentials=args.kubernetes_credentials,
            process_after_local_run=args.process,
            graph_store=args.graph_store,
        )
    elif args.command == "process":
        bucket, key = split_s3_uri(args.uri)
        result = process_inference(
            bucket,
            key,
            **common,
            graph_store=args.graph_store,
            aws_credentials=args.aws_credentials,
        )
    else:
        result = refresh_bulk_loads(
            **common,
            graph_store=args.graph_store,
            kubernetes_credentials=args.kubernetes_credentials,
        )
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
