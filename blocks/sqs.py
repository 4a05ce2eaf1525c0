"""An SQS queue as a Prefect block (prefect-aws has none)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field

from blocks.aws import aws_client

#: SQS's own limits (seconds): visibility 0..12 h, long-poll wait 0..20 s.
MAX_VISIBILITY_TIMEOUT = 43_200
MAX_WAIT_TIME = 20


class SqsQueue(Block):
    """An SQS queue and how to consume it."""

    _block_type_name = "SQS Queue"
    _description = "An SQS queue: URL, credentials and consumer settings."

    queue_url: str = Field(description="The queue's URL.")
    credentials: AwsCredentials = Field(
        default_factory=AwsCredentials, description="AWS credentials (region, endpoint)."
    )
    wait_time_seconds: int = Field(
        default=20, ge=0, le=MAX_WAIT_TIME, description="Long-poll wait per receive (0-20 s)."
    )
    visibility_timeout: int = Field(
        default=300,
        ge=0,
        le=MAX_VISIBILITY_TIMEOUT,
        description="Seconds a received message stays hidden while it is processed.",
    )
    max_messages: int = Field(
        default=10, ge=1, le=10, description="Messages per receive call (SQS allows 1-10)."
    )

    def client(self) -> Any:
        return aws_client("sqs", self.credentials)
