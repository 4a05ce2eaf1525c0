"""The ASL interpreter and validator as plain Python: every state type and path field."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from infergraph.scenarios.asl import DefinitionError, Interpreter, StatesError, validate


def echo_task(name: str, state: dict[str, Any], params: Any, ctx: dict[str, Any]) -> Any:
    """A Task whose result is its effective input, tagged with the state name."""
    return {"task": name, "got": params}


def run(definition: dict[str, Any], data: Any, task=echo_task, **kw: Any) -> Any:
    validate(definition)
    return Interpreter(definition, task, **kw).run(data)


def test_paths_parameters_result_and_output() -> None:
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "x",
                "InputPath": "$.inner",
                "Parameters": {"fixed": 1, "picked.$": "$.value", "ctx.$": "$$.State.Name"},
                "ResultSelector": {"echo.$": "$.got"},
                "ResultPath": "$.result",
                "OutputPath": "$.result.echo",
                "End": True,
            }
        },
    }
    out = run(definition, {"inner": {"value": 7}, "other": 1})
    assert out == {"fixed": 1, "picked": 7, "ctx": "T"}


def test_result_path_null_keeps_input_and_nested_result_path() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": None, "Next": "B"},
            "B": {"Type": "Pass", "Result": 2, "ResultPath": "$.deep.er", "End": True},
        },
    }
    assert run(definition, {"keep": True}) == {"keep": True, "deep": {"er": 2}}


def test_choice_operators_and_default() -> None:
    def machine(rule: dict[str, Any]) -> dict[str, Any]:
        return {
            "StartAt": "C",
            "States": {
                "C": {"Type": "Choice", "Choices": [{**rule, "Next": "Yes"}], "Default": "No"},
                "Yes": {"Type": "Pass", "Result": "yes", "End": True},
                "No": {"Type": "Pass", "Result": "no", "End": True},
            },
        }

    data = {"s": "abc", "n": 5, "b": True, "t": "2024-01-02T00:00:00Z", "m": 5, "z": None}
    cases = [
        ({"Variable": "$.s", "StringEquals": "abc"}, "yes"),
        ({"Variable": "$.s", "StringMatches": "a*c"}, "yes"),
        ({"Variable": "$.s", "StringLessThan": "abb"}, "no"),
        ({"Variable": "$.n", "NumericGreaterThanEquals": 5}, "yes"),
        ({"Variable": "$.n", "NumericLessThan": 5}, "no"),
        ({"Variable": "$.n", "NumericEqualsPath": "$.m"}, "yes"),
        ({"Variable": "$.b", "BooleanEquals": True}, "yes"),
        ({"Variable": "$.t", "TimestampGreaterThan": "2024-01-01T00:00:00Z"}, "yes"),
        ({"Variable": "$.z", "IsNull": True}, "yes"),
        ({"Variable": "$.missing", "IsPresent": False}, "yes"),
        ({"Variable": "$.s", "IsNumeric": True}, "no"),
        (
            {
                "And": [
                    {"Variable": "$.n", "NumericGreaterThan": 1},
                    {"Variable": "$.b", "BooleanEquals": True},
                ]
            },
            "yes",
        ),
        (
            {
                "Or": [
                    {"Variable": "$.n", "NumericEquals": 1},
                    {"Variable": "$.s", "StringEquals": "x"},
                ]
            },
            "no",
        ),
        ({"Not": {"Variable": "$.s", "StringEquals": "x"}}, "yes"),
    ]
    for rule, expected in cases:
        assert run(machine(rule), data) == expected, rule


def test_choice_without_match_or_default_fails_naming_the_state() -> None:
    definition = {
        "StartAt": "Pick",
        "States": {
            "Pick": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "Done"}],
            },
            "Done": {"Type": "Succeed"},
        },
    }
    with pytest.raises(StatesError) as err:
        run(definition, {"x": 2})
    assert err.value.error == "States.NoChoiceMatched" and err.value.state == "Pick"


def test_parallel_runs_branches_concurrently_results_in_order() -> None:
    barrier = threading.Barrier(2, timeout=10)

    def task(name: str, state: dict[str, Any], params: Any, ctx: dict[str, Any]) -> Any:
        barrier.wait()  # both branches must be in flight at once
        return name

    branch = lambda n: {"StartAt": n, "States": {n: {"Type": "Task", "Resource": "x", "End": True}}}  # noqa: E731
    definition = {
        "StartAt": "P",
        "States": {"P": {"Type": "Parallel", "Branches": [branch("A"), branch("B")], "End": True}},
    }
    assert run(definition, {}, task) == ["A", "B"]


def test_map_over_items_with_bounded_concurrency_and_context() -> None:
    active, peak, lock = [0], [0], threading.Lock()

    def task(name: str, state: dict[str, Any], params: Any, ctx: dict[str, Any]) -> Any:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return params["v"] * 10 + params["i"]

    definition = {
        "StartAt": "M",
        "States": {
            "M": {
                "Type": "Map",
                "ItemsPath": "$.items",
                "MaxConcurrency": 2,
                "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
                "ItemProcessor": {
                    "StartAt": "T",
                    "States": {"T": {"Type": "Task", "Resource": "x", "End": True}},
                },
                "ResultPath": "$.out",
                "End": True,
            }
        },
    }
    out = run(definition, {"items": [1, 2, 3, 4, 5]}, task)
    assert out["out"] == [10, 21, 32, 43, 54]
    assert peak[0] == 2


def test_retry_with_backoff_counted_then_catch() -> None:
    attempts: list[str] = []

    def task(name: str, state: dict[str, Any], params: Any, ctx: dict[str, Any]) -> Any:
        attempts.append(name)
        raise StatesError("States.TaskFailed", "boom")

    sleeps: list[float] = []
    definition = {
        "StartAt": "T",
        "States": {
            "T": {
                "Type": "Task",
                "Resource": "x",
                "Retry": [
                    {"ErrorEquals": ["Lambda.ServiceException"], "MaxAttempts": 9},
                    {
                        "ErrorEquals": ["States.ALL"],
                        "IntervalSeconds": 2,
                        "MaxAttempts": 3,
                        "BackoffRate": 2,
                    },
                ],
                "Catch": [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Handled"}
                ],
                "End": True,
            },
            "Handled": {"Type": "Pass", "End": True},
        },
    }
    interpreter = Interpreter(definition, task, sleep=sleeps.append)
    out = interpreter.run({"x": 1})
    assert len(attempts) == 4  # first try + MaxAttempts 3
    assert sleeps == [2, 4, 8]
    assert [r[1] for r in interpreter.trace.retries] == [1, 2, 3]
    assert out == {"x": 1, "err": {"Error": "States.TaskFailed", "Cause": "boom"}}


def test_wait_succeed_and_fail() -> None:
    sleeps: list[float] = []
    definition = {
        "StartAt": "W",
        "States": {
            "W": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "W2"},
            "W2": {"Type": "Wait", "Seconds": 1, "Next": "C"},
            "C": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "S"}],
                "Default": "F",
            },
            "S": {"Type": "Succeed", "OutputPath": "$.ok"},
            "F": {"Type": "Fail", "Error": "Custom.Bad", "Cause": "not ok"},
        },
    }
    assert run(definition, {"delay": 3, "ok": True}, sleep=sleeps.append) is True
    assert sleeps == [3.0, 1.0]
    with pytest.raises(StatesError) as err:
        run(definition, {"delay": 0, "ok": False}, sleep=sleeps.append)
    assert (err.value.error, err.value.cause, err.value.state) == ("Custom.Bad", "not ok", "F")


def test_validation_lists_every_problem() -> None:
    definition = {
        "StartAt": "A",
        "States": {
            "A": {"Type": "Task", "Resource": "x", "Next": "Nowhere"},
            "B": {"Type": "Teleport", "End": True},
            "Loop1": {"Type": "Pass", "Next": "Loop2"},
            "Loop2": {"Type": "Pass", "Next": "Loop1", "InputPath": "$.[bad"},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1}]},
        },
    }
    with pytest.raises(DefinitionError) as err:
        validate(definition, lambda name, state: "no notebook_path" if name == "A" else None)
    text = str(err.value)
    for expected in [
        "state 'A': Next 'Nowhere' is not a state",
        "state 'A': no notebook_path",
        "state 'B': unknown Type 'Teleport'",
        "state 'Loop2': InputPath",
        "state 'C' Choices[0]: needs 'Next'",
        "state 'B': unreachable",
        "state 'Loop1': unreachable",
    ]:
        assert expected in text, expected
    assert len(err.value.problems) >= 7


def test_cycle_without_exit_is_refused() -> None:
    definition = {
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "Next": "B"}, "B": {"Type": "Pass", "Next": "A"}},
    }
    with pytest.raises(DefinitionError, match="cycle of Next"):
        validate(definition)


def test_missing_start_state_and_parallel_branch_problems() -> None:
    definition = {
        "StartAt": "Gone",
        "States": {
            "P": {
                "Type": "Parallel",
                "End": True,
                "Branches": [{"StartAt": "X", "States": {"X": {"Type": "Pass"}}}],
            }
        },
    }
    with pytest.raises(DefinitionError) as err:
        validate(definition)
    assert "StartAt 'Gone' is not a state" in str(err.value)
    assert "branch 0: state 'X': needs 'Next' or 'End: true'" in str(err.value)
