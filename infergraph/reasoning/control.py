"""Limits and control over running jobs: timeouts, cancel, and runs that never reported.

A reasoning run or a bulk load can hang without ever failing; these steps turn "still
running after its limit" into a failure with a reason and one notice, and let people
cancel a job wherever it is (the Kubernetes Job is deleted, the load is cancelled).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta
from typing import Any

from prefect_aws import AwsCredentials
from prefect_kubernetes.credentials import KubernetesCredentials

from blocks.sns import SnsTopic
from infergraph.aws.clients import aws_client
from infergraph.aws.storage import split_s3_uri
from infergraph.logs import run_logger
from infergraph.reasoning.jobs import (
    FINAL_STATES,
    LOAD_IN_PROGRESS_STATES,
    NOTICE_PENDING_STATES,
    Job,
    JobStatus,
    JobStore,
    TransitionRefused,
    utcnow,
)
from infergraph.reasoning.loaders import open_loader
from infergraph.reasoning.runners import kubernetes as k8s_job
from infergraph.reasoning.settings import log_name
from infergraph.reasoning.steps import GraphStore, fail, job_summary, spec_of

S = JobStatus
CANCELLED = "cancelled by user"


class CancelRefused(RuntimeError):
    """The job has already finished: nothing was changed."""


def _since(job: Job, attribute: str, status: JobStatus) -> datetime | None:
    """When ``job`` entered ``status``: the named attribute, else its history."""
    stamp = job.get(attribute) or next(
        (h["at"] for h in reversed(job.get("history") or []) if h.get("status") == status), None
    )
    return datetime.fromisoformat(stamp) if stamp else None


def _overdue(job: Job, attribute: str, status: JobStatus, minutes: float) -> bool:
    since = _since(job, attribute, status)
    return since is not None and datetime.fromisoformat(utcnow()) > since + timedelta(
        minutes=minutes
    )


def enforce_timeouts(
    store: JobStore,
    topic: SnsTopic,
    graph_store: GraphStore,
    kubernetes: KubernetesCredentials | None,
) -> list[dict[str, Any]]:
    """Fail SCHEDULED jobs past their inference timeout and cancel loads past their load
    timeout (jobspec limit, else the graph store block's); each is notified once."""
    logger = run_logger(__name__)
    results = []
    for job in list(store.by_status(S.SCHEDULED)):
        limit = spec_of(job).inference_timeout_minutes or graph_store.inference_timeout_minutes
        if not _overdue(job, "scheduled_at", S.SCHEDULED, limit):
            continue
        stopped = _stop_kubernetes(job, kubernetes)
        reason = f"inference timeout: still SCHEDULED after {limit:g} min{stopped}"
        results.append(job_summary(fail(store, topic, job, S.INFERENCE_FAILED, reason)))
    loader = open_loader(graph_store)
    for state in sorted(LOAD_IN_PROGRESS_STATES):
        for job in list(store.by_status(state)):
            limit = spec_of(job).load_timeout_minutes or graph_store.load_timeout_minutes
            if not _overdue(job, "load_started_at", S.NEPTUNE_LOAD_IN_PROGRESS, limit):
                continue
            load_id = (job.get("load") or {}).get("load_id")
            try:
                loader.cancel(load_id)
                cancelled = f"; load {load_id} cancelled"
            except Exception as exc:  # the job still fails: a hung load must not stay silent
                logger.error("could not cancel load %s of %s: %s", load_id, job.job_id, exc)
                cancelled = f"; cancelling load {load_id} failed: {exc}"
            reason = f"load timeout: load in progress after {limit:g} min{cancelled}"
            target = S.NEPTUNE_LOAD_CANCELLED_BY_USER
            results.append(job_summary(fail(store, topic, job, target, reason)))
    return results


def check_missing_logs(
    store: JobStore,
    topic: SnsTopic,
    graph_store: GraphStore,
    kubernetes: KubernetesCredentials | None,
    credentials: AwsCredentials | None,
) -> list[dict[str, Any]]:
    """Kubernetes jobs whose Job succeeded but whose log never arrived become INFERENCE_FAILED
    once ``log_grace_minutes`` have passed since the success was first seen."""
    results = []
    for job in list(store.by_status(S.SCHEDULED)):
        where = job.get("kubernetes")
        if job.get("runner") != "kubernetes" or not where:
            continue
        try:
            outcome = k8s_job.job_outcome(where["name"], where["namespace"], kubernetes)
        except Exception as exc:  # an unreachable cluster must not stop the refresh
            run_logger(__name__).error("cannot check Kubernetes Job of %s: %s", job.job_id, exc)
            continue
        if outcome.state != "succeeded":
            continue
        try:
            # The graph store's credentials read the output bucket for loads, so logs too.
            if _has_log(job, credentials or graph_store.credentials):
                continue
        except Exception as exc:
            run_logger(__name__).error("cannot look for the log of %s: %s", job.job_id, exc)
            continue
        if not job.get("kubernetes_succeeded_at"):
            with contextlib.suppress(TransitionRefused):  # someone else moved it: fine
                store.update(job, kubernetes_succeeded_at=utcnow())
            continue
        grace = graph_store.log_grace_minutes
        if _overdue(job, "kubernetes_succeeded_at", S.SCHEDULED, grace):
            reason = (
                f"the Kubernetes Job {where['namespace']}/{where['name']} succeeded but no "
                f"{log_name()} was published within {grace:g} min: the publisher did not run "
                "or could not write to the output bucket"
            )
            results.append(job_summary(fail(store, topic, job, S.INFERENCE_FAILED, reason)))
    return results


def _has_log(job: Job, credentials: AwsCredentials | None) -> bool:
    bucket, key = split_s3_uri(spec_of(job).output_prefix(job.job_id) + log_name())
    listed = aws_client("s3", credentials).list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return bool(listed.get("KeyCount"))


def cancel_job(
    store: JobStore,
    topic: SnsTopic,
    job: Job,
    graph_store: GraphStore | None,
    kubernetes: KubernetesCredentials | None,
) -> Job:
    """Stop ``job`` wherever it is and send its one notice; :class:`CancelRefused` if done.

    ``graph_store`` is needed only for a job whose load is in progress."""
    if job.status in FINAL_STATES or job.status in NOTICE_PENDING_STATES:
        raise CancelRefused(
            f"job {job.job_id} has already finished ({job.status}): nothing to cancel"
        )
    if job.status == S.CREATED:
        return fail(store, topic, job, S.SCHEDULE_FAILED, CANCELLED)
    if job.status == S.SCHEDULED:
        stopped = _stop_kubernetes(job, kubernetes)
        return fail(store, topic, job, S.INFERENCE_FAILED, CANCELLED + stopped)
    load_id = (job.get("load") or {}).get("load_id")
    if job.status in LOAD_IN_PROGRESS_STATES and load_id:
        if graph_store is None:
            raise ValueError(f"job {job.job_id} is loading: its graph store is needed to cancel")
        open_loader(graph_store).cancel(load_id)
        reason = f"{CANCELLED}; load {load_id} cancelled"
    else:
        reason = f"{CANCELLED} before the load started"
    return fail(store, topic, job, S.NEPTUNE_LOAD_CANCELLED_BY_USER, reason)


def _stop_kubernetes(job: Job, kubernetes: KubernetesCredentials | None) -> str:
    where = job.get("kubernetes")
    if job.get("runner") != "kubernetes" or not where:
        return ""
    try:
        deleted = k8s_job.delete_job(where["name"], where["namespace"], kubernetes)
    except Exception as exc:
        return f"; deleting Kubernetes Job {where['namespace']}/{where['name']} failed: {exc}"
    return f"; Kubernetes Job {where['namespace']}/{where['name']} " + (
        "deleted" if deleted else "was already gone"
    )
