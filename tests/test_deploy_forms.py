"""The run forms of prefect.yaml's deployments, as the Prefect API stores and serves them.

Each deployment is registered on the session server the way ``prefect deploy`` does it
(the flow loaded from its entrypoint, ``parameter_schema`` of it, the file's parameters,
description and pull steps), read back through the API, checked, and deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
import yaml

from tests.support.servers import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>]*>")


@pytest.fixture(scope="module")
def served() -> Iterator[dict[str, Any]]:
    """Every deployment of prefect.yaml, registered and read back: name → Deployment."""
    from prefect.client.orchestration import get_client
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.callables import parameter_schema

    suffix = uuid4().hex[:6]
    found: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        try:
            for spec in SPEC["deployments"]:
                flow = load_flow_from_entrypoint(str(REPO / spec["entrypoint"]))
                made = client.create_deployment(
                    flow_id=client.create_flow_from_name(flow.name),
                    name=f"{spec['name']}-{suffix}",
                    entrypoint=spec["entrypoint"],
                    parameters=spec.get("parameters") or {},
                    parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
                    description=spec.get("description"),
                    tags=spec.get("tags") or [],
                    pull_steps=SPEC["pull"],
                    paused=True,
                )
                found[spec["name"]] = client.read_deployment(made)
            yield found
        finally:
            for deployment in found.values():
                client.delete_deployment(deployment.id)


def defaults(deployment: Any) -> Iterator[tuple[str, Any]]:
    for name, prop in deployment.parameter_openapi_schema["properties"].items():
        if "default" in prop:
            yield name, prop["default"]
    yield from deployment.parameters.items()


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def outside_code(text: str) -> str:
    return re.sub(r"`[^`]*`", "", text or "")


def test_no_default_is_a_path_of_the_deploying_machine(served: dict[str, Any]) -> None:
    for name, deployment in served.items():
        for parameter, value in defaults(deployment):
            for text in strings(value):
                assert not text.startswith("/") and str(REPO) not in text, (name, parameter)


def test_the_inference_form_has_titles_types_and_consistent_defaults(
    served: dict[str, Any],
) -> None:
    for name in ("inference-on-demand", "inference-from-queue", "inference-on-upload"):
        deployment = served[name]
        properties = deployment.parameter_openapi_schema["properties"]
        for parameter, prop in properties.items():
            assert prop["title"][0].isupper() and "_" not in prop["title"], parameter
            assert prop.get("default") is not None, f"{parameter} would show as type None"
            assert "null" not in str(prop.get("anyOf", "")), parameter
            assert "Default:" not in prop.get("description", ""), parameter
        assert properties["source"]["default"] == ""  # the shipped samples, found at run time
    assert served["inference-on-demand"].parameters["sinks"] == ["dynamodb://inference-results"]
    assert "`inference-results`" in served["inference-on-demand"].description


def test_placeholders_are_code_spans_so_markdown_keeps_them(served: dict[str, Any]) -> None:
    for name, deployment in served.items():
        assert not PLACEHOLDER.search(outside_code(deployment.description)), name
        for parameter, prop in deployment.parameter_openapi_schema["properties"].items():
            text = outside_code(prop.get("description", ""))
            assert not PLACEHOLDER.search(text), (name, parameter, text)


def test_what_starts_a_deployment_is_in_its_description(served: dict[str, Any]) -> None:
    for spec in SPEC["deployments"]:
        description = served[spec["name"]].description
        if spec.get("triggers"):
            kind = spec["triggers"][0]["match"]["aws.s3.object.kind"]
            assert "started by an upload" in description.lower() and f"`{kind}`" in description
        if spec.get("schedules"):
            assert "Started every" in description, spec["name"]


def test_runs_are_tagged_with_their_entry_point(served: dict[str, Any]) -> None:
    from infergraph.runs import entry_point

    entries = {
        name: entry_point(served[name].tags)
        for name in ("inference-on-demand", "inference-from-queue", "inference-on-upload")
    }
    assert entries == {
        "inference-on-demand": "on-demand",
        "inference-from-queue": "queue",
        "inference-on-upload": "upload",
    }


def test_the_pull_step_says_where_runs_start(served: dict[str, Any]) -> None:
    for deployment in served.values():
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "."}}
        ]
