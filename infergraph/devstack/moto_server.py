"""moto's server, with DynamoDB writes as atomic as DynamoDB's: ``python -m`` this module.

moto's threaded server evaluates a ``ConditionExpression`` and then applies the write as
two unlocked steps, so two simultaneous conditional writes to one item can both succeed
(measured: 7 of 200 three-way races on moto 5.2.5), and ``SET n = n + :one`` can lose an
increment. Real DynamoDB applies each item's writes one at a time. What is correct only
because of conditional writes (notice claims, job transitions and ids, the requests
table) then failed in tests by chance: two SNS notices for one reasoning job. Handling one
DynamoDB request at a time restores the guarantee; DynamoDB has no long polls, so nothing
waits long behind another call, and the other services stay concurrent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

from moto.dynamodb.responses import DynamoHandler
from moto.server import main

_dynamodb = threading.Lock()


def serialised(call_action: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(call_action)
    def call(self: Any) -> Any:
        with _dynamodb:
            return call_action(self)

    return call


if __name__ == "__main__":
    DynamoHandler.call_action = serialised(DynamoHandler.call_action)  # type: ignore[method-assign]
    main()
