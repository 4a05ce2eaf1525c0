"""One run per scenario: a lock object ``<scenario>/.run-lock.json`` in the store.

Taken with a create-only write (S3 ``If-None-Match: *``, ``O_EXCL`` locally), so two
runs racing for a scenario cannot both win. The lock names the flow run that holds it;
a lock whose flow run Prefect no longer reports as running (crashed, cancelled, failed,
deleted), whose process is gone on this host, or that has expired, is stale and taken
over, so a killed run never blocks its scenario for good.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psutil

from infergraph.scenarios.store import ScenarioStore, StoreError

LOCK_NAME = ".run-lock.json"
#: A lock older than this is stale whatever Prefect says (a run far longer than any step).
DEFAULT_TTL = timedelta(hours=24)
ALIVE_STATES = {"RUNNING", "PENDING", "SCHEDULED", "PAUSED", "CANCELLING"}


class ScenarioBusy(RuntimeError):
    """The scenario is being run by another flow run (named in the message)."""


def lock_key(scenario: str) -> str:
    return f"{scenario}/{LOCK_NAME}"


def prefect_state(flow_run_id: str) -> str | None:
    """The flow run's state type; "MISSING" if Prefect has no such run, None if unknown."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
    except ObjectNotFound:
        return "MISSING"
    except Exception:
        return None
    return run.state.type.value if run.state else None


@dataclass
class ScenarioLock:
    store: ScenarioStore
    scenario: str
    holder: dict[str, Any]

    def release(self) -> None:
        """Delete the lock if it is still ours (a taken-over stale lock is not)."""
        try:
            current = json.loads(self.store.get(lock_key(self.scenario)))
        except (StoreError, ValueError):
            return
        if current.get("token") == self.holder["token"]:
            self.store.delete([lock_key(self.scenario)])

    def __enter__(self) -> ScenarioLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def stale_reason(holder: dict[str, Any]) -> str | None:
    """Why a held lock no longer protects a live run, or None if its run may be alive."""
    expires = holder.get("expires")
    if expires and datetime.fromisoformat(expires) < datetime.now(UTC):
        return "expired"
    run_id = holder.get("flow_run_id")
    if run_id:
        state = prefect_state(run_id)
        if state is not None and state not in ALIVE_STATES:
            return f"its flow run is {state}"
    if holder.get("host") == socket.gethostname() and holder.get("pid"):
        try:
            proc = psutil.Process(holder["pid"])
            if proc.create_time() > holder.get("pid_started", 0) + 1:
                return "its process is gone (pid reused)"
        except psutil.NoSuchProcess:
            return "its process is gone"
    return None


def acquire(
    store: ScenarioStore,
    scenario: str,
    flow_run_id: str | None,
    flow_run_name: str | None = None,
    queue: bool = False,
    poll: float = 5.0,
    wait: float = 3600.0,
    ttl: timedelta = DEFAULT_TTL,
) -> ScenarioLock:
    """Take the scenario's lock; ScenarioBusy naming the holder (or wait, with ``queue``)."""
    now = datetime.now(UTC)
    holder = {
        "scenario": scenario,
        "flow_run_id": flow_run_id,
        "flow_run_name": flow_run_name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
        "started": now.isoformat(),
        "expires": (now + ttl).isoformat(),
        "token": os.urandom(8).hex(),
    }
    data = json.dumps(holder).encode()
    deadline = time.monotonic() + wait
    while True:
        if store.put_new(lock_key(scenario), data):
            return ScenarioLock(store, scenario, holder)
        try:
            current = json.loads(store.get(lock_key(scenario)))
        except StoreError:
            continue  # released between our write and our read: try again
        except ValueError:
            current = {}
        reason = stale_reason(current) if current else "unreadable"
        if reason:
            store.delete([lock_key(scenario)])
            continue
        who = current.get("flow_run_name") or "a run"
        run_id = current.get("flow_run_id") or "no flow run id"
        message = (
            f"scenario {scenario!r} is already running: flow run {who} ({run_id}), "
            f"started {current.get('started')} on {current.get('host')}; wait for it to "
            "finish or run with queue=True (--queue)"
        )
        if not queue or time.monotonic() > deadline:
            raise ScenarioBusy(message)
        time.sleep(poll)
