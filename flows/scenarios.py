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
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner

from infergraph.scenarios import cli
from infergraph.scenarios.run import read_request
from infergraph.scenarios.run import run_scenario as run_definition
from infergraph.scenarios.store import open_store
from tasks.scenarios import run_branches, run_state

EXAMPLE_MODEL = str(Path(cli.__file__).parent / "example_model")


def _run_name() -> str:
    """``<model> · <scenario>``, the scenario of a run.json request read from its key."""
    params = flow_run.parameters
    key = params.get("request_key") or ""
    scenario = key.rsplit("/", 1)[0] if "/" in key else params.get("scenario", "base")
    return f"{Path(params.get('model') or EXAMPLE_MODEL).name} · {scenario}"


@flow(
    name="run-scenario",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=16),
    log_prints=True,
)
def run_scenario(
    model: str = "",
    scenario: str = "base",
    launcher_arg: dict[str, Any] | str | None = None,
    store: str = "s3://transport-model",
    aws_credentials: str | None = "infergraph-aws",
    caller: str | None = None,
    authorize: bool = True,
    queue: bool = False,
    request_key: str | None = None,
) -> State[dict[str, Any]]:
    """Run ``scenario`` of the model folder ``model`` against ``store``.

    Args:
        model: The model folder (`step-functions.json` or `steps.yaml` inside). Empty: the
            example model shipped with the code, wherever it runs.
        scenario: The scenario to run (a folder of the store).
        launcher_arg: JSON given to every step (`python step.py '<launcher_arg>'`).
        store: `s3://bucket[/prefix]` or a local folder.
        aws_credentials: AwsCredentials block name for an `s3://` store.
        caller: Who asks (checked by the Authorization state unless authorize is off).
        authorize: Check the caller before the first step.
        queue: Wait for a running run of the same scenario instead of being refused.
        request_key: A `<scenario>/run.json` upload that asked for this run (from the
            trigger): scenario, launcher_arg and caller are read from it.
    """
    target = open_store(store, aws_credentials if store.startswith("s3://") else None)
    request: dict[str, Any] = {}
    if request_key:
        request = read_request(target, request_key)
    final = run_definition(
        model or EXAMPLE_MODEL,
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
    steps = len(final.get("outcomes") or [])
    message = f"Completed: scenario {final.get('scenario')} of {final.get('model')}, {steps} steps"
    return Completed(message=message, data=final)


if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:], run_scenario))
