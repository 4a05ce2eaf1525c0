"""A local Oxigraph graph store as a Prefect block: the one-machine stand-in for Neptune."""

from __future__ import annotations

from typing import Literal, Self

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, model_validator


class OxigraphStore(Block):
    """Where the local graph store lives: an on-disk pyoxigraph store or an ``oxigraph serve`` URL.

    ``path`` keeps the store in-process (one process at a time may hold it open, so flow
    runs take turns), with Gremlin CSV loads in ``{path}.property-graph.sqlite``; ``url``
    points at ``oxigraph serve --location DIR --bind HOST:PORT``, which several workers can
    share (RDF only). ``credentials`` read the S3 prefix being loaded.
    """

    _block_type_name = "Oxigraph Store"
    _description = "Local graph store for reasoning outputs: on-disk path or oxigraph server URL."

    path: str | None = Field(
        default=None, description="Directory of an in-process store (created if missing)."
    )
    url: str | None = Field(
        default=None,
        description="Base URL of an `oxigraph serve` instance, e.g. http://127.0.0.1:7878",
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials for reading the S3 sources."
    )
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

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        if bool(self.path) == bool(self.url):
            raise ValueError(
                "set exactly one of 'path' (in-process store) or 'url' (oxigraph serve)"
            )
        if self.url:
            self.url = self.url.rstrip("/")
        return self
