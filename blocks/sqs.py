"""An SQS queue as a Prefect block (prefect-aws has none)."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, field_validator

from infergraph.aws.clients import aws_client
from infergraph.aws.sqs_leases import clamp_visibility

#: SQS's long-poll limit (seconds); the visibility limit lives with the consumer.
MAX_WAIT_TIME = 20


class SqsQueue(Block):
    """An SQS queue and how to consume it.

    A message that keeps failing reaches a dead-letter queue through the queue's
    own redrive policy (``maxReceiveCount``), set on the queue rather than here so
    that every consumer shares it. Messages that cannot be read at all (not JSON,
    no requests) are moved to ``dead_letter_queue_url`` (default: that same
    redrive DLQ) at once, with the reason attached, instead of being deleted.
    """

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
        ge=1,
        description=(
            "Seconds a received message stays hidden while it is processed; extended "
            "while work continues. Clamped to SQS's 12-hour maximum."
        ),
    )
    max_messages: int = Field(
        default=10, ge=1, le=10, description="Messages per receive call (SQS allows 1-10)."
    )
    retry_delay_seconds: int = Field(
        default=30,
        ge=0,
        description=(
            "Seconds a failed message stays hidden before it is tried again (only that "
            "message, not the rest of its receive batch). Clamped to 12 hours."
        ),
    )
    dead_letter_queue_url: str | None = Field(
        default=None,
        description=(
            "Queue that receives unreadable messages (not JSON, no requests). "
            "Default: the dead-letter queue of the queue's redrive policy."
        ),
    )

    @field_validator("visibility_timeout", "retry_delay_seconds")
    @classmethod
    def _clamp(cls, value: int) -> int:
        return clamp_visibility(value)

    @property
    def queue_name(self) -> str:
        return self.queue_url.rstrip("/").rsplit("/", 1)[-1]

    def client(self) -> Any:
        return aws_client("sqs", self.credentials)
