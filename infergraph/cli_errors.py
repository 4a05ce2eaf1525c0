"""How every infergraph command fails: one or two lines naming the fix, no traceback.

A mistake a user can fix ends with ``error: what is wrong`` and ``fix: the
command that fixes it`` on stderr, exit code 2 (usage) or 1 (a runtime
failure); ``--debug`` anywhere on the command line adds the full traceback, and
a flow run's own log always keeps it. Commands raise :class:`UsageError` for
mistakes they spot themselves; :func:`explain` turns the exceptions of boto,
httpx and Prefect that stand for a known mistake into the same shape, so no
command repeats the translation.
"""

from __future__ import annotations

import argparse
import copy
import functools
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

DEBUG_FLAG = "--debug"
USAGE, RUNTIME = 2, 1
LOCAL_AWS_UP = "python -m infergraph.devstack up"
#: The environment variable ``--debug`` sets, so that subprocesses and late code see it.
DEBUG_ENV = "INFERGRAPH_DEBUG"

F = TypeVar("F", bound=Callable[..., int])


class UsageError(Exception):
    """A mistake the user can fix: ``message`` says what is wrong, ``fix`` how to fix it."""

    def __init__(self, message: str, fix: str | None = None, exit_code: int = USAGE) -> None:
        super().__init__(message)
        self.message, self.fix, self.exit_code = message, fix, exit_code

    def lines(self) -> list[str]:
        return [f"error: {_one_line(self.message)}"] + ([f"fix: {self.fix}"] if self.fix else [])


class UsageParser(argparse.ArgumentParser):
    """An argument parser whose mistakes end like every other: ``error:`` and ``fix:``.

    argparse's own ending reprints the whole usage block above the one line that
    matters; the fix line points at ``--help`` instead.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"error: {message}\nfix: see {self.prog} --help\n")


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def explain(exc: BaseException) -> UsageError:
    """The two-line form of ``exc`` (or of the first known exception it was raised from)."""
    for link in _chain(exc):
        if isinstance(link, UsageError):
            return link
        if _ours(link) and getattr(link, "fix", None):
            code = USAGE if isinstance(link, ValueError | LookupError) else RUNTIME
            return UsageError(getattr(link, "message", None) or str(link), link.fix, code)
        known = _known(link)
        if known is not None:
            return known
    if _ours(exc):  # the library's own errors already say what and where
        code = USAGE if isinstance(exc, ValueError | LookupError) else RUNTIME
        message = getattr(exc, "message", None) or str(exc)
        return UsageError(message, getattr(exc, "fix", None), code)
    return UsageError(f"{type(exc).__name__}: {exc}", f"run again with {DEBUG_FLAG}", RUNTIME)


def command(prefect: bool = True) -> Callable[[F], F]:
    """Decorate a CLI ``main``: ``--debug``, Prefect's settings, and the two-line errors.

    The wrapped function keeps its signature; ``--debug`` is taken out of its
    ``argv`` argument (or of ``sys.argv`` when that is None) before it parses it.
    With ``prefect``, it runs inside :func:`infergraph.local_prefect.local_settings`
    and the temporary Prefect server, if one was started, is shut down in order.
    """

    def decorate(main: F) -> F:
        signature = inspect.signature(main)

        @functools.wraps(main)
        def wrapper(*args: Any, **kwargs: Any) -> int:
            bound = signature.bind(*args, **kwargs)
            if "argv" in signature.parameters:
                argv = bound.arguments.get("argv")
                argv = list(sys.argv[1:] if argv is None else argv)
                if DEBUG_FLAG in argv:
                    os.environ[DEBUG_ENV] = "1"
                bound.arguments["argv"] = [a for a in argv if a != DEBUG_FLAG]
            return run(lambda: main(*bound.args, **bound.kwargs), prefect=prefect)

        return wrapper  # type: ignore[return-value]

    return decorate


def run(body: Callable[[], int], prefect: bool = True) -> int:
    """``body()``'s exit code; a known mistake becomes two lines on stderr and 2 (or 1)."""
    if prefect:
        import prefect as _  # noqa: F401  (configures the logging whose console is adjusted)
    hidden = [] if debugging() else hide_tracebacks()
    try:
        if not prefect:
            return body()
        from infergraph.local_prefect import local_settings, shutdown, temporary_servers

        before = temporary_servers()
        try:
            with local_settings():
                return body()
        finally:
            shutdown(keep=before)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        error = explain(exc)
        if debugging():
            traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
        for line in error.lines():
            print(line, file=sys.stderr)
        return error.exit_code
    finally:
        for handler, formatter in hidden:  # as it was, for whoever runs next in this process
            handler.setFormatter(formatter)


