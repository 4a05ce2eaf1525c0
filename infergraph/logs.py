"""A logger that reaches the flow run's log in the Prefect UI when there is a run."""

from __future__ import annotations

import logging
from typing import Any


def run_logger(name: str) -> Any:
    """The current run's logger, else the module logger ``name``.

    Sources and sinks call this when they are built inside a flow and keep the
    result, so messages from their worker threads (which have no run context of
    their own) still land in that run's log.
    """
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
