"""A scenario run: validate, lock the scenario, interpret the definition, keep status.json.

Prefect-free: the flow passes hooks that turn each Task state into a Prefect task and
each Parallel/Map branch into a task on its runner; the defaults run them in-process,
which is what the interpreter tests and a plain-Python caller use.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infergraph.scenarios import asl
from infergraph.scenarios.auth import DEFAULT_HANDLERS, Handler, HandlerCall, lambda_result
from infergraph.scenarios.lock import acquire
from infergraph.scenarios.model import DEFAULT_TIMEOUT, Model, handler_key, load_model, task_payload
from infergraph.scenarios.step import BOOKKEEPING, StepFailed, run_step
from infergraph.scenarios.store import ScenarioStore, StoreError

SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STATUS = "status.json"


class ScenarioError(ValueError):
    """A run that cannot start: bad scenario, bad launcher_arg; says what to fix."""


class ScenarioFailed(RuntimeError):
    """The run started and failed; ``status`` is what status.json says."""

    def __init__(self, message: str, status: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class StatusBoard:
    """``<scenario>/status.json``, rewritten on every change so a front end can poll it."""

    def __init__(self, store: ScenarioStore, scenario: str, base: dict[str, Any]) -> None:
        self.store, self.key = store, f"{scenario}/{STATUS}"
        self.data: dict[str, Any] = {**base, "state": "RUNNING", "step": None, "steps": []}
        self.data.update(started=_now(), finished=None, error=None)
        self.lock = threading.Lock()
        self.write()

    def write(self) -> None:
        self.store.put(self.key, json.dumps(self.data, indent=2).encode())

    def step_started(self, name: str) -> dict[str, Any]:
        entry = {"state": name, "status": "RUNNING", "started": _now()}
        with self.lock:
            self.data["steps"].append(entry)
            self.data["step"] = name
            self.write()
        return entry

    def step_finished(self, entry: dict[str, Any], **fields: Any) -> None:
        with self.lock:
            entry.update(fields, finished=_now())
            self.write()

    def finish(self, state: str, error: str | None = None) -> dict[str, Any]:
        with self.lock:
            self.data.update(state=state, finished=_now(), error=error)
            self.write()
            return json.loads(json.dumps(self.data))


@dataclass
class RunContext:
    model: Model
    store: ScenarioStore
    scenario: str
    status: StatusBoard
    handlers: dict[str, Handler]
    authorize: bool
    run_metadata: dict[str, Any]
    default_timeout: float = DEFAULT_TIMEOUT
    outcomes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TaskCall:
    """One Task state to execute: what a Prefect task receives."""

    run: RunContext
    state_name: str
    state: dict[str, Any]
    params: Any
    execution_input: Any
    log_name: str


def execute_task(call: TaskCall) -> Any:
    """Run one Task state (a handler or a notebook/script step); StatesError on failure."""
    run = call.run
    entry = run.status.step_started(call.log_name)
    key = handler_key(call.state_name, call.state, run.handlers)
    started = time.monotonic()
    try:
        if key:
            handler_call = HandlerCall(
                call.state_name, call.params, call.execution_input, run.model.root,
                run.scenario, run.authorize,
            )  # fmt: skip
            result = run.handlers[key](handler_call)
            run.status.step_finished(entry, status="SUCCEEDED", seconds=time.monotonic() - started)
            return result
        payload = task_payload(call.params)
        launcher_arg = parse_launcher_arg(payload.get("launcher_arg", {}))
        metadata = payload.get("metadata") or {}
        timeout = float(call.state.get("TimeoutSeconds") or run.default_timeout)
        outcome = run_step(
            model_root=run.model.root,
            store=run.store,
            scenario=run.scenario,
            state=call.state_name,
            step=payload["notebook_path"],
            launcher_arg=launcher_arg,
            metadata={**(metadata if isinstance(metadata, dict) else {}), **run.run_metadata},
            timeout=timeout,
            log_name=call.log_name,
        )
    except StepFailed as exc:
        run.outcomes.append(exc.outcome.as_dict())
        fields = {"status": "FAILED", "seconds": exc.outcome.seconds, "log": exc.outcome.log}
        run.status.step_finished(entry, error=str(exc), **fields)
        raise asl.StatesError(exc.error_name, str(exc), call.state_name) from None
    except (asl.StatesError, ScenarioError) as exc:
        run.status.step_finished(
            entry, status="FAILED", error=str(exc), seconds=time.monotonic() - started
        )
        if isinstance(exc, asl.StatesError):
            raise
        raise asl.StatesError("States.TaskFailed", str(exc), call.state_name) from None
    run.outcomes.append(outcome.as_dict())
    run.status.step_finished(
        entry, status="SUCCEEDED", seconds=outcome.seconds, log=outcome.log, outputs=outcome.outputs
    )
    # The reference step returned its input: the next state reuses it.
    resource = str(call.state.get("Resource", ""))
    return lambda_result(payload) if "lambda:invoke" in resource else payload


StepRunner = Callable[[TaskCall], Any]


def parse_launcher_arg(value: Any) -> Any:
    """launcher_arg as given (a dict) or as JSON text; ScenarioError naming the position."""
    if not isinstance(value, str):
        return value if value is not None else {}
    if not value.strip():
        return {}
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"launcher_arg is not JSON: {exc} in {value[:80]!r}") from None


def check_scenario(store: ScenarioStore, scenario: str) -> None:
    if not SCENARIO_NAME.match(scenario or ""):
        raise ScenarioError(
            f"scenario name {scenario!r}: use letters, digits, '.', '_' and '-' (no '/')"
        )
    if not [k for k in store.keys(f"{scenario}/") if not BOOKKEEPING.match(k.split("/", 1)[1])]:
        raise ScenarioError(
            f"scenario {scenario!r} does not exist in {store.uri}: upload it first "
            "(python flows/scenarios.py upload MODEL --store ...)"
        )


def run_scenario(
    model: str | Path | Model,
    store: ScenarioStore,
    scenario: str,
    launcher_arg: Any = None,
    *,
    metadata: dict[str, Any] | None = None,
    caller: str | None = None,
    authorize: bool = True,
    queue: bool = False,
    flow_run_id: str | None = None,
    flow_run_name: str | None = None,
    flow_run_url: str | None = None,
    step_runner: StepRunner = execute_task,
    run_branches: asl.BranchHook = asl.thread_branches,
    handlers: dict[str, Handler] | None = None,
    extra_input: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    default_timeout: float = DEFAULT_TIMEOUT,
) -> dict[str, Any]:
    """Run ``scenario`` through the model's definition; the final status.json content.

    Raises DefinitionError/ModelError/ScenarioError before anything runs, ScenarioBusy
    if the scenario is locked, ScenarioFailed (status.json marked FAILED) if a state fails.
    """
    handlers = {**DEFAULT_HANDLERS, **(handlers or {})}
    launcher_arg = parse_launcher_arg(launcher_arg)
    loaded = model if isinstance(model, Model) else load_model(model, handlers)
    check_scenario(store, scenario)
    metadata = {**(metadata or {}), **({"user_email": caller} if caller else {})}
    execution_input = {
        "scenario_path_S3": f"{scenario}/",
        "scenario": scenario,
        "model": loaded.name,
        "launcher_arg": launcher_arg,
        "metadata": metadata,
        "authorization": caller,
        "choice": None,
        **(extra_input or {}),
    }
    with acquire(store, scenario, flow_run_id, flow_run_name, queue=queue):
        base = {
            "model": loaded.name,
            "scenario": scenario,
            "flow_run_id": flow_run_id,
            "flow_run_name": flow_run_name,
            "flow_run_url": flow_run_url,
            "logs": store.location(f"{scenario}/logs/"),
        }
        status = StatusBoard(store, scenario, base)
        run = RunContext(
            loaded, store, scenario, status, handlers, authorize,
            {"flow_run_id": flow_run_id, "model": loaded.name}, default_timeout,
        )  # fmt: skip

        def task_hook(name: str, state: dict[str, Any], params: Any, ctx: dict[str, Any]) -> Any:
            item = ctx.get("Map", {}).get("Item")
            log_name = f"{name}-{item['Index']}" if item else name
            call = TaskCall(run, name, state, params, ctx["Execution"]["Input"], log_name)
            return step_runner(call)

        interpreter = asl.Interpreter(loaded.definition, task_hook, run_branches, sleep)
        try:
            interpreter.run(execution_input, execution_id=flow_run_id or "local")
        except asl.StatesError as exc:
            final = status.finish("FAILED", str(exc))
            final["outcomes"] = run.outcomes
            raise ScenarioFailed(f"scenario {scenario!r} failed: {exc}", final) from None
        except Exception as exc:
            final = status.finish("FAILED", f"{type(exc).__name__}: {exc}")
            raise
        final = status.finish("COMPLETED")
        final["outcomes"] = run.outcomes
        final["retries"] = interpreter.trace.retries
        return final


def read_request(store: ScenarioStore, key: str) -> dict[str, Any]:
    """A ``<scenario>/run.json`` request: scenario from its key, the rest from its content."""
    scenario = key.rsplit("/", 1)[0] if "/" in key else ""
    try:
        request = json.loads(store.get(key) or b"{}")
    except StoreError:
        raise
    except ValueError as exc:
        raise ScenarioError(f"{store.location(key)} is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ScenarioError(f"{store.location(key)} must hold a JSON object")
    return {
        "scenario": request.get("scenario", scenario),
        "launcher_arg": request.get("launcher_arg", {}),
        "metadata": request.get("metadata") or {},
        "caller": request.get("caller") or (request.get("metadata") or {}).get("user_email"),
    }
