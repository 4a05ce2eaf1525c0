"""The reasoning pipeline's steps, as plain functions the tasks and flows call.

Each step records what it did on the job in DynamoDB with a conditional write, and every
failure ends in exactly one SNS notice (``fail`` → ``notify``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from prefect_aws import AwsCredentials
from prefect_kubernetes.credentials import KubernetesCredentials

from blocks.dynamodb import DynamoDBTable
from blocks.neptune import NeptuneCluster
from blocks.oxigraph import OxigraphStore
from blocks.sns import SnsTopic
from infergraph.aws.clients import aws_client
from infergraph.aws.storage import split_s3_uri
from infergraph.blockref import resolve_block
from infergraph.logs import run_logger
from infergraph.reasoning.jobs import (
    LOAD_IN_PROGRESS_STATES,
    LOAD_TERMINAL_STATES,
    NOTICE_PENDING_STATES,
    Job,
    JobStatus,
    JobStore,
    TransitionRefused,
    split_job_id,
    utcnow,
)
from infergraph.reasoning.jobspec import JobSpec
from infergraph.reasoning.loaders import LoadRefused, LoadRequest, build_load_request, open_loader
from infergraph.reasoning.loaders.base import block_loader_defaults
from infergraph.reasoning.notices import notice_subject, publish_notice
from infergraph.reasoning.rdfox_log import LogParseError, parse_rdfox_log
from infergraph.reasoning.runners import kubernetes as k8s_job
from infergraph.reasoning.runners.local import run_local_job
from infergraph.reasoning.settings import log_name

S = JobStatus
DEFAULT_JOBS_TABLE = "reasoning-jobs"
DEFAULT_NOTICES = "reasoning-notices"
DEFAULT_GRAPH_STORE = "oxigraph-store/reasoning-graph"
NOTICE_LEASE_SECONDS = 900.0

GraphStore = NeptuneCluster | OxigraphStore


# -- resolving blocks ----------------------------------------------------------------------------


def open_job_store(jobs_table: DynamoDBTable | str) -> JobStore:
    return JobStore(resolve_block(jobs_table, DynamoDBTable))


def credentials_block(value: AwsCredentials | str | None) -> AwsCredentials | None:
    return None if value is None else resolve_block(value, AwsCredentials)


def kubernetes_block(value: KubernetesCredentials | str | None) -> KubernetesCredentials | None:
    return None if value is None else resolve_block(value, KubernetesCredentials)


def graph_store_block(value: GraphStore | str) -> GraphStore:
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


def spec_of(job: Job) -> JobSpec:
    return JobSpec.model_validate_json(json.dumps(job.get("jobspec")))


def notify(store: JobStore, topic: SnsTopic, job: Job, lease: float = NOTICE_LEASE_SECONDS) -> Job:
    """Send ``job``'s one notice: claim it (conditional write), publish, then record it.

    If this run dies between claim and publish, the claim expires after ``lease`` seconds
    and a later refresh sends the notice: a rare duplicate is preferred over a lost
    failure notice (FIFO topics de-duplicate even that).
    """
    logger = run_logger(__name__)
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


def fail(
    store: JobStore, topic: SnsTopic, job: Job, target: JobStatus, reason: str, **attrs: Any
) -> Job:
    """Record a failure with its reason and send the error notice; never raises for staleness."""
    run_logger(__name__).warning("job %s → %s: %s", job.job_id, target, reason)
    try:
        job = store.transition(job, target, reason=reason, completed_at=utcnow(), **attrs)
    except TransitionRefused as exc:
        run_logger(__name__).warning("%s", exc)
        return job
    return notify(store, topic, job)


def job_summary(job: Job, **extra: Any) -> dict[str, Any]:
    return {"job_id": job.job_id, "status": str(job.status), "reason": job.get("reason"), **extra}


# -- schedule ------------------------------------------------------------------------------------


def read_jobspec(bucket: str, key: str, credentials: AwsCredentials | None) -> bytes:
    return aws_client("s3", credentials).get_object(Bucket=bucket, Key=key)["Body"].read()


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
    k8s_job.check_rule_formats(names, spec)
    files = k8s_job.classify_files(names, texts, spec)
    if not files.data:
        raise FileNotFoundError(f"no data files in {spec.dataset_location}")
    manifest = k8s_job.build_manifest(spec, job_id, files, jobspec_uri)
    k8s_job.validate_manifest(manifest)
    name = k8s_job.create_job(manifest, kubernetes)
    return {"name": name, "namespace": spec.namespace}


def run_local_reasoning(
    spec: JobSpec, job_id: str, credentials: AwsCredentials | None
) -> dict[str, Any]:
    result = run_local_job(spec, job_id, credentials)
    return {"log_uri": result.log_uri, "outputs": result.outputs, "rounds": result.rounds}


# -- process the log -----------------------------------------------------------------------------


def parse_log_key(key: str) -> tuple[str, str]:
    """``{dataset}/{job_id}/rdfox.log`` → (dataset, job_id); ValueError for any other key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[2] != log_name() or not parts[0] or not parts[1]:
        raise ValueError(f"{key!r} is not a reasoner log key ({{dataset}}/{{job_id}}/{log_name()})")
    split_job_id(parts[1], parts[0])
    return parts[0], parts[1]


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
        return fail(store, topic, job, S.INFERENCE_FAILED, str(exc), log_uri=uri)
    data_prefix = key.rsplit("/", 1)[0] + "/data/"
    sizes = {
        obj["Key"]: obj["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=data_prefix)
        for obj in page.get("Contents", [])
    }
    record = stats.as_record()
    if not sizes:
        reason = f"the reasoner published no output files under s3://{bucket}/{data_prefix}"
        return fail(store, topic, job, S.INFERENCE_FAILED, reason, log_uri=uri, reasoner=record)
    exported = sum(stats.exported.values()) if stats.exported else None
    empty = exported == 0 if exported is not None else not any(sizes.values())
    warnings = result_warnings(stats, exported)
    attrs = {"reasoner": record, "log_uri": uri, "exported_triples": exported}
    if empty and not spec_of(job).accept_empty_results:
        reason = (
            f"the export is empty ({_export_counts(stats, len(sizes))})"
            + "".join(f"; {w}" for w in warnings)
            + ": set accept_empty_results in the jobspec if an empty result is expected"
        )
        return fail(store, topic, job, S.INFERENCE_FAILED, reason, **attrs)
    return store.transition(
        job,
        S.INFERENCE_COMPLETE,
        warnings=warnings or None,
        inference_completed_at=utcnow(),
        **attrs,
    )


def result_warnings(stats: Any, exported: int | None) -> list[str]:
    """What is suspicious in a reasoner run even when it is not a failure."""
    warnings = []
    edb, idb = stats.edb_facts, stats.idb_facts
    if edb is not None and idb is not None and idb <= edb:
        warnings.append(f"the rules derived nothing ({edb:,} facts before and after)")
    if exported == 0:
        warnings.append("every export query returned 0 triples")
    return warnings


def _export_counts(stats: Any, files: int) -> str:
    if not stats.exported:
        return f"{files} output file(s), all 0 bytes"
    return ", ".join(f"{name}: {n} triples" for name, n in sorted(stats.exported.items()))


def start_bulk_load(store: JobStore, topic: SnsTopic, job: Job, graph_store: GraphStore) -> Job:
    """Start loading the job's ``data/`` prefix: NEPTUNE_LOAD_IN_PROGRESS with its load id."""
    spec = spec_of(job)
    loader = open_loader(graph_store)
    role, region = loader.defaults()
    request = build_load_request(
        spec,
        spec.output_prefix(job.job_id) + "data/",
        role,
        region,
        block_loader_defaults(graph_store),
    )
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
        return fail(store, topic, job, S.NEPTUNE_LOAD_FAILED_INVALID_REQUEST, reason, load=load)
    try:
        load_id = loader.start(request)
    except LoadRefused as exc:
        return fail(store, topic, job, S.for_loader(exc.status), str(exc), load=load)
    return store.transition(
        job, S.NEPTUNE_LOAD_IN_PROGRESS, load={**load, "load_id": load_id}, load_started_at=utcnow()
    )


# -- refresh -------------------------------------------------------------------------------------


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
            run_logger(__name__).error("cannot check Kubernetes Job of %s: %s", job.job_id, exc)
            continue
        if outcome.state == "failed":
            job = fail(store, topic, job, S.INFERENCE_FAILED, outcome.reason)
            results.append(job_summary(job))
    return results


def refresh_loads(store: JobStore, graph_store: GraphStore) -> dict[str, list[Any]]:
    """Ask the loader about every load in progress; store statuses, counters and verification.

    One job's failure (an unknown load id, an unreachable store) is reported and does not
    stop the others.
    """
    logger = run_logger(__name__)
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
    exported = job.get("exported_triples")
    if target == S.NEPTUNE_LOAD_COMPLETED and exported and not status.overall.get("totalRecords"):
        # A "completed" load of nothing, from an export that had records, is not a success.
        target = S.NEPTUNE_LOAD_FAILED
        reason = (
            f"bulk load {load['load_id']} completed with 0 records loaded, "
            f"but the export had {exported:,} triples"
        )
    job = store.transition(job, target, reason=reason, **attrs)
    return job_summary(job, load_id=load["load_id"])


def send_pending_notices(store: JobStore, topic: SnsTopic, lease: float) -> list[dict[str, Any]]:
    """One notice for every job in a terminal state that has not had its notice yet."""
    sent = []
    for state in sorted(NOTICE_PENDING_STATES):
        for job in store.by_status(state):
            try:
                done = notify(store, topic, job, lease)
            except TransitionRefused as exc:
                run_logger(__name__).info("%s", exc)
                continue
            except Exception as exc:  # e.g. SNS down: the claim lapses and a later run retries
                run_logger(__name__).error("notice for %s not sent: %s", job.job_id, exc)
                continue
            if done.status != job.status:
                sent.append(job_summary(done, outcome=job.status))
    return sent
