"""Model folders: discovery, the step definition (ASL or steps.yaml) and its validation.

A model is a folder of notebooks/scripts with a ``step-functions.json`` (Amazon States
Language, the file the Step Functions deployment used, read unchanged) or a simpler
``steps.yaml``, optional baked-in ``inputs/`` and ``scenarios/<name>/`` folders to upload.
Everything that can be checked before a run (definition, step files, notebooks' JSON) is
checked at load time and reported together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
import yaml

from infergraph.scenarios import asl
from infergraph.scenarios.auth import DEFAULT_HANDLERS

ASL_FILE = "step-functions.json"
YAML_FILE = "steps.yaml"
#: The reference deployment's per-step time limit.
DEFAULT_TIMEOUT = 800.0


class ModelError(ValueError):
    """A model folder that cannot be used, with what to fix."""


def task_payload(params: Any) -> Any:
    """The step's payload: ``Parameters.Payload`` for lambda:invoke states, else Parameters."""
    if isinstance(params, dict) and isinstance(params.get("Payload"), dict):
        return params["Payload"]
    return params


def handler_key(name: str, state: Mapping[str, Any], handlers: Mapping[str, Any]) -> str | None:
    """Which registered handler serves a Task state: by state name, Resource or FunctionName."""
    params = state.get("Parameters") or {}
    for key in (name, state.get("Resource"), params.get("FunctionName")):
        if isinstance(key, str) and key in handlers:
            return key
    return None


@dataclass
class Model:
    root: Path
    definition: dict[str, Any]
    source: str  # the file the definition came from

    @property
    def name(self) -> str:
        return self.root.name

    def scenario_folders(self) -> list[Path]:
        """``scenarios/*`` folders, ``base`` first (users' variants start from it)."""
        folder = self.root / "scenarios"
        found = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        return sorted(found, key=lambda p: p.name != "base")

    def step_names(self) -> list[str]:
        """Top-level states from StartAt along Next: what a front end lists as the steps."""
        names, name = [], self.definition["StartAt"]
        states = self.definition["States"]
        while name in states and name not in names:
            names.append(name)
            name = states[name].get("Next") or states[name].get("Default")
        return names


