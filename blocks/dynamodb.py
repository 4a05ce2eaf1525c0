"""A DynamoDB table as a Prefect block (prefect-aws has none).

One block type serves the requests table, the results table and the jobs
table: each is a table name, its key names and, where a query needs one, an
index.
"""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from infergraph.aws.clients import aws_client


class DynamoDBTable(Block):
    """A DynamoDB table and its key schema."""

    _block_type_name = "DynamoDB Table"
    _description = "A DynamoDB table: name, key attribute names, optional index, credentials."

    table_name: str = Field(description="The table's name.")
    partition_key: str = Field(default="request_id", description="Partition (hash) key name.")
    sort_key: str | None = Field(default=None, description="Sort (range) key name, if any.")
    index_name: str | None = Field(
        default=None, description="A global secondary index used for queries (e.g. by status)."
    )
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials (region, endpoint)."
    )

    def client(self, bulk: bool = False) -> Any:
        """The table's client; ``bulk`` for batch writes built by code (see ``aws_client``)."""
        return aws_client("dynamodb", self.credentials, bulk=bulk)

    def key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        """The key attributes of ``item`` (raises KeyError naming the missing one)."""
        names = [self.partition_key] + ([self.sort_key] if self.sort_key else [])
        return {name: item[name] for name in names}
