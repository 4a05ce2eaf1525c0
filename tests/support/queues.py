"""Queue inspection shared by the AWS tests."""

from __future__ import annotations

from typing import Any

from infergraph.aws.sqs_leases import queue_depth


def queue_counts(sqs: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages: what a test asserts about deletes and resets."""
    return queue_depth(sqs, url)
