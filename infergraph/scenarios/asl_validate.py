"""Validating a whole state machine before its first step runs: every problem in one error."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infergraph.scenarios.asl_paths import (
    COMPARISONS,
    PATH_FIELDS,
    STATE_TYPES,
    TERMINAL_TYPES,
    TESTS,
    DefinitionError,
    _is_reference_path,
    check_path,
)


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
