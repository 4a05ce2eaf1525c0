"""Scenario runs: a model folder's steps, chained by its step-functions.json (or
steps.yaml), run on one scenario of a store (S3 or a local folder).

    validate the definition ─ lock the scenario ─ Authorization ─ step ─ … ─ status.json
                                                  (one Prefect task per state; Parallel
                                                   and Map branches on the task runner)

Zero-setup demo: ``python flows/scenarios.py demo``; other commands: ``--help``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python flows/scenarios.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from infergraph.scenarios import cli
from infergraph.scenarios.run import read_request
from infergraph.scenarios.run import run_scenario as run_definition
from infergraph.scenarios.store import open_store
from tasks.scenarios import run_branches, run_state

EXAMPLE_MODEL = str(Path(cli.__file__).parent / "example_model")


@flow(name="run-scenario", task_runner=ThreadPoolTaskRunner(max_workers=16), log_prints=True)
def run_scenario(
    model: str = EXAMPLE_MODEL,
    scenario: str = "base",
    launcher_arg: dict[str, Any] | str | None = None,
    store: str = "s3://transport-model",
    aws_credentials: str | None = "infergraph-aws",
    caller: str | None = None,
    authorize: bool = True,
    queue: bool = False,
    request_key: str | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` of the model folder ``model`` against ``store``.

    model: the model folder (step-functions.json or steps.yaml inside).
    launcher_arg: JSON given to every step (``python step.py '<launcher_arg>'``).
    store: ``s3://bucket[/prefix]`` or a local folder.
    caller: who asks (checked by the Authorization state unless authorize is off).
    queue: wait for a running run of the same scenario instead of being refused.
    request_key: a ``<scenario>/run.json`` upload that asked for this run (from the
        trigger): scenario, launcher_arg and caller are read from it.
    """
    target = open_store(store, aws_credentials if store.startswith("s3://") else None)
    request: dict[str, Any] = {}
    if request_key:
        request = read_request(target, request_key)
    return run_definition(
        model,
        target,
        request.get("scenario", scenario),
        request.get("launcher_arg", launcher_arg),
        metadata=request.get("metadata"),
        caller=request.get("caller", caller),
        authorize=authorize,
        queue=queue,
        flow_run_id=flow_run.id,
        flow_run_name=flow_run.name,
        flow_run_url=flow_run.ui_url,
        step_runner=run_state,
        run_branches=run_branches,
    )


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], run_scenario))
