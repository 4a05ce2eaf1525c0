"""S3 uploads into Prefect events: the bridge that lets an upload start a deployment.

A self-hosted Prefect server has no webhooks, so S3 sends its ``ObjectCreated``
notifications to an SQS queue and this bridge turns each created object into one
``aws.s3.object.created`` event; deployment triggers then start the flows::

    triggers:
      - type: event
        expect: ["aws.s3.object.created"]
        match: {prefect.resource.id: "aws.s3.bucket.*", aws.s3.object.kind: jobspec}
        parameters:
          bucket: "{{ event.resource['aws.s3.bucket'] }}"
          key: "{{ event.payload.key }}"

The event: resource ``aws.s3.bucket.<bucket>`` with labels ``aws.s3.bucket`` and
``aws.s3.object.kind`` (``jobspec`` for ``*.rdfoxjob.json``, ``reasoner-log`` for
``*/rdfox.log``, ``image`` for .png/.jpg/.jpeg/.webp/.bmp/.tif/.tiff/.gif, else
``other``: trigger ``match`` sees labels, not the payload); payload ``key`` (URL-decoded),
``size``, ``etag``, ``event_name`` (``ObjectCreated:Put``...), ``event_time``.

Run it either way, against the queue named by an ``SqsQueue`` block:

- as a service (low latency): ``python -m infergraph.events --queue s3-events``
  long-polls until SIGTERM/SIGINT (``--once`` drains and exits, status 1 if any
  message's events were not accepted). It needs ``PREFECT_API_URL`` (and
  ``PREFECT_API_AUTH_STRING`` or ``PREFECT_API_KEY`` where the server requires them).
  Run one per queue, or several: SQS hands each message to one of them.
- as the ``s3-events-bridge`` flow on a schedule: it drains what is waiting and
  returns counts; the run fails when some message's events were not accepted.

A message is deleted only after the Prefect API accepted its events (``POST
/api/events`` answered 204); otherwise it stays on the queue, visible again after
the block's ``retry_delay_seconds``, and after ``maxReceiveCount`` refusals the
queue's redrive policy moves it to the dead-letter queue. While the API is down the
service stops receiving and waits for it, so no message burns its receives. Test
events (``s3:TestEvent``) and other event names are deleted; a body that is not an
S3 notification is moved to the dead-letter queue with the reason attached. Event
ids are fixed per S3 event (sequencer, else ETag and time), and the server skips an
id it has seen in the last 30 minutes, so a redelivered message starts no second run.

Setting up S3 (real AWS): give the queue a policy that lets ``s3.amazonaws.com`` send
from the bucket's ARN, then ``aws s3api put-bucket-notification-configuration`` with
a ``QueueConfigurations`` entry for ``s3:ObjectCreated:*`` (one per suffix filter if
you want to bridge only some keys). S3 → SNS → SQS fan-out works too: the SNS envelope
is unwrapped (raw message delivery on or off).

The EventBridge alternative: turn on ``EventBridgeConfiguration`` for the bucket and
add an EventBridge rule (``source: ["aws.s3"], detail-type: ["Object Created"]``,
optionally filtered on ``detail.object.key`` with prefix/suffix patterns) whose target
is the same SQS queue (its policy must let ``events.amazonaws.com`` send, conditioned
on the rule's ARN). The bridge reads EventBridge's event shape too and emits the same
Prefect events (EventBridge keys arrive unencoded; ``detail.reason`` ``PutObject``
becomes ``ObjectCreated:Put``). Rules add content filtering, several targets per
event, archive and replay. With Prefect Cloud the queue and the bridge can go: an
EventBridge API destination posts each event to a Prefect Cloud webhook whose
template emits ``aws.s3.object.created`` with the same resource and payload fields
(``{{ body.detail.bucket.name }}``, ``{{ body.detail.object.key }}``, ...); use one
rule per kind (a suffix pattern on the key) and one webhook per rule with the kind
written into its template. EventBridge retries a failed delivery for up to 24 hours,
then hands it to the dead-letter queue you configure on the target.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

import httpx
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL

from blocks.sqs import MAX_WAIT_TIME, SqsQueue
from infergraph.blockref import resolve_block
from infergraph.cli_errors import UsageParser, command
from infergraph.events.bridge import BridgeCounts, S3EventQueue, Stopper, bridge_s3_events
from infergraph.inference.sources.base import SourceError
from infergraph.logs import run_logger

DEFAULT_QUEUE = "s3-events"


class BridgeError(RuntimeError):
    """The bridge cannot run, or some messages' events were not accepted."""


def run_bridge(
    queue: SqsQueue | str = DEFAULT_QUEUE,
    max_messages: int = 10,
    idle_polls: int = 1,
    message_limit: int | None = None,
    wait_seconds: int | None = None,
    stopper: Stopper | None = None,
) -> BridgeCounts:
    """Bridge the queue's notifications to the Prefect API of ``PREFECT_API_URL``."""
    if not PREFECT_API_URL.value():
        raise BridgeError(
            "PREFECT_API_URL is not set: the bridge sends events to the Prefect server your "
            "deployments live on (e.g. PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )
    if wait_seconds is not None and not 0 <= wait_seconds <= MAX_WAIT_TIME:
        raise BridgeError(f"wait_seconds must be 0-{MAX_WAIT_TIME}, got {wait_seconds}")
    try:
        block = resolve_block(queue, SqsQueue)
    except httpx.HTTPError as exc:
        raise BridgeError(
            f"cannot load SqsQueue block {queue!r} from the Prefect API at "
            f"{PREFECT_API_URL.value()}: {type(exc).__name__}: {exc}"
        ) from exc
    name = queue if isinstance(queue, str) else None
    events_queue = S3EventQueue(block, name=name, max_messages=max_messages)
    run_logger(__name__).info(
        "bridging %s to the Prefect API at %s", events_queue.description, PREFECT_API_URL.value()
    )
    with get_client(sync_client=True) as client:
        return bridge_s3_events(
            events_queue,
            client,
            idle_polls=idle_polls,
            message_limit=message_limit,
            wait_seconds=wait_seconds,
            stopper=stopper,
        )


def counts_text(counts: BridgeCounts) -> str:
    return ", ".join(f"{name} {value}" for name, value in counts.as_dict().items())


# -- command line --------------------------------------------------------------------------------


@command()
def main(argv: list[str] | None = None) -> int:
    """The long-running service: bridge until SIGTERM/SIGINT (``--once``: drain and exit)."""
    parser = UsageParser(
        prog="python -m infergraph.events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--queue", default=DEFAULT_QUEUE, help="SqsQueue block name")
    parser.add_argument("--once", action="store_true", help="drain the queue and exit")
    parser.add_argument("--max-messages", type=int, default=10, help="messages per receive")
    parser.add_argument("--wait-seconds", type=int, default=None, help="long-poll wait (0-20)")
    parser.add_argument(
        "--message-limit", type=int, default=None, help="stop after this many messages"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,  # Prefect's own root configuration would hide INFO
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API call otherwise
    log = logging.getLogger("s3-events-bridge")
    stopper = Stopper()
    stopper.install()
    try:
        counts = run_bridge(
            args.queue,
            max_messages=args.max_messages,
            idle_polls=1 if args.once else 0,
            message_limit=args.message_limit,
            wait_seconds=args.wait_seconds,
            stopper=stopper,
        )
    except (BridgeError, SourceError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    log.info("stopped: %s", counts_text(counts))
    print(json.dumps(counts.as_dict()))
    return 1 if counts.failed else 0


if __name__ == "__main__":
    sys.exit(main())
