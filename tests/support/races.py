"""Forcing a race: hold every caller of one AWS operation until all of them got its reply.

A botocore event hook on the real client (no canned data): the call goes to the server as
usual, and only after its reply has been parsed does the calling thread wait at a barrier.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def held_after(
    client: Any,
    operation: str,
    matches: Callable[[dict[str, Any]], bool],
    parties: int,
    timeout: float = 60.0,
) -> Iterator[threading.Barrier]:
    """Until the block ends, ``parties`` calls of ``operation`` whose parameters ``matches``
    each wait, reply in hand, until all have theirs; a caller left alone fails after
    ``timeout`` with ``BrokenBarrierError``.
    """
    barrier = threading.Barrier(parties, timeout=timeout)
    service = client.meta.service_model.service_id.hyphenize()
    tag = uuid.uuid4().hex
    flag = f"held-{tag}"

    def mark(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if matches(params):
            context[flag] = True

    def hold(context: dict[str, Any], **_: Any) -> None:
        if context.get(flag):
            barrier.wait()

    events = client.meta.events
    names = (f"provide-client-params.{service}.{operation}", f"after-call.{service}.{operation}")
    events.register(names[0], mark, unique_id=f"mark-{tag}")
    events.register(names[1], hold, unique_id=f"hold-{tag}")
    try:
        yield barrier
    finally:
        events.unregister(names[0], unique_id=f"mark-{tag}")
        events.unregister(names[1], unique_id=f"hold-{tag}")
