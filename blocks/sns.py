"""An SNS topic as a Prefect block (prefect-aws has none)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from infergraph.aws.clients import aws_client


class SnsTopic(Block):
    """An SNS topic that receives completion notices."""

    _block_type_name = "SNS Topic"
    _description = "An SNS topic ARN and the credentials to publish to it."

    topic_arn: str = Field(description="The topic's ARN.")
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials (region, endpoint)."
    )

    def client(self) -> Any:
        return aws_client("sns", self.credentials)