def hide_tracebacks() -> list[tuple[logging.Handler, logging.Formatter | None]]:
    """Console log records show their message but not their traceback (the API log keeps it).

    Returns each changed handler with its formatter before, to put back.
    """
    changed = []
    for handler in _console_handlers():
        if not isinstance(handler.formatter, _NoTraceback):
            changed.append((handler, handler.formatter))
            handler.setFormatter(_NoTraceback(handler.formatter))
    return changed


class _NoTraceback(logging.Formatter):
    """Formats a copy of the record without its exception, leaving the record to other handlers."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text:
            record = copy.copy(record)
            record.exc_info = record.exc_text = None
        return self.inner.format(record)


def _console_handlers() -> Iterator[logging.Handler]:
    loggers = [logging.getLogger()] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("prefect") and isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) or "Console" in type(handler).__name__:
                yield handler


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _ours(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("infergraph", "blocks")


def _known(exc: BaseException) -> UsageError | None:
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("botocore"):
        return _boto(exc, name)
    if module.startswith(("httpx", "httpcore")) and "Connect" in name:
        url = _prefect_api_url()
        if url:
            from infergraph.local_prefect import NoPrefectServer

            down = NoPrefectServer(url)
            return UsageError(down.message, down.fix, RUNTIME)
    if name == "ObjectNotFound" and module.startswith("prefect"):
        return UsageError(
            f"not found on the Prefect server: {exc}", "check the name (prefect block ls)"
        )
    return None


def _boto(exc: BaseException, name: str) -> UsageError | None:
    if name == "NoCredentialsError":
        return UsageError(
            "no AWS credentials: give an AwsCredentials block or configure AWS",
            f"pass --aws-credentials local-aws (local AWS: {LOCAL_AWS_UP}), "
            "or `aws configure` for real AWS",
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError"):
        url = str(getattr(exc, "kwargs", {}).get("endpoint_url", ""))
        if "127.0.0.1" in url or "localhost" in url:
            return UsageError(
                f"local AWS is not running (nothing answers at {url})", LOCAL_AWS_UP, RUNTIME
            )
        return UsageError(
            f"cannot reach AWS at {url} (no network, or the wrong region?)",
            f"for local AWS: {LOCAL_AWS_UP} and pass --aws-credentials local-aws",
            RUNTIME,
        )
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    if code == "NoSuchBucket":
        bucket = error.get("BucketName") or ""
        return no_such_bucket(bucket)
    if code in (
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
    ):
        return UsageError(
            f"AWS refused the credentials ({code})",
            "pass --aws-credentials local-aws for local AWS, or fix the AwsCredentials block",
        )
    if code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
        return UsageError(
            f"the SQS queue does not exist: {error.get('Message', '')}",
            f"check the queue block's queue_url (local AWS: {LOCAL_AWS_UP})",
        )
    if code == "ResourceNotFoundException":
        return UsageError(
            f"AWS resource not found: {error.get('Message', '')}",
            f"check the table or topic name (local AWS: {LOCAL_AWS_UP} creates them)",
        )
    return None


def no_such_bucket(bucket: str) -> UsageError:
    return UsageError(
        f"S3 bucket {bucket!r} does not exist",
        f"check the name (`aws s3 ls` lists yours; {LOCAL_AWS_UP} creates the local ones)",
    )


def _prefect_api_url() -> str | None:
    try:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    except Exception:
        return None


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."
