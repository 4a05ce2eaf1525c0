"""Routes other packages add to the online API, named by dotted path (a plugin, like predictors).

``INFERGRAPH_API_EXTENSIONS`` lists ``package.module:factory`` paths, comma-separated;
each factory is called with the running-service getter and the bearer-token
dependency and returns a FastAPI router, so added routes use the same sign-in,
limits and micro-batcher as ``/predict``. Packages above the API in the layering
(sorting sessions) plug in this way without the API importing them. Setting
``INFERGRAPH_API_SESSIONS_DATABASE`` turns the sorting-session routes on by itself.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

SESSIONS = "infergraph.sessions.http:session_routes"


class ExtensionError(ValueError):
    """An extension path that names nothing usable."""


def extension_paths(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    paths = [p.strip() for p in env.get("INFERGRAPH_API_EXTENSIONS", "").split(",") if p.strip()]
    if env.get("INFERGRAPH_API_SESSIONS_DATABASE") and SESSIONS not in paths:
        paths.append(SESSIONS)
    return paths


def add_extensions(app: FastAPI, service: Callable[[], Any], current_user: Any) -> None:
    """Include every configured extension's router in ``app``."""
    for path in extension_paths():
        module, _, name = path.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ExtensionError(
                f"INFERGRAPH_API_EXTENSIONS: {path!r} is not package.module:factory ({exc})"
            ) from None
        app.include_router(factory(service, current_user))
