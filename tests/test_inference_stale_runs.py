"""Runs whose process died are marked CRASHED, freeing their deployment's slot (real server)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture
def client(prefect_server):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        yield client


def _deployment(client, name: str):
    """A deployment with one concurrency slot that cancels new runs while it is taken."""
    from prefect import flow
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions

    @flow(name=f"stale-{name}")
    def work() -> None: ...

    flow_id = client.create_flow(work)
    return client.create_deployment(
        flow_id,
        name,
        concurrency_limit=1,
        concurrency_options=ConcurrencyOptions(
            collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
        ),
    )


def _start(client, deployment_id):
    """A run of the deployment moved to PENDING then RUNNING, as a worker would; (id, state)."""
    from prefect.states import Pending, Running

    run = client.create_flow_run_from_deployment(deployment_id)
    pending = client.set_flow_run_state(run.id, Pending())
    if pending.state.type.value != "PENDING":
        return run.id, pending.state.type.value
    client.set_flow_run_state(run.id, Running())
    return run.id, client.read_flow_run(run.id).state.type.value


def _age(client, run_id) -> float:
    """Seconds since the run entered its state, by the server's clock."""
    return (datetime.now(UTC) - client.read_flow_run(run_id).state.timestamp).total_seconds()


def test_a_killed_run_is_crashed_and_the_next_run_can_start(client):
    from infergraph.inference.stale_runs import crash_stale_runs

    deployment = _deployment(client, "killed")
    dead, state = _start(client, deployment)
    assert state == "RUNNING"
    _, blocked = _start(client, deployment)
    assert blocked == "CANCELLED"  # the dead run holds the only slot
    while _age(client, dead) < 2:  # the run sends no heartbeat: it was killed
        time.sleep(0.2)

    assert str(dead) in crash_stale_runs(stale_after=1)
    crashed = client.read_flow_run(dead)
    assert crashed.state.type.value == "CRASHED" and "no heartbeat" in crashed.state.message
    _, state = _start(client, deployment)
    assert state == "RUNNING"  # its slot came free


def test_a_run_that_sends_heartbeats_or_just_started_is_left_running(client):
    from prefect.events import emit_event
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from infergraph.inference.stale_runs import HEARTBEAT, crash_stale_runs

    beating, _ = _start(client, _deployment(client, "beating"))
    while _age(client, beating) < 3:
        time.sleep(0.2)
    emit_event(HEARTBEAT, resource={"prefect.resource.id": f"prefect.flow-run.{beating}"})
    wanted = EventFilter(
        event=EventNameFilter(name=[HEARTBEAT]),
        resource=EventResourceFilter(id=[f"prefect.flow-run.{beating}"]),
    )
    deadline = time.monotonic() + 60
    while not client.read_events(wanted, limit=1).events:
        assert time.monotonic() < deadline, "the heartbeat never reached the server"
        time.sleep(0.5)
    fresh, _ = _start(client, _deployment(client, "fresh"))

    # Stale after: a little less than the beating run's age, so only its heartbeat saves it.
    crashed = crash_stale_runs(stale_after=_age(client, beating) - 1)
    assert str(beating) not in crashed and str(fresh) not in crashed
    for run in (beating, fresh):
        assert client.read_flow_run(run).state.type.value == "RUNNING"


def test_the_automation_is_installed_once(client):
    from infergraph.inference.stale_runs import AUTOMATION_NAME, install_crash_automation

    install_crash_automation(within=90)
    second = install_crash_automation(within=90)
    (automation,) = client.read_automations_by_name(AUTOMATION_NAME)
    assert automation.id == second and automation.enabled
    assert automation.trigger.within == timedelta(seconds=90)
    assert automation.actions[0].type == "change-flow-run-state"
    assert automation.actions[0].state.value == "CRASHED"
