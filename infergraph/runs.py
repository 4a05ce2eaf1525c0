"""How a flow run presents itself in the Prefect UI: its name, tags and artifact keys.

A run's name is set when it starts (``flow_run_name``), but what it did is known only at
its end; :func:`describe_run` renames and tags it then, so the runs list shows
``samples/ · 363 images · 3 errors`` or ``… · idle`` instead of a random name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

IDLE = "idle"
#: Entry points of the inference flow, as run tags (the CLI and the deployments set them).
CLI_TAG = "cli"
ENTRY_POINTS = ("upload", "queue", "on-demand", CLI_TAG)
MAX_NAME = 80


def current_run_tags() -> list[str]:
    """The tags of the running flow run (its deployment's and the caller's ``tags(...)``)."""
    from prefect.runtime import flow_run

    return list(flow_run.tags or [])


def entry_point(tags: Iterable[str]) -> str | None:
    """Which entry point started a run, from its tags (``None``: a plain Python call)."""
    found = set(tags)
    return next((name for name in ENTRY_POINTS if name in found), None)


@contextmanager
def untagged_tasks() -> Iterator[None]:
    """Task runs created inside do not inherit the entry-point tags of the caller's ``tags()``.

    Prefect's task engine asks the server for tag concurrency slots, and gives them
    back, for every task run that has a tag, limit or none: two API calls on each
    batch's critical path. A busy server made one of them wait 2 s, a third of a
    5,000-image run. The flow run keeps its tags; a user's own tags (a concurrency
    limit they set) still reach the tasks.
    """
    from prefect.context import TagsContext

    current = TagsContext.get().current_tags
    with TagsContext(current_tags=current - set(ENTRY_POINTS)):
        yield


def artifact_key(prefix: str, *parts: str | None) -> str:
    """An artifact key (lowercase letters, digits, dashes) from ``prefix`` and ``parts``."""
    text = "-".join(p for p in (prefix, *parts) if p)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")


def short(text: str, limit: int = MAX_NAME) -> str:
    """``text`` cut in the middle to ``limit`` characters, keeping both ends readable."""
    if len(text) <= limit:
        return text
    keep = (limit - 1) // 2
    return f"{text[:keep]}…{text[-(limit - 1 - keep) :]}"


def describe_run(name: str | None = None, add_tags: Iterable[str] = ()) -> None:
    """Rename the current flow run and add tags to it; nothing outside a flow run."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return
    tags = list(flow_run.tags or [])
    tags += [t for t in add_tags if t not in tags]
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=short(name) if name else None, tags=tags)


def titled(title: str) -> Any:
    """``Annotated`` metadata giving a flow parameter its label on the run form.

    Prefect titles every parameter with its snake_case name; a ``json_schema_extra`` title
    is applied after that, so ``x: Annotated[int, titled("Batch size")] = 64`` shows
    "Batch size" while the default still works for plain Python calls.
    """
    from pydantic import Field

    return Field(json_schema_extra={"title": title})
