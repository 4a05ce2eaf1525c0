"""The reasoning flows' Prefect tasks: each a step of ``infergraph.reasoning.steps``.

``NO_CACHE``: every step reads or changes live state (S3, DynamoDB, the cluster), so a
rerun must redo it, never replay a stored result.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from infergraph.reasoning import control, steps

read_jobspec = task(steps.read_jobspec, name="read-jobspec", cache_policy=NO_CACHE)
submit_kubernetes_job = task(
    steps.submit_kubernetes_job, name="submit-kubernetes-job", cache_policy=NO_CACHE
)
run_local_reasoning = task(
    steps.run_local_reasoning, name="run-local-reasoning", cache_policy=NO_CACHE
)
record_inference = task(steps.record_inference, name="record-inference", cache_policy=NO_CACHE)
start_bulk_load = task(steps.start_bulk_load, name="start-bulk-load", cache_policy=NO_CACHE)
check_kubernetes_jobs = task(
    steps.check_kubernetes_jobs, name="check-kubernetes-jobs", cache_policy=NO_CACHE
)
refresh_loads = task(steps.refresh_loads, name="refresh-loads", cache_policy=NO_CACHE)
send_pending_notices = task(
    steps.send_pending_notices, name="send-pending-notices", cache_policy=NO_CACHE
)
enforce_timeouts = task(control.enforce_timeouts, name="enforce-timeouts", cache_policy=NO_CACHE)
check_missing_logs = task(
    control.check_missing_logs, name="check-missing-logs", cache_policy=NO_CACHE
)
cancel_job = task(control.cancel_job, name="cancel-job", cache_policy=NO_CACHE)
