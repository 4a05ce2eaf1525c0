"""Which failures are worth retrying.

Retrying a corrupt image or a missing object only wastes time and hides the
error, so retries (of tasks, and of queue messages) are reserved for failures a
later attempt can fix: throttling, timeouts, dropped connections, 5xx replies.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
    }
)


def is_transient(exc: BaseException) -> bool:
    """True for failures that may succeed on a later attempt."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e) for e in exc.exceptions)
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code") in TRANSIENT_CODES or int(status or 0) >= 500
    if isinstance(
        exc,
        EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError,
    ):
        return True
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return False
    return isinstance(exc, TimeoutError | ConnectionError)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a task only when its exception is transient."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


def describe_aws_error(exc: BaseException) -> str:
    """``Code: Message`` of an AWS error (what a user can search for); else type and text."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code') or 'error'}: {error.get('Message') or exc}"
    return f"{type(exc).__name__}: {exc}"
