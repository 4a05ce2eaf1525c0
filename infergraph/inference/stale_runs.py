"""Flow runs whose process died, marked CRASHED so they stop holding concurrency slots.

A run killed outright (SIGKILL, an evicted pod, a lost machine) never reports its
end and stays RUNNING; with a deployment's concurrency limit and CANCEL_NEW, a
few of them cancel every later run. Every flow run sends a heartbeat event every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (Prefect's default 180, the
deployments in prefect.yaml 30). Two ways to act on a missing heartbeat, usable
together:

- ``install_crash_automation``: Prefect's own automation (the "zombie flow runs"
  recipe): a run whose heartbeat is not followed by another heartbeat or an end
  state within ``within`` seconds is set to CRASHED by the server itself;
- ``crash_stale_runs``: the same decision taken by the sweep, per run: a RUNNING
  run silent for three of its own heartbeat periods is set to CRASHED (so
  heartbeats must stay on).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings
from prefect.states import Crashed

from infergraph.logs import run_logger

AUTOMATION_NAME = "infergraph: crash flow runs without heartbeats"
HEARTBEAT = "prefect.flow-run.heartbeat"
#: Events that end a run's wait for its next heartbeat.
ENDS = ("Completed", "Failed", "Cancelled", "Crashed")
#: Heartbeats a run may miss before it counts as dead.
MISSED_BEATS = 3
#: Prefect's own default heartbeat period (seconds).
DEFAULT_FREQUENCY = 180


def default_stale_after() -> float:
    """Three heartbeats of the slower of this process's setting and Prefect's default (180 s).

    A run started elsewhere may beat at Prefect's default even where this process is set
    to beat faster; waiting for the slower never crashes a live run.
    """
    frequency = get_current_settings().flows.heartbeat_frequency or DEFAULT_FREQUENCY
    return float(MISSED_BEATS * max(frequency, DEFAULT_FREQUENCY))


def crash_stale_runs(stale_after: float | None = None, limit: int = 200) -> list[str]:
    """Set RUNNING runs whose heartbeats stopped to CRASHED; their ids.

    A run is dead when its last heartbeat (or, before any, its start) is older than
    ``stale_after`` seconds; by default three of its own heartbeat periods, measured
    between its last two heartbeats (``default_stale_after`` while it sent fewer).
    """
    log = run_logger(__name__)
    now = datetime.now(UTC)
    crashed: list[str] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            limit=limit,
        )
        for run in runs:
            started = run.state.timestamp if run.state else now
            beats = client.read_events(
                EventFilter(
                    occurred=EventOccurredFilter(since=started, until=now + timedelta(minutes=1)),
                    event=EventNameFilter(name=[HEARTBEAT]),
                    resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
                ),
                limit=2,
            ).events  # newest first
            allowed = stale_after
            if allowed is None:
                allowed = default_stale_after()
                if len(beats) > 1:  # its own period, measured
                    period = (beats[0].occurred - beats[1].occurred).total_seconds()
                    allowed = MISSED_BEATS * max(period, 30.0)
            last = beats[0].occurred if beats else started
            silent = (now - last).total_seconds()
            if silent <= allowed:
                continue
            message = f"no heartbeat for {silent:.0f} s: its process died (seen by the sweep)"
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            log.warning("flow run %s (%s) marked CRASHED: %s", run.name, run.id, message)
            crashed.append(str(run.id))
    return crashed


def install_crash_automation(within: float | None = None) -> UUID:
    """Create (or replace) the server-side automation that crashes runs without heartbeats."""
    within = default_stale_after() if within is None else within
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(old.id)
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Marks a flow run CRASHED when its heartbeats stop (its process died).",
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{end}" for end in ENDS)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within:.0f} s: its process died",
            )
        ],
    ).create()
    return automation.id
