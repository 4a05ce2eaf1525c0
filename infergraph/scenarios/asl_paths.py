"""Amazon States Language basics: the vocabulary, its errors and JSONPath selection."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
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
