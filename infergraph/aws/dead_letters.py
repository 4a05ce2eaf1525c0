"""Reading and redriving a dead-letter queue.

``peek`` reads every message without consuming it (each is made visible again
at once), so the sweep can tell which requests are parked there. ``redrive``
moves messages back to the queue they came from by send-then-delete: SQS's own
``StartMessageMoveTask`` is not available everywhere (moto lacks it), and a
copy that was sent but not yet deleted is only a duplicate, which the requests
table absorbs; never a loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from infergraph.aws.errors import describe_aws_error
from infergraph.aws.sqs_leases import in_tens

#: Long enough to page through a dead-letter queue without seeing a message twice.
PEEK_VISIBILITY = 60
#: Attributes the consumer adds when it sets a message aside; dropped on redrive.
ASIDE_ATTRIBUTES = ("infergraph_error", "infergraph_source")


class DeadLetterError(RuntimeError):
    """The dead-letter queue or its source queue cannot be used."""


def dead_letter_url(client: Any, queue_url: str) -> str | None:
    """The dead-letter queue of ``queue_url``'s redrive policy, or None."""
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]
        ).get("Attributes", {})
        policy = json.loads(attributes.get("RedrivePolicy") or "{}")
        if "deadLetterTargetArn" not in policy:
            return None
        *_, account, name = policy["deadLetterTargetArn"].split(":")
        return client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
    except ClientError as exc:
        raise DeadLetterError(
            f"cannot read the redrive policy of {queue_url}: {describe_aws_error(exc)}"
        ) from exc


def peek(client: Any, url: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """Every message of ``url`` (up to ``limit``), left on the queue and visible."""
    seen: dict[str, dict[str, Any]] = {}
    try:
        while len(seen) < limit:
            got = _receive(client, url, PEEK_VISIBILITY)
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                break
            seen.update((m["MessageId"], m) for m in fresh)
    finally:
        for chunk in in_tens(list(seen.values())):
            entries = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ]
            client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
    return list(seen.values())


def redrive(
    client: Any,
    dead_letter: str,
    target: str,
    limit: int | None = None,
    before_send: Callable[[list[dict[str, Any]]], None] | None = None,
) -> int:
    """Move messages from ``dead_letter`` back to ``target``; how many moved.

    ``before_send`` sees each batch of messages first (the sweep's requests are
    reopened there, so the moved messages are processed, not taken for duplicates).
    """
    moved = 0
    while limit is None or moved < limit:
        count = 10 if limit is None else min(10, limit - moved)
        try:
            messages = _receive(client, dead_letter, PEEK_VISIBILITY, count)
        except ClientError as exc:
            raise DeadLetterError(f"cannot read {dead_letter}: {describe_aws_error(exc)}") from exc
        if not messages:
            break
        if before_send is not None:
            before_send(messages)
        entries = [
            {
                "Id": str(i),
                "MessageBody": m.get("Body", ""),
                "MessageAttributes": _sendable(m.get("MessageAttributes", {})),
            }
            for i, m in enumerate(messages)
        ]
        if target.endswith(".fifo"):
            for entry, m in zip(entries, messages, strict=True):
                entry.update(
                    MessageGroupId="infergraph-redrive", MessageDeduplicationId=m["MessageId"]
                )
        try:
            sent = client.send_message_batch(QueueUrl=target, Entries=entries)
        except ClientError as exc:
            raise DeadLetterError(f"cannot send to {target}: {describe_aws_error(exc)}") from exc
        ok = {int(s["Id"]) for s in sent.get("Successful", [])}
        done = [m for i, m in enumerate(messages) if i in ok]
        if done:
            client.delete_message_batch(
                QueueUrl=dead_letter,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        moved += len(done)
        if len(done) < len(messages):
            failed = sent.get("Failed", [])
            raise DeadLetterError(
                f"{len(failed)} message(s) could not be sent to {target}: {failed[:3]}"
            )
    return moved


def _receive(client: Any, url: str, visibility: int, count: int = 10) -> list[dict[str, Any]]:
    return client.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=count,
        WaitTimeSeconds=1,  # a long poll: a short one may miss messages on SQS
        VisibilityTimeout=visibility,
        MessageAttributeNames=["All"],
    ).get("Messages", [])


def _sendable(attributes: dict[str, Any]) -> dict[str, Any]:
    keep = ("DataType", "StringValue", "BinaryValue")
    return {
        k: {f: v[f] for f in keep if f in v}
        for k, v in attributes.items()
        if k not in ASIDE_ATTRIBUTES
    }
