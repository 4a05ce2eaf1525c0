"""Task handlers other than notebook steps, and the default ``Authorization`` handler.

The reference state machine starts with an ``Authorization`` Task that called an auth
function; here it is a hook. A handler is registered under a state name, a Resource
ARN or a FunctionName and receives the resolved Parameters; the default
``Authorization`` handler checks the caller against a users/groups file and passes the
execution input on (as the reference function did), wrapped as a Lambda result so the
template's ``OutputPath: $.Payload`` selects it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infergraph.scenarios.asl import StatesError

#: Files looked for in the model folder when no config is given.
CONFIG_NAMES = ("authorization.yaml", "authorization.yml", "authorization.json")
ENV_CONFIG = "INFERGRAPH_SCENARIO_AUTH"


@dataclass
class HandlerCall:
    state: str
    params: Any  # the state's resolved Parameters
    execution_input: Any
    model_root: Path
    scenario: str
    authorize: bool  # False for local runs with the check turned off


Handler = Callable[[HandlerCall], Any]


def lambda_result(payload: Any) -> dict[str, Any]:
    """What ``arn:aws:states:::lambda:invoke`` returns: the templates select ``$.Payload``."""
    return {"Payload": payload, "StatusCode": 200}


def load_config(model_root: Path) -> tuple[dict[str, Any], Path] | None:
    """The users/groups config: $INFERGRAPH_SCENARIO_AUTH, else authorization.* in the model."""
    candidates = [Path(os.environ[ENV_CONFIG])] if os.environ.get(ENV_CONFIG) else []
    candidates += [model_root / name for name in CONFIG_NAMES]
    for path in candidates:
        if path.is_file():
            text = path.read_text()
            config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            return config or {}, path
    return None


def caller_of(params: Any) -> str | None:
    """The caller's identity from the Authorization payload (a string or {user|email})."""
    payload = params.get("Payload", params) if isinstance(params, dict) else params
    who = payload.get("authorization") if isinstance(payload, dict) else None
    if isinstance(who, dict):
        who = who.get("user") or who.get("email") or who.get("user_email")
    return who if isinstance(who, str) and who else None


def authorize(call: HandlerCall) -> dict[str, Any]:
    """Allow listed users and members of listed groups; pass the execution input on.

    Config: ``users: [emails]``, ``groups: {name: [emails]}``, ``allowed_groups: [names]``.
    """
    if call.authorize:
        found = load_config(call.model_root)
        if found is None:
            raise StatesError(
                "Authorization.NoConfig",
                f"no users/groups config: add {CONFIG_NAMES[0]} to {call.model_root} or set "
                f"${ENV_CONFIG} (or run locally with --no-auth)",
                call.state,
            )
        config, path = found
        who = caller_of(call.params)
        groups = config.get("groups") or {}
        allowed = who is not None and (
            who in (config.get("users") or [])
            or any(who in groups.get(g, []) for g in config.get("allowed_groups") or [])
        )
        if not allowed:
            raise StatesError(
                "Authorization.Denied",
                f"caller {who!r} may not run model {call.model_root.name!r} ({path})",
                call.state,
            )
    return lambda_result(call.execution_input)


DEFAULT_HANDLERS: dict[str, Handler] = {"Authorization": authorize}
