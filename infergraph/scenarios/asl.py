"""Amazon States Language: validation of a whole definition and an interpreter for it.

The interpreter knows nothing about notebooks, stores or Prefect: Task states call the
``run_task`` hook and Parallel/Map branches go through the ``run_branches`` hook, so the
same code runs under a Prefect flow (tasks on its task runner) and as plain Python in
tests. Semantics follow the AWS documentation for the JSONPath query language: the
input/output processing order is InputPath → Parameters → task → ResultSelector →
ResultPath → OutputPath.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jsonpath_ng import parse as _jp_parse
from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError

STATE_TYPES = {"Task", "Choice", "Parallel", "Map", "Pass", "Wait", "Succeed", "Fail"}
TERMINAL_TYPES = {"Succeed", "Fail"}
COMPARISONS = {
    f"{kind}{op}{suffix}"
    for kind in ("String", "Numeric", "Timestamp")
    for op in ("Equals", "LessThan", "GreaterThan", "LessThanEquals", "GreaterThanEquals")
    for suffix in ("", "Path")
} | {"BooleanEquals", "BooleanEqualsPath", "StringMatches"}
TESTS = {"IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp"}
#: Path fields of a state, checked as JSONPath when validating.
PATH_FIELDS = ("InputPath", "OutputPath", "ResultPath", "ItemsPath")


class DefinitionError(ValueError):
    """A definition that cannot run; lists every problem found, not only the first."""

    def __init__(self, problems: Sequence[str], source: str = "definition") -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source} has {len(self.problems)} problem(s):\n{lines}")


class StatesError(Exception):
    """An ASL runtime error (``States.TaskFailed``, a Fail state's Error, ...)."""

    def __init__(self, error: str, cause: str = "", state: str = "") -> None:
        self.error, self.cause, self.state = error, cause, state
        where = f" in state {state!r}" if state else ""
        super().__init__(f"{error}{where}: {cause}" if cause else f"{error}{where}")


# -- JSONPath --------------------------------------------------------------------------------

_INDEFINITE = re.compile(r"\*|\.\.|\[\?|:|,")


def _compile(path: str) -> Any:
    if not isinstance(path, str) or not (path == "$" or path.startswith(("$.", "$["))):
        raise ValueError(f"{path!r} is not a JSONPath starting with '$'")
    try:
        return _jp_parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ValueError(f"{path!r} is not valid JSONPath ({exc})") from None


def check_path(path: Any) -> str | None:
    """The problem with a JSONPath (or a ``$$.`` context path), None when it parses."""
    if isinstance(path, str) and path.startswith("$$"):
        path = path[1:]
    try:
        _compile(path)
    except ValueError as exc:
        return str(exc)
    return None


def select(path: str, data: Any, context: dict[str, Any] | None = None) -> Any:
    """The value at ``path``; a list for paths with wildcards or filters; KeyError if absent."""
    if path.startswith("$$"):
        data, path = context or {}, path[1:]
    if path == "$":
        return data
    matches = _compile(path).find(data)
    if _INDEFINITE.search(path):
        return [m.value for m in matches]
    if not matches:
        raise KeyError(path)
    return matches[0].value


def put(path: str | None, data: Any, value: Any) -> Any:
    """``data`` with ``value`` placed at the ResultPath ``path`` (copied, never mutated)."""
    if path is None:
        return data
    if path == "$":
        return value
    result = copy.deepcopy(data) if isinstance(data, dict) else {}
    node = result
    keys = [k for k in re.findall(r"\.([^.\[]+)|\['([^']+)'\]", path[1:])]
    names = [a or b for a, b in keys]
    for name in names[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[names[-1]] = value
    return result


def _is_reference_path(path: str) -> bool:
    return path == "$" or re.fullmatch(r"\$((\.[^.\[\]*]+)|(\['[^']+'\]))+", path) is not None


def resolve_parameters(template: Any, data: Any, context: dict[str, Any]) -> Any:
    """A Parameters/ResultSelector/ItemSelector template with its ``.$`` keys evaluated."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if isinstance(value, str) and value.startswith("States."):
                    raise StatesError("States.Runtime", f"intrinsic function {value} unsupported")
                try:
                    out[key[:-2]] = select(value, data, context)
                except KeyError:
                    raise StatesError(
                        "States.Runtime", f"{key}: path {value} matched nothing in the input"
                    ) from None
            else:
                out[key] = resolve_parameters(value, data, context)
        return out
    if isinstance(template, list):
        return [resolve_parameters(v, data, context) for v in template]
    return template


# -- validation ------------------------------------------------------------------------------


def validate(
    definition: Any,
    is_runnable_task: Callable[[str, dict[str, Any]], str | None] | None = None,
    source: str = "definition",
) -> None:
    """Raise DefinitionError listing every problem of ``definition`` (and its branches).

    ``is_runnable_task(name, state)`` returns a problem for Task states the caller
    cannot run (no notebook, no handler), or None.
    """
    problems: list[str] = []
    _validate_machine(definition, "", problems, is_runnable_task)
    if problems:
        raise DefinitionError(problems, source)


def _validate_machine(
    machine: Any,
    where: str,
    problems: list[str],
    is_runnable_task: Callable[[str, dict[str, Any]], str | None] | None,
) -> None:
    if not isinstance(machine, dict):
        problems.append(f"{where or 'definition'}: must be a JSON object with StartAt and States")
        return
    states = machine.get("States")
    start = machine.get("StartAt")
    if not isinstance(states, dict) or not states:
        problems.append(f"{where or 'definition'}: 'States' must be a non-empty object")
        return
    if start not in states:
        problems.append(f"{where or 'definition'}: StartAt {start!r} is not a state")
    edges: dict[str, set[str]] = {}
    dangling: set[str] = set()
    for name, state in states.items():
        at = f"{where}state {name!r}"
        edges[name] = set()
        if not isinstance(state, dict):
            problems.append(f"{at}: must be an object")
            continue
        kind = state.get("Type")
        if kind not in STATE_TYPES:
            problems.append(
                f"{at}: unknown Type {kind!r} (known: {', '.join(sorted(STATE_TYPES))})"
            )
            continue
        _validate_paths(state, at, problems)
        targets: list[tuple[str, Any]] = []
        if kind == "Choice":
            choices = state.get("Choices")
            if not isinstance(choices, list) or not choices:
                problems.append(f"{at}: Choice needs a non-empty 'Choices' list")
                choices = []
            for i, rule in enumerate(choices):
                targets.append(
                    (f"Choices[{i}].Next", rule.get("Next") if isinstance(rule, dict) else None)
                )
                _validate_rule(rule, f"{at} Choices[{i}]", problems, top=True)
            if "Default" in state:
                targets.append(("Default", state["Default"]))
        elif kind not in TERMINAL_TYPES:
            if state.get("End") is True:
                if "Next" in state:
                    problems.append(f"{at}: has both Next and End")
            elif "Next" in state:
                targets.append(("Next", state["Next"]))
            else:
                problems.append(f"{at}: needs 'Next' or 'End: true'")
        for i, catcher in enumerate(state.get("Catch") or []):
            targets.append(
                (f"Catch[{i}].Next", catcher.get("Next") if isinstance(catcher, dict) else None)
            )
        for what, target in targets:
            if target not in states:
                problems.append(f"{at}: {what} {target!r} is not a state")
                dangling.add(name)  # reported here: not a cycle too
            else:
                edges[name].add(target)
        for i, retrier in enumerate(state.get("Retry") or []):
            if not isinstance(retrier, dict) or not isinstance(retrier.get("ErrorEquals"), list):
                problems.append(f"{at}: Retry[{i}] needs an 'ErrorEquals' list")
        if kind == "Task" and is_runnable_task is not None:
            problem = is_runnable_task(name, state)
            if problem:
                problems.append(f"{at}: {problem}")
        if kind == "Parallel":
            branches = state.get("Branches")
            if not isinstance(branches, list) or not branches:
                problems.append(f"{at}: Parallel needs a non-empty 'Branches' list")
            for i, branch in enumerate(branches or []):
                _validate_machine(branch, f"{at} branch {i}: ", problems, is_runnable_task)
        if kind == "Map":
            processor = state.get("ItemProcessor") or state.get("Iterator")
            if processor is None:
                problems.append(f"{at}: Map needs an 'ItemProcessor' (or 'Iterator')")
            else:
                _validate_machine(processor, f"{at} item processor: ", problems, is_runnable_task)
        if kind == "Wait" and not any(
            k in state for k in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath")
        ):
            problems.append(f"{at}: Wait needs Seconds, SecondsPath, Timestamp or TimestampPath")
    if start in states:
        _validate_graph(start, states, edges, dangling, where, problems)


def _validate_paths(state: dict[str, Any], at: str, problems: list[str]) -> None:
    for key in PATH_FIELDS:
        value = state.get(key)
        if value is None:
            continue
        problem = check_path(value)
        if problem:
            problems.append(f"{at}: {key} {problem}")
        elif key == "ResultPath" and not _is_reference_path(value):
            problems.append(f"{at}: ResultPath {value!r} must be a plain path (no wildcards)")
    for key in ("Parameters", "ResultSelector", "ItemSelector"):
        _validate_template(state.get(key), f"{at}: {key}", problems)
    for key in ("SecondsPath", "TimestampPath"):
        if key in state and (problem := check_path(state[key])):
            problems.append(f"{at}: {key} {problem}")


def _validate_template(template: Any, at: str, problems: list[str]) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                if isinstance(value, str) and value.startswith("States."):
                    problems.append(f"{at}.{key}: intrinsic functions are not supported ({value})")
                elif problem := check_path(value):
                    problems.append(f"{at}.{key}: {problem}")
            else:
                _validate_template(value, f"{at}.{key}", problems)
    elif isinstance(template, list):
        for i, value in enumerate(template):
            _validate_template(value, f"{at}[{i}]", problems)


def _validate_rule(rule: Any, at: str, problems: list[str], top: bool) -> None:
    if not isinstance(rule, dict):
        problems.append(f"{at}: must be an object")
        return
    if top and "Next" not in rule:
        problems.append(f"{at}: needs 'Next'")
    if "And" in rule or "Or" in rule:
        subs = rule.get("And", rule.get("Or"))
        for i, sub in enumerate(subs if isinstance(subs, list) else []):
            _validate_rule(sub, f"{at}.{'And' if 'And' in rule else 'Or'}[{i}]", problems, False)
        return
    if "Not" in rule:
        _validate_rule(rule["Not"], f"{at}.Not", problems, False)
        return
    ops = [k for k in rule if k in COMPARISONS or k in TESTS]
    if len(ops) != 1:
        unknown = [k for k in rule if k not in {"Variable", "Next", "Comment"}]
        problems.append(f"{at}: needs exactly one comparison operator, found {unknown or 'none'}")
    variable = rule.get("Variable")
    if variable is None:
        problems.append(f"{at}: needs 'Variable'")
    elif problem := check_path(variable):
        problems.append(f"{at}: Variable {problem}")
    for op in ops:
        if op.endswith("Path") and (problem := check_path(rule[op])):
            problems.append(f"{at}: {op} {problem}")


def _validate_graph(
    start: str,
    states: dict[str, Any],
    edges: dict[str, set[str]],
    dangling: set[str],
    where: str,
    problems: list[str],
) -> None:
    reachable = _closure({start}, edges)
    for name in states:
        if name not in reachable:
            problems.append(f"{where}state {name!r}: unreachable from StartAt {start!r}")
    # A state that can never reach a terminal state loops forever (a cycle with no exit).
    terminal = dangling | {
        n
        for n, s in states.items()
        if isinstance(s, dict) and (s.get("Type") in TERMINAL_TYPES or s.get("End") is True)
    }
    reverse: dict[str, set[str]] = {n: set() for n in states}
    for src, targets in edges.items():
        for dst in targets:
            reverse[dst].add(src)
    can_finish = _closure(terminal, reverse)
    stuck = sorted(n for n in reachable if n not in can_finish and n in edges)
    if stuck:
        problems.append(
            f"{where}states {', '.join(map(repr, stuck))}: form a cycle of Next with no way to "
            "an End, Succeed or Fail state"
        )


def _closure(seeds: set[str], edges: dict[str, set[str]]) -> set[str]:
    seen, todo = set(seeds), list(seeds)
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# -- interpreter -----------------------------------------------------------------------------

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
