"""Feedback while a run works: a "first batch" log line and, on a terminal, one progress line.

The progress line (images done of the total when known, rate, ETA, errors) is for a person
watching ``python flows/inference.py``: it is drawn only when the CLI asked for it
(:func:`requested`), stderr is a terminal and ``CI`` is not set, so deployment and worker
runs, CI jobs and piped output stay quiet. It is a rich ``Live`` display, which keeps the
line below the log lines instead of tangling with them (rich's ``Progress`` adds a bar and
a 30-second speed window; the run's own rate and one line of text are all we need).
Prefect's console handler writes to the stream it captured at start-up, past Live's own
redirection, so while the line is shown that handler is pointed at Live's proxy too
(:func:`_log_lines_above`); drawn beside it unmanaged, log text lands on the line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from infergraph.inference.reporting import RunSummary, counted
from infergraph.inference.sources.base import Source

#: At most this many redraws a second (the final one always happens).
REDRAWS_PER_SECOND = 5

_requested = threading.Event()  # set by the CLI around its run
_shown: list[ProgressLine] = []  # lines drawn now, closed when the CLI's run ends


@contextlib.contextmanager
def requested() -> Iterator[None]:
    """Runs started inside (by the CLI, in this process) may show a progress line."""
    _requested.set()
    try:
        yield
    finally:
        _requested.clear()
        while _shown:  # a run that failed did not close its line
            _shown.pop().close()


def quiet_environment(stream: TextIO) -> bool:
    """Whether a redrawn line on ``stream`` would only be noise: a pipe, CI, a dumb terminal."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    dumb = os.environ.get("TERM", "") == "dumb"
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        tty = False
    return ci or dumb or not tty


def progress_text(images: int, total: int | None, rate: float, errors: int) -> str:
    """``120/360 images · 295.4 images/s · ETA 0:01 · 2 errors`` (no total: no ETA)."""
    done = f"{images}/{total} images" if total is not None else counted(images, "image")
    parts = [done, f"{rate:.1f} images/s"]
    if total is not None and rate > 0 and images < total:
        parts.append(f"ETA {_clock((total - images) / rate)}")
    parts.append(counted(errors, "error"))
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """One line on a terminal, redrawn at most ``REDRAWS_PER_SECOND`` times a second.

    Draws nothing at all when :func:`quiet_environment` says so for ``stream``.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        total: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.total = total
        self._clock = clock
        self._last: float | None = None
        self._live: Any = None
        self._restore: Callable[[], None] = lambda: None
        self.enabled = not quiet_environment(self.stream)

    def update(self, summary: RunSummary, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        if not force and self._last is not None and now - self._last < 1 / REDRAWS_PER_SECOND:
            return
        self._last = now
        rate = summary.images_per_second
        try:
            self._draw(progress_text(summary.images, self.total, rate, summary.errors))
        except Exception:  # e.g. the terminal went away: the run goes on without its line
            self.enabled = False
            self.close()

    def _draw(self, text: str) -> None:
        from rich.text import Text

        line = Text(text, no_wrap=True, overflow="ellipsis")
        if self._live is None:
            self._start()
        self._live.update(line, refresh=True)

    def _start(self) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(file=self.stream)
        # Redirection is done by _log_lines_above, which also reaches Prefect's handlers.
        self._live = Live(
            console=console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False
        )
        self._live.start()
        self._restore = _log_lines_above(console, self.stream)
        _shown.append(self)

    def close(self, summary: RunSummary | None = None) -> None:
        """Draw the final count (given ``summary``) and end the line: later output starts clean."""
        if summary is not None:
            self.update(summary, force=True)
        if self._live is None:
            return
        live, self._live = self._live, None
        with contextlib.suppress(ValueError):
            _shown.remove(self)
        self._restore()
        with contextlib.suppress(Exception):  # a terminal that went away cannot be tidied
            live.stop()  # leaves the last line, then a newline


def _log_lines_above(console: Any, stream: TextIO) -> Callable[[], None]:
    """Send what would go to the terminal through ``console`` while its line is shown.

    Prefect's console handlers and ``sys.stdout``/``sys.stderr`` (when they reach the
    same terminal) then write through a proxy that prints each finished line above
    the progress line. Returns the function that puts everything back.
    """
    from prefect.logging.handlers import PrefectConsoleHandler
    from rich.file_proxy import FileProxy

    undo: list[Callable[[], None]] = []
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = {
        id(h): h
        for logger in loggers
        if isinstance(logger, logging.Logger)
        for h in logger.handlers
        if isinstance(h, PrefectConsoleHandler) and _terminal(h.stream)
    }
    for handler in handlers.values():
        before = handler.console.file
        handler.console.file = _Unwrapped(FileProxy(console, before))
        undo.append(lambda h=handler, f=before: setattr(h.console, "file", f))
    for name in ("stdout", "stderr"):
        original = getattr(sys, name)
        if _terminal(original) and not isinstance(original, FileProxy):
            setattr(sys, name, FileProxy(console, original))
            undo.append(lambda n=name, f=original: setattr(sys, n, f))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


class _Unwrapped(io.TextIOBase):
    """A ``FileProxy`` another rich console writes through (it would unwrap a bare one)."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy

    def write(self, text: str) -> int:
        self._proxy.write(text)
        return len(text)

    def flush(self) -> None:
        self._proxy.flush()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._proxy.fileno()


def _terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class RunFeedback:
    """Told by the run summary after each batch's rows: logs the first batch, draws the line."""

    def __init__(self, log: Any, line: ProgressLine | None = None) -> None:
        self.log = log
        self.line = line
        self._first = True

    def __call__(self, summary: RunSummary) -> None:
        if self._first and summary.images:
            self._first = False
            self.log.info(
                "first batch done after %.1f s (%s)",
                summary.elapsed,
                counted(summary.images, "image"),
            )
        if self.line is not None:
            self.line.update(summary)

    def close(self, summary: RunSummary | None = None) -> None:
        """End the progress line (drawing the final count) before the run's last log lines."""
        if self.line is not None:
            self.line.close(summary)


def watch(source: Source, log: Any) -> RunFeedback:
    """The run summary's listener for a run of ``source``; a progress line when the CLI asked."""
    line = ProgressLine() if _requested.is_set() else None
    if line is not None and line.enabled:
        threading.Thread(target=_count, args=(source, line), name="count", daemon=True).start()
    return RunFeedback(log, line if line is not None and line.enabled else None)


def _count(source: Source, line: ProgressLine) -> None:
    """Learn the total in the background (a large folder takes a while to walk)."""
    with contextlib.suppress(Exception):
        line.total = source.count()
