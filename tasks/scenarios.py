"""Prefect tasks of scenario runs: one task per Task state, one per Parallel/Map branch."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from infergraph.scenarios.run import TaskCall, execute_task


@task(cache_policy=NO_CACHE)
def scenario_step(call: TaskCall) -> Any:
    """One state of the model: a notebook/script step or a handler such as Authorization.
    ASL Retry decides retries (each attempt is its own task run), not Prefect."""
    return execute_task(call)


@task(cache_policy=NO_CACHE)
def scenario_branch(thunk: Callable[[], Any], limit: threading.Semaphore | None = None) -> Any:
    """One Parallel branch or Map item: its steps run as nested tasks."""
    if limit is None:
        return thunk()
    with limit:
        return thunk()


def run_state(call: TaskCall) -> Any:
    """The interpreter's Task hook: a task run named after the state."""
    return scenario_step.with_options(name=call.log_name)(call)


def run_branches(label: str, thunks: list[Callable[[], Any]], max_concurrency: int) -> list[Any]:
    """The interpreter's branch hook: branches on the flow's task runner, results in order."""
    limit = threading.Semaphore(max_concurrency) if max_concurrency > 0 else None
    futures = [
        scenario_branch.with_options(name=f"{label} [{i}]").submit(thunk, limit)
        for i, thunk in enumerate(thunks)
    ]
    return [future.result() for future in futures]
