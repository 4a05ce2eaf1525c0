"""Where the inference flow runs its infer tasks: the flow's threads or a Dask cluster.

A Prefect flow's task runner is fixed when the flow is decorated, and the
inference flow's writes, acknowledgements and group tracking must stay in the
flow process anyway (sinks hold open files and clients; a queue message is
acknowledged by the process that received it). So only the compute — fetch,
decode and predict, one task per batch — moves: :class:`BatchPipeline` submits
``infer_batch`` to the runner made here, and everything else keeps using the
flow's own thread pool. Records are references (URIs), and the predictor
travels as a spec that each Dask worker process loads once
(``infergraph.predictors.loading.get_predictor``), so neither pixels nor weights cross the
wire.

Choices (the ``task_runner`` flow parameter):

* ``threads`` — the flow's thread pool (the default).
* ``dask`` — a temporary local Dask cluster, started for the run and torn down
  after it; ``dask?workers=4&threads=1&memory=4GiB`` sizes it (default: one
  single-threaded worker process per core; Dask sets ``OMP_NUM_THREADS=1`` in
  its workers, so torch does not oversubscribe the cores).
* ``dask://host:port`` or ``tcp://host:port`` (``tls://`` too) — an existing
  Dask scheduler whose workers have this project installed (the same image).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

THREADS = "threads"
DEFAULT_SCHEDULER_PORT = 8786
#: ``dask?...`` options and the LocalCluster keyword each one sets.
LOCAL_CLUSTER_OPTIONS = {
    "workers": "n_workers",
    "threads": "threads_per_worker",
    "memory": "memory_limit",
}


class TaskRunnerChoiceError(ValueError):
    """The task_runner value names no runner this flow can use."""


def infer_task_runner(choice: str) -> TaskRunner | None:
    """The runner for infer tasks named by ``choice``; ``None`` means the flow's own threads.

    The runner is not started: :func:`started` does that, so a bad value fails
    when the flow begins, before any data is read.
    """
    text = (choice or THREADS).strip()
    if text == THREADS:
        return None
    parts = urlsplit(text)
    if parts.scheme == "" and parts.path == "dask":
        return _dask_runner(cluster_kwargs=_local_cluster_kwargs(text, parts.query))
    if parts.scheme in ("dask", "tcp", "tls"):
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise TaskRunnerChoiceError(
                f"task_runner {choice!r}: a scheduler address is scheme://host:port, "
                "e.g. tcp://10.0.0.5:8786"
            )
        try:
            port = parts.port or DEFAULT_SCHEDULER_PORT
        except ValueError as exc:
            raise TaskRunnerChoiceError(f"task_runner {choice!r}: {exc}") from exc
        scheme = "tcp" if parts.scheme == "dask" else parts.scheme
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        runner = _dask_runner(address=f"{scheme}://{host}:{port}")
        if not _configured_api_url():
            # A temporary server lives on this machine's loopback, out of the workers' reach.
            raise TaskRunnerChoiceError(
                f"task_runner {choice!r}: the workers of an existing Dask cluster report task "
                "runs to the Prefect API: set PREFECT_API_URL to a server they can reach"
            )
        return runner
    raise TaskRunnerChoiceError(
        f"task_runner {choice!r} is not one of: 'threads', 'dask' (a temporary local "
        "cluster; 'dask?workers=N&threads=M&memory=4GiB' sizes it), "
        "'dask://host:port' or 'tcp://host:port' (an existing scheduler)"
    )


@contextlib.contextmanager
def started(runner: TaskRunner | None) -> Iterator[TaskRunner | None]:
    """Start ``runner`` (connecting to its cluster now, not at the first batch) and stop it."""
    if runner is None:
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    updates = {}
    if not _configured_api_url():
        # The flow talks to a temporary server; without its address every worker
        # process would start a temporary server of its own and record the runs there.
        updates[PREFECT_API_URL] = _current_api_url()
    with temporary_settings(updates=updates), runner:
        client = getattr(runner, "client", None)  # DaskTaskRunner connects lazily
        if client is not None:
            threads = sum(client.nthreads().values())
            print(f"infer tasks run on Dask at {client.scheduler.address} ({threads} threads)")
        yield runner


def _configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _current_api_url() -> str | None:
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return str(context.client.api_url) if context and context.client else None


def _local_cluster_kwargs(choice: str, query: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "n_workers": _cpu_count(),
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,  # the dashboard needs bokeh, which is not a dependency
    }
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in LOCAL_CLUSTER_OPTIONS:
            known = ", ".join(LOCAL_CLUSTER_OPTIONS)
            raise TaskRunnerChoiceError(
                f"task_runner {choice!r}: unknown option {key!r} (known: {known})"
            )
        if key == "memory":
            if not value:
                raise TaskRunnerChoiceError(
                    f"task_runner {choice!r}: memory needs a size, e.g. 4GiB"
                )
            kwargs["memory_limit"] = value
            continue
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise TaskRunnerChoiceError(
                f"task_runner {choice!r}: {key} must be a whole number of at least 1, got {value!r}"
            )
        kwargs[LOCAL_CLUSTER_OPTIONS[key]] = number
    return kwargs


def _cpu_count() -> int:
    """Cores this process may use; Dask's count also honours a container's CPU quota."""
    try:
        from dask.system import CPU_COUNT
    except ImportError:
        return os.cpu_count() or 1
    return CPU_COUNT


def _dask_runner(**kwargs: Any) -> TaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise TaskRunnerChoiceError(
            "a Dask task runner needs prefect-dask: pip install 'infergraph[dask]'"
        ) from exc
    return DaskTaskRunner(**kwargs)
