"""What every graph-store block shares: the bulk loader's defaults and the job limits."""

from __future__ import annotations

from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field


class GraphStoreDefaults(Block):
    """Settings a deployment gives once for every job; a jobspec's own values override them.

    The base of :class:`~blocks.neptune.NeptuneCluster` and
    :class:`~blocks.oxigraph.OxigraphStore`, so both stores load and time out alike.
    """

    _block_type_name = "Graph Store Defaults"

    source_format: Literal["csv", "opencypher", "ntriples", "nquads", "rdfxml", "turtle"] = Field(
        default="turtle",
        description="Loader format for every job (a jobspec's neptune_configuration overrides it); "
        "turtle, as the reference: the reasoner's N-Triples output is valid Turtle.",
    )
    mode: Literal["NEW", "RESUME", "AUTO"] = Field(default="AUTO", description="Loader mode.")
    fail_on_error: bool = Field(
        default=False,
        description="Stop a load at its first bad record (the reference: false, so one bad "
        "record does not lose a whole load; errors are listed in the notice).",
    )
    parallelism: Literal["LOW", "MEDIUM", "HIGH", "OVERSUBSCRIBE"] = Field(
        default="HIGH", description="Loader parallelism."
    )
    update_single_cardinality_properties: bool = Field(
        default=True, description="Replace single-cardinality property values (as the reference)."
    )
    queue_request: bool = Field(
        default=True, description="Queue a load behind running ones instead of failing it."
    )
    inference_timeout_minutes: float = Field(
        default=1440,
        gt=0,
        description="Default limit for a job to stay SCHEDULED (reasoning) before it fails; "
        "a jobspec's inference_timeout_minutes overrides it.",
    )
    load_timeout_minutes: float = Field(
        default=720,
        gt=0,
        description="Default limit for a bulk load to stay in progress before it is cancelled; "
        "a jobspec's load_timeout_minutes overrides it.",
    )
    log_grace_minutes: float = Field(
        default=15,
        gt=0,
        description="How long after its Kubernetes Job succeeded a job may still publish "
        "rdfox.log before it counts as finished without a log.",
    )