def load_model(path: str | Path, handlers: Mapping[str, Any] | None = None) -> Model:
    """Load and validate a model folder; ModelError / DefinitionError list what is wrong."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ModelError(f"model folder {root} does not exist")
    asl_path, yaml_path = root / ASL_FILE, root / YAML_FILE
    if asl_path.is_file():
        definition, source = asl.loads(asl_path.read_text(), str(asl_path)), str(asl_path)
    elif yaml_path.is_file():
        definition, source = steps_yaml_to_asl(yaml_path), str(yaml_path)
    else:
        raise ModelError(f"model folder {root} has neither {ASL_FILE} nor {YAML_FILE}")
    handlers = DEFAULT_HANDLERS if handlers is None else handlers
    asl.validate(definition, _task_checker(root, handlers), source)
    return Model(root, definition, source)


def _task_checker(root: Path, handlers: Mapping[str, Any]) -> Callable[[str, dict], str | None]:
    def check(name: str, state: dict[str, Any]) -> str | None:
        if handler_key(name, state, handlers):
            return None
        payload = task_payload(state.get("Parameters"))
        step = payload.get("notebook_path") if isinstance(payload, dict) else None
        if not isinstance(step, str):
            return (
                f"Task resource {state.get('Resource')!r} has no notebook_path in its "
                "Parameters(.Payload) and no handler is registered for it"
            )
        return check_step_file(root, step)

    return check


def check_step_file(root: Path, step: str) -> str | None:
    """The problem with a step file named by a definition, or None."""
    rel = PurePosixPath(step)
    if rel.is_absolute() or ".." in rel.parts:
        return f"notebook_path {step!r} must be relative to the model folder, without '..'"
    path = root / rel
    if rel.suffix not in {".ipynb", ".py"}:
        return f"notebook_path {step!r} must end in .ipynb or .py"
    if not path.is_file():
        return f"notebook_path {step!r}: no such file in {root}"
    if rel.suffix == ".ipynb":
        try:
            nbformat.reads(path.read_text(), as_version=4)
        except (json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
            return f"notebook {step!r} is not valid JSON ({str(exc).splitlines()[0][:120]})"
        except Exception as exc:
            return f"notebook {step!r} is not a valid notebook ({str(exc).splitlines()[0][:120]})"
    return None


# -- steps.yaml ------------------------------------------------------------------------------


def steps_yaml_to_asl(path: Path) -> dict[str, Any]:
    """Translate ``steps.yaml`` into the equivalent ASL definition.

    ``steps:`` is an ordered list; each item is ``{path, name?, retry?, timeout?, when?}``
    or ``{name?, parallel: [items]}`` (each item one branch). ``retry: N`` retries any
    failure N times with 2 s, 4 s, ... between; ``when: {path: $.x, equals: v}`` skips
    the step unless the input's value at ``path`` equals ``v``.
    """
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML ({exc})") from None
    steps = doc.get("steps") if isinstance(doc, dict) else None
    if not isinstance(steps, list) or not steps:
        raise ModelError(f"{path}: needs a non-empty 'steps:' list")
    return _chain(steps, f"{path}")


def _chain(items: list[Any], where: str) -> dict[str, Any]:
    states: dict[str, Any] = {}
    names = [_item_name(item, i, where) for i, item in enumerate(items)]
    for i, (item, name) in enumerate(zip(items, names, strict=True)):
        after = names[i + 1] if i + 1 < len(names) else None
        link = {"Next": after} if after else {"End": True}
        if "parallel" in item:
            branches = item["parallel"]
            if not isinstance(branches, list) or not branches:
                raise ModelError(f"{where}: step {name!r}: 'parallel' needs a list of steps")
            state: dict[str, Any] = {
                "Type": "Parallel",
                "Branches": [_chain([b], f"{where} {name}") for b in branches],
                "ResultPath": None,
                **link,
            }
        else:
            state = {
                "Type": "Task",
                "Resource": "infergraph:step",
                "Parameters": {
                    "notebook_path": item["path"],
                    "scenario_path_S3.$": "$.scenario_path_S3",
                    "launcher_arg.$": "$.launcher_arg",
                    "metadata.$": "$.metadata",
                },
                "ResultPath": None,
                **link,
            }
            if "timeout" in item:
                state["TimeoutSeconds"] = item["timeout"]
            if item.get("retry"):
                state["Retry"] = [
                    {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2,
                     "MaxAttempts": int(item["retry"]), "BackoffRate": 2.0}
                ]  # fmt: skip
        if "when" in item:
            when = item["when"]
            if not isinstance(when, dict) or "path" not in when or "equals" not in when:
                raise ModelError(f"{where}: step {name!r}: 'when' needs 'path' and 'equals'")
            states[f"{name}?"] = {
                "Type": "Choice",
                "Choices": [{**_equals(when["path"], when["equals"]), "Next": name}],
                "Default": after or f"{name} skipped",
            }
            if not after:
                states[f"{name} skipped"] = {"Type": "Succeed"}
        states[name] = state
    # Choices guarding a step stand in front of it: retarget the links.
    guarded = {n for n in names if f"{n}?" in states}
    for state in states.values():
        for key in ("Next", "Default"):
            if state.get(key) in guarded:
                state[key] = f"{state[key]}?"
    start = f"{names[0]}?" if names[0] in guarded else names[0]
    return {"StartAt": start, "States": states}


def _item_name(item: Any, index: int, where: str) -> str:
    if not isinstance(item, dict) or not ("path" in item or "parallel" in item):
        raise ModelError(f"{where}: step {index + 1} needs 'path' (or 'parallel')")
    return str(item.get("name") or PurePosixPath(item.get("path", f"parallel {index + 1}")).stem)


def _equals(path: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"Variable": path, "BooleanEquals": value}
    if isinstance(value, int | float):
        return {"Variable": path, "NumericEquals": value}
    return {"Variable": path, "StringEquals": str(value)}
