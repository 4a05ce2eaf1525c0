"""End a finished command without the interpreter's teardown.

Once a run is done, its threads joined and every ``atexit`` handler run (Prefect's
event and log flushes among them), Python still frees torch's, Prefect's and
pydantic's modules one by one: about a second the user waits for nothing. A script
calls :func:`arm` first thing, so that its handler is the last ``atexit`` runs, and
leaves through :func:`finish`; the handler then flushes and ends the process. Any
other way out (an uncaught exception, Ctrl-C) tears down as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn

_code: list[int] = []


def arm() -> None:
    """Register the quick end before anything else registers its own exit handler."""
    atexit.register(_end)


def finish(code: int) -> NoReturn:
    """``sys.exit(code)``, ending without teardown once the exit handlers ran (if armed)."""
    _code[:] = [code]
    sys.exit(code)


def _end() -> None:
    if not _code:
        return
    import logging

    logging.shutdown()  # flushes files and streams (also if logging registered before us)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_code[0])
