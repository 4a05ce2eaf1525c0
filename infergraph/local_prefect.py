"""Prefect settings for a zero-setup run on a fresh machine."""

from __future__ import annotations

import os
from typing import Any


def local_settings() -> Any:
    """Settings for a zero-setup run on a fresh machine.

    Without a configured API, Prefect starts a temporary server whose first start
    migrates a new database, which takes longer than Prefect's default 20 s wait;
    anonymous telemetry only produces errors on machines without internet.
    Anything the user set in the environment or a profile wins.
    """
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 180
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    return temporary_settings(updates=updates)
