"""prefect.yaml, the emulator's resources and the real-AWS blocks file agree with each other.

Fast checks without servers: every block a deployment names is one that
``python -m infergraph.devstack up`` saves and one that ``blocks/aws.example.yaml`` defines (of
the right type), every trigger matches a kind the bridge emits, and the S3 notification
filters let through exactly the keys whose kind a trigger waits for. The deployments
themselves are exercised against a real server in test_deployments_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infergraph import blockconfig as block_config
from infergraph import devstack as local_aws
from infergraph.events.bridge import object_kind
from tests.support.servers import REPO

SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
EXAMPLE = REPO / "blocks" / "aws.example.yaml"
EXAMPLE_ENV = {"AWS_REGION": "eu-west-1", "AWS_ACCOUNT_ID": "123456789012"}

#: flow parameter → block type slug of the block it names
PARAMETER_BLOCKS = {
    "aws_credentials": "aws-credentials",
    "requests_table": "dynamodb-table",
    "jobs_table": "dynamodb-table",
    "notify_topic": "sns-topic",
    "notices": "sns-topic",
    "queue": "sqs-queue",
}
SCHEMES = {"sqs": "sqs-queue", "dynamodb": "dynamodb-table"}
GRAPH_STORES = {"oxigraph-store", "neptune-cluster"}


def named_blocks(parameters: dict[str, Any]) -> set[tuple[str, str]]:
    """(slug, name) of every block a deployment's parameters name."""
    named: set[tuple[str, str]] = set()
    for parameter, value in parameters.items():
        if parameter in PARAMETER_BLOCKS:
            named.add((PARAMETER_BLOCKS[parameter], value))
        elif parameter == "graph_store":
            slug, _, name = value.partition("/")
            assert slug in GRAPH_STORES, value
            named.add((slug, name))
        elif parameter in ("source", "sinks"):
            for text in [value] if isinstance(value, str) else value:
                scheme, sep, rest = text.partition("://")
                if sep and scheme in SCHEMES and "{{" not in text:
                    named.add((SCHEMES[scheme], rest.split("?")[0]))
    return named


def all_named() -> set[tuple[str, str]]:
    return {b for d in SPEC["deployments"] for b in named_blocks(d.get("parameters") or {})}


def local_blocks() -> dict[str, dict[str, Any]]:
    made: dict[str, dict[str, str]] = {
        "queue": {
            q.name: f"http://emulator/123456789012/{q.name}" for q in local_aws.RESOURCES.queues
        },
        "topic": {
            t.name: f"arn:aws:sns:us-east-1:123456789012:{t.name}"
            for t in local_aws.RESOURCES.topics
        },
    }
    return local_aws.block_config("http://127.0.0.1:5055", made, home=Path("/tmp/x"))


def test_every_flow_has_a_deployment() -> None:
    entrypoints = {d["entrypoint"] for d in SPEC["deployments"]}
    assert entrypoints == {
        "flows/inference.py:inference",
        "flows/reasoning.py:schedule_reasoning_job",
        "flows/reasoning.py:process_inference",
        "flows/reasoning.py:refresh_bulk_loads",
        "flows/s3_events_bridge.py:s3_events_bridge",
        "flows/sessions.py:sorting_session",
        "flows/scenarios.py:run_scenario",
        "flows/maintenance.py:sweep_requests",
    }
    names = [d["name"] for d in SPEC["deployments"]]
    assert len(names) == len(set(names)) == 10


def test_every_folder_up_uploads_exists_and_has_files() -> None:
    """``up`` must never report "uploaded 0 files" because a path went stale in a move."""
    for folder, target in local_aws.RESOURCES.uploads:
        assert folder.is_dir() and any(p.is_file() for p in folder.rglob("*")), (folder, target)


def test_the_emulator_saves_every_block_the_deployments_name() -> None:
    config = local_blocks()
    missing = {(slug, name) for slug, name in all_named() if name not in config.get(slug, {})}
    assert not missing
    # The graph store must be the on-disk one on a single machine.
    assert ("oxigraph-store", "reasoning-graph") in all_named()


def test_the_aws_example_defines_every_block_the_deployments_name() -> None:
    built = {
        (e.slug, e.name) for e in block_config.build(block_config.load_file(EXAMPLE), EXAMPLE_ENV)
    }
    for slug, name in all_named():
        if slug in GRAPH_STORES:  # prefect.yaml's &graph_store picks one of the two kinds
            assert {(s, name) for s in GRAPH_STORES} & built, name
        else:
            assert (slug, name) in built, (slug, name)


def test_the_aws_example_needs_its_account_and_region() -> None:
    with pytest.raises(block_config.BlockConfigError, match="AWS_ACCOUNT_ID is not set"):
        block_config.build(block_config.load_file(EXAMPLE), {"AWS_REGION": "eu-west-1"})
    built = block_config.build(block_config.load_file(EXAMPLE), EXAMPLE_ENV)
    queue = next(e.block for e in built if (e.slug, e.name) == ("sqs-queue", "s3-events"))
    assert queue.queue_url.startswith("https://sqs.eu-west-1.amazonaws.com/123456789012/")
    assert queue.credentials.region_name == "eu-west-1"
    # No secret in the file: credentials come from the default chain where flows run.
    creds = next(e.block for e in built if e.slug == "aws-credentials")
    assert creds.aws_access_key_id is None and creds.aws_secret_access_key is None


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("jobs/t.rdfoxjob.json", "jobspec"),
        ("transactions/transactions_2026-01-01_001/rdfox.log", "reasoner-log"),
        ("sessions/arm-1/S12/session.end", "session-end"),
        ("incoming/a.png", "image"),
        ("bridge_closed/run.json", "scenario-run"),
    ],
)
def test_each_trigger_waits_for_a_kind_the_notifications_deliver(key: str, kind: str) -> None:
    triggers = {
        d["name"]: t["match"]["aws.s3.object.kind"]
        for d in SPEC["deployments"]
        for t in d.get("triggers") or []
    }
    assert kind in triggers.values() and object_kind(key) == kind
    delivered = [
        n
        for n in local_aws.RESOURCES.notifications
        if key.startswith(n.prefix or "") and key.endswith(n.suffix or "")
    ]
    assert delivered and all(n.queue == "s3-events" for n in delivered)
    assert all(n.block == "s3-events" for n in local_aws.RESOURCES.queues if n.name == "s3-events")


def test_triggers_pass_the_object_to_the_flow() -> None:
    for deployment in SPEC["deployments"]:
        for trigger in deployment.get("triggers") or []:
            assert trigger["expect"] == ["aws.s3.object.created"]
            assert trigger["match"]["prefect.resource.id"] == "aws.s3.bucket.*"
            text = json.dumps(trigger["parameters"])
            assert "event.payload.key" in text and "event.resource['aws.s3.bucket']" in text


def test_schedules_and_limits() -> None:
    by_name = {d["name"]: d for d in SPEC["deployments"]}
    assert by_name["refresh-bulk-loads"]["schedules"] == [{"cron": "* * * * *"}]
    assert by_name["refresh-bulk-loads"]["concurrency_limit"]["limit"] == 1
    assert by_name["inference-from-queue"]["parameters"]["source"] == "sqs://inference-requests"
    assert by_name["sweep-requests"]["schedules"] == [{"interval": 300}]
    for deployment in SPEC["deployments"]:  # dead runs are found by their missing heartbeats
        env = deployment["work_pool"]["job_variables"]["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30", deployment["name"]
    for deployment in SPEC["deployments"]:
        limit = deployment.get("concurrency_limit")
        assert limit, f"{deployment['name']} has no concurrency limit"
