"""A local Oxigraph graph store as a Prefect block: the one-machine stand-in for Neptune."""

from __future__ import annotations

from typing import Self

from prefect_aws import AwsCredentials
from pydantic import Field, model_validator

from blocks.graph_store import GraphStoreDefaults


class OxigraphStore(GraphStoreDefaults):
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

    @model_validator(mode="after")
    def _one_location(self) -> Self:
        if bool(self.path) == bool(self.url):
            raise ValueError(
                "set exactly one of 'path' (in-process store) or 'url' (oxigraph serve)"
            )
        if self.url:
            self.url = self.url.rstrip("/")
        return self
