"""Amazon States Language: validation of a whole definition and an interpreter for it.

The interpreter knows nothing about notebooks, stores or Prefect: Task states call the
``run_task`` hook and Parallel/Map branches go through the ``run_branches`` hook, so the
same code runs under a Prefect flow (tasks on its task runner) and as plain Python in
tests. Semantics follow the AWS documentation for the JSONPath query language: the
input/output processing order is InputPath → Parameters → task → ResultSelector →
ResultPath → OutputPath.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infergraph.scenarios.asl_paths import (
    COMPARISONS,
    TESTS,
    DefinitionError,
    StatesError,
    put,
    resolve_parameters,
    select,
)
from infergraph.scenarios.asl_validate import validate  # noqa: F401  (re-exported)

#: run_task(state_name, state, effective_input, context) -> task result
TaskHook = Callable[[str, dict[str, Any], Any, dict[str, Any]], Any]
#: run_branches(label, thunks, max_concurrency) -> results in order
BranchHook = Callable[[str, list[Callable[[], Any]], int], list[Any]]


def thread_branches(label: str, thunks: list[Callable[[], Any]], max_concurrency: int) -> list[Any]:
    """Run branches on threads (each in a copy of the caller's context); results in order."""
    workers = max_concurrency if max_concurrency > 0 else max(len(thunks), 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=label[:20]) as pool:
        futures = [pool.submit(copy_context().run, thunk) for thunk in thunks]
        return [f.result() for f in futures]


@dataclass
class Trace:
    """What happened, for callers and tests: states entered, retries and their delays."""

    entered: list[str] = field(default_factory=list)
    retries: list[tuple[str, int, float]] = field(default_factory=list)  # (state, attempt, delay)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def enter(self, name: str) -> None:
        with self.lock:
            self.entered.append(name)

    def retry(self, name: str, attempt: int, delay: float) -> None:
        with self.lock:
            self.retries.append((name, attempt, delay))


@dataclass
class Interpreter:
    """Runs a validated definition. Hooks decide how Tasks and branches execute."""

    definition: dict[str, Any]
    run_task: TaskHook
    run_branches: BranchHook = thread_branches
    sleep: Callable[[float], None] = time.sleep
    on_state: Callable[[str, str], None] | None = None  # (state, "enter")
    trace: Trace = field(default_factory=Trace)
    max_transitions: int = 10_000

    def run(self, data: Any, execution_id: str = "local") -> Any:
        context = {
            "Execution": {"Id": execution_id, "Input": data, "StartTime": _now()},
            "StateMachine": {"Id": execution_id},
        }
        return self._run_machine(self.definition, data, context)

    def _run_machine(self, machine: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        name = machine["StartAt"]
        for _ in range(self.max_transitions):
            state = machine["States"][name]
            self.trace.enter(name)
            if self.on_state:
                self.on_state(name, state["Type"])
            ctx = {**context, "State": {"Name": name, "EnteredTime": _now()}}
            data, nxt = self._run_state(name, state, data, ctx)
            if nxt is None:
                return data
            name = nxt
        raise StatesError("States.Runtime", f"more than {self.max_transitions} transitions")

    def _run_state(
        self, name: str, state: dict[str, Any], raw: Any, ctx: dict[str, Any]
    ) -> tuple[Any, str | None]:
        kind = state["Type"]
        if kind == "Fail":
            error = state.get("Error", "States.Fail")
            cause = state.get("Cause", "")
            if "ErrorPath" in state:
                error = select(state["ErrorPath"], raw, ctx)
            if "CausePath" in state:
                cause = select(state["CausePath"], raw, ctx)
            raise StatesError(error, cause, name)
        data = self._path(state, "InputPath", raw, ctx, name)
        if kind == "Succeed":
            return self._path(state, "OutputPath", data, ctx, name), None
        if kind == "Choice":
            nxt = self._choose(name, state, data, ctx)
            return self._path(state, "OutputPath", data, ctx, name), nxt
        if kind == "Wait":
            self.sleep(self._wait_seconds(state, data, ctx, name))
            return self._path(state, "OutputPath", data, ctx, name), self._next(state)
        try:
            result = self._attempts(name, state, data, ctx)
        except StatesError as exc:
            catcher = _matching(state.get("Catch") or [], exc.error)
            if catcher is None:
                raise
            output = put(
                catcher.get("ResultPath", "$"), raw, {"Error": exc.error, "Cause": exc.cause}
            )
            return output, catcher["Next"]
        if "ResultSelector" in state:
            result = resolve_parameters(state["ResultSelector"], result, ctx)
        output = put(state.get("ResultPath", "$"), raw, result)
        return self._path(state, "OutputPath", output, ctx, name), self._next(state)

    def _attempts(self, name: str, state: dict[str, Any], data: Any, ctx: dict[str, Any]) -> Any:
        counts: dict[int, int] = {}
        while True:
            try:
                return self._execute(name, state, data, ctx)
            except StatesError as exc:
                exc.state = exc.state or name
                retriers = state.get("Retry") or []
                retrier = _matching(retriers, exc.error)
                if retrier is None:
                    raise
                index = retriers.index(retrier)
                done = counts.get(index, 0)
                if done >= retrier.get("MaxAttempts", 3):
                    raise
                counts[index] = done + 1
                delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** done
                if "MaxDelaySeconds" in retrier:
                    delay = min(delay, retrier["MaxDelaySeconds"])
                self.trace.retry(name, done + 1, delay)
                self.sleep(delay)

    def _execute(self, name: str, state: dict[str, Any], data: Any, ctx: dict[str, Any]) -> Any:
        kind = state["Type"]
        if "Parameters" in state and kind != "Map":
            data = resolve_parameters(state["Parameters"], data, ctx)
        if kind == "Pass":
            return state.get("Result", data)
        if kind == "Task":
            return self.run_task(name, state, data, ctx)
        if kind == "Parallel":
            thunks = [
                (lambda b=branch: self._run_machine(b, data, ctx)) for branch in state["Branches"]
            ]
            return self.run_branches(name, thunks, 0)
        if kind == "Map":
            return self._map(name, state, data, ctx)
        raise StatesError("States.Runtime", f"cannot execute Type {kind}", name)

    def _map(self, name: str, state: dict[str, Any], data: Any, ctx: dict[str, Any]) -> list[Any]:
        items = select(state["ItemsPath"], data, ctx) if "ItemsPath" in state else data
        if not isinstance(items, list):
            raise StatesError(
                "States.Runtime", f"ItemsPath gave {type(items).__name__}, not a list"
            )
        processor = state.get("ItemProcessor") or state["Iterator"]
        selector = state.get("ItemSelector", state.get("Parameters"))
        thunks = []
        for index, item in enumerate(items):
            item_ctx = {**ctx, "Map": {"Item": {"Index": index, "Value": item}}}
            item_input = resolve_parameters(selector, data, item_ctx) if selector else item
            thunks.append(lambda i=item_input, c=item_ctx: self._run_machine(processor, i, c))
        return self.run_branches(name, thunks, int(state.get("MaxConcurrency", 0)))

    def _choose(self, name: str, state: dict[str, Any], data: Any, ctx: dict[str, Any]) -> str:
        for rule in state["Choices"]:
            if _evaluate(rule, data, ctx):
                return rule["Next"]
        if "Default" in state:
            return state["Default"]
        raise StatesError("States.NoChoiceMatched", "no choice rule matched and no Default", name)

    def _wait_seconds(
        self, state: dict[str, Any], data: Any, ctx: dict[str, Any], name: str
    ) -> float:
        if "Seconds" in state:
            return float(state["Seconds"])
        if "SecondsPath" in state:
            return float(self._select(state["SecondsPath"], data, ctx, name))
        stamp = state.get("Timestamp") or self._select(state["TimestampPath"], data, ctx, name)
        return max(0.0, (_timestamp(stamp) - datetime.now(UTC)).total_seconds())

    def _path(
        self, state: dict[str, Any], key: str, data: Any, ctx: dict[str, Any], name: str
    ) -> Any:
        if key not in state:
            return data
        if state[key] is None:
            return {}
        return self._select(state[key], data, ctx, name)

    @staticmethod
    def _select(path: str, data: Any, ctx: dict[str, Any], name: str) -> Any:
        try:
            return select(path, data, ctx)
        except KeyError:
            raise StatesError("States.Runtime", f"path {path} matched nothing", name) from None

    @staticmethod
    def _next(state: dict[str, Any]) -> str | None:
        return None if state.get("End") else state["Next"]


def _matching(rules: list[dict[str, Any]], error: str) -> dict[str, Any] | None:
    for rule in rules:
        names = rule.get("ErrorEquals", [])
        if error in names or (
            "States.ALL" in names and error not in {"States.Runtime", "States.DataLimitExceeded"}
        ):
            return rule
    return None


def _evaluate(rule: dict[str, Any], data: Any, ctx: dict[str, Any]) -> bool:
    if "And" in rule:
        return all(_evaluate(r, data, ctx) for r in rule["And"])
    if "Or" in rule:
        return any(_evaluate(r, data, ctx) for r in rule["Or"])
    if "Not" in rule:
        return not _evaluate(rule["Not"], data, ctx)
    try:
        value, present = select(rule["Variable"], data, ctx), True
    except KeyError:
        value, present = None, False
    op = next(k for k in rule if k in COMPARISONS or k in TESTS)
    expected = rule[op]
    if op == "IsPresent":
        return present == expected
    if not present:
        return False  # AWS: comparisons on a missing variable are a runtime error; be lenient
    if op in TESTS:
        checks = {
            "IsNull": value is None,
            "IsNumeric": isinstance(value, int | float) and not isinstance(value, bool),
            "IsString": isinstance(value, str),
            "IsBoolean": isinstance(value, bool),
            "IsTimestamp": isinstance(value, str) and _parse_ts(value) is not None,
        }
        return checks[op] == expected
    if op.endswith("Path"):
        expected = select(expected, data, ctx)
        op = op[:-4]
    if op == "StringMatches":
        return isinstance(value, str) and _glob(expected).fullmatch(value) is not None
    if op == "BooleanEquals":
        return isinstance(value, bool) and value == expected
    kind = next(k for k in ("String", "Numeric", "Timestamp") if op.startswith(k))
    relation = op[len(kind) :]
    if kind == "String":
        if not isinstance(value, str):
            return False
    elif kind == "Numeric":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
    else:
        value, expected = _parse_ts(value), _parse_ts(expected)
        if value is None or expected is None:
            return False
    return {
        "Equals": value == expected,
        "LessThan": value < expected,
        "GreaterThan": value > expected,
        "LessThanEquals": value <= expected,
        "GreaterThanEquals": value >= expected,
    }[relation]


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\\\*|\*)", pattern)
    return re.compile(
        "".join(".*" if p == "*" else re.escape(p.replace("\\*", "*")) for p in parts)
    )


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _timestamp(value: Any) -> datetime:
    parsed = _parse_ts(value)
    if parsed is None:
        raise StatesError("States.Runtime", f"{value!r} is not an ISO 8601 timestamp")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def loads(text: str, source: str) -> dict[str, Any]:
    """Parse a definition file's text; a DefinitionError naming the file and position."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError([f"not valid JSON: {exc}"], source) from None
