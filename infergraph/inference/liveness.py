"""Whether a flow run is still running, asked of the Prefect API.

The requests table takes over a lease whose holder is no longer running: a run
that crashed, failed or was cancelled cannot finish its requests, whatever its
lease says. Anything that cannot be decided (no API, a run id that is not one)
counts as alive, so the lease alone decides, as without this check.
"""

from __future__ import annotations

import threading
import time
import uuid

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound

from infergraph.logs import run_logger

#: States in which a run may still finish what it claimed.
ALIVE = frozenset({StateType.RUNNING, StateType.PENDING, StateType.SCHEDULED, StateType.PAUSED})


class FlowRunLiveness:
    """``alive(run_id)``: answers cached for ``ttl`` seconds (many requests share one holder)."""

    def __init__(self, ttl: float = 10.0) -> None:
        self.ttl = ttl
        self._known: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._log = run_logger(__name__)

    def __call__(self, run_id: str) -> bool:
        with self._lock:
            known = self._known.get(run_id)
            if known and time.monotonic() - known[0] < self.ttl:
                return known[1]
        alive = self._ask(run_id)
        with self._lock:
            self._known[run_id] = (time.monotonic(), alive)
        return alive

    def _ask(self, run_id: str) -> bool:
        try:
            rid = uuid.UUID(run_id)
        except ValueError:
            return True
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(rid)
        except ObjectNotFound:
            return False
        except Exception as exc:  # the API is down: trust the lease
            self._log.warning("cannot read flow run %s: %s", run_id, exc)
            return True
        return run.state is None or run.state.type in ALIVE
