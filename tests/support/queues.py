"""Queue inspection shared by the AWS tests."""

from __future__ import annotations

from typing import Any


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages: what a test asserts about deletes and resets."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )
