"""The progress line: drawn on a real pseudo-terminal, silent on a pipe and in CI.

The renderer is driven through the run summary's listener with a hand-moved clock
(no timing); the CLI runs as a user would, once under a pty and once piped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.logging.handlers import PrefectConsoleHandler

from infergraph.inference.progress import ProgressLine, RunFeedback, progress_text, watch
from infergraph.inference.reporting import RunSummary
from infergraph.inference.sources.base import UriList
from infergraph.predictors.digits import SAMPLES
from tests.support.servers import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
OK = {"uri": "a.png", "status": "ok", "class_id": 1, "category_name": "1"}
FAILED = {"uri": "b.png", "status": "error", "error": "b.png: empty file"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal(monkeypatch) -> Iterator[tuple[int, int]]:
    """A pseudo-terminal 120 columns wide: (master, slave); not CI, not a dumb terminal."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def drain(master: int) -> str:
    """What the terminal has shown since the last drain."""
    out = b""
    while select.select([master], [], [], 0.2)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


def summary_since(seconds: float) -> RunSummary:
    return RunSummary(started=time.perf_counter() - seconds)


def test_the_text_says_done_of_total_rate_eta_and_errors() -> None:
    assert progress_text(50, 150, 0.5, 1) == "50/150 images · 0.5 images/s · ETA 3:20 · 1 error"
    assert progress_text(10, 7210, 1.0, 2).endswith("ETA 2:00:00 · 2 errors")
    # No total, no ETA.
    assert progress_text(3, None, 1.5, 0) == "3 images · 1.5 images/s · 0 errors"
    assert "ETA" not in progress_text(150, 150, 5.0, 0)


def test_on_a_terminal_one_line_is_redrawn_with_log_lines_above_it(terminal, request) -> None:
    master, slave = terminal
    stream = open(slave, "w", closefd=False)  # noqa: SIM115 (closed by the fixture)
    logger = logging.getLogger("test.progress.console")  # as Prefect's, set up before the run
    handler = PrefectConsoleHandler(stream=stream)
    logger.addHandler(handler)
    request.addfinalizer(lambda: logger.removeHandler(handler))
    clock = Clock()
    line = ProgressLine(stream, total=6, clock=clock)
    summary = summary_since(10)
    summary.listener = RunFeedback(logging.getLogger("test.progress"), line)

    summary.add_rows([OK, FAILED])
    shown = ANSI.sub("", drain(master))
    assert re.search(r"2/6 images · 0\.\d images/s · ETA 0:\d\d · 1 error$", shown), shown

    summary.add_rows([OK])  # the same instant: throttled, nothing drawn
    assert drain(master) == ""
    clock.now += 0.25
    summary.add_rows([OK])
    assert "4/6 images" in ANSI.sub("", drain(master))

    # A Prefect console log line goes above the progress line, which is drawn again below it.
    logger.warning("a log line while the progress line is shown")
    raw = drain(master)
    before, _, after = raw.partition("a log line while the progress line is shown")
    assert before.endswith("\r\x1b[2K"), repr(raw)  # the progress line was erased first
    assert "4/6 images" in ANSI.sub("", after)

    summary.add_rows([OK, OK])
    line.close(summary)  # the final count, then a newline and the cursor back
    raw = drain(master)
    assert "6/6 images" in ANSI.sub("", raw) and "ETA" not in raw
    assert raw.endswith("\r\n\x1b[?25h")
    assert handler.console.file is stream  # Prefect's handler writes straight to the terminal again


def test_quiet_on_a_pipe_in_ci_and_unless_the_cli_asked(terminal, monkeypatch) -> None:
    master, slave = terminal
    read_end, write_end = os.pipe()
    piped = open(write_end, "w")  # noqa: SIM115
    try:
        line = ProgressLine(piped, total=2, clock=Clock())
        line.update(summary_since(1), force=True)
        line.close(summary_since(1))
        piped.flush()
        assert not line.enabled and not select.select([read_end], [], [], 0)[0]
    finally:
        piped.close()
        os.close(read_end)

    monkeypatch.setenv("CI", "true")
    on_tty = open(slave, "w", closefd=False)  # noqa: SIM115
    line = ProgressLine(on_tty, total=2, clock=Clock())
    line.update(summary_since(1), force=True)
    line.close(summary_since(1))
    assert not line.enabled and drain(master) == ""

    monkeypatch.delenv("CI")  # not asked by the CLI (a deployment's run): no line at all
    assert watch(UriList(["a.png"]), logging.getLogger("test")).line is None


def test_a_terminal_that_goes_away_does_not_stop_the_run(terminal, request) -> None:
    master, slave = terminal
    stream = open(slave, "w", closefd=False)  # noqa: SIM115
    handler = PrefectConsoleHandler(stream=stream)
    logging.getLogger("test.progress.gone").addHandler(handler)
    request.addfinalizer(lambda: logging.getLogger("test.progress.gone").removeHandler(handler))
    clock = Clock()
    summary = summary_since(1)
    line = ProgressLine(stream, total=9, clock=clock)
    summary.listener = RunFeedback(logging.getLogger("test.progress"), line)
    summary.add_rows([OK])
    assert "1/9 images" in ANSI.sub("", drain(master))
    os.close(master)  # the terminal (an ssh session, say) is gone: writes now fail
    clock.now += 1
    summary.add_rows([OK])  # no exception: the run goes on
    line.close(summary)
    assert summary.images == 2
    assert handler.console.file is stream  # and Prefect's handler is put back


def run_on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """``python flows/inference.py args`` writing to a pty: its exit code and screen text."""
    command = [sys.executable, str(REPO / "flows" / "inference.py"), *args]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError as exc:  # EIO: the child closed the terminal
                    if exc.errno != errno.EIO:
                        raise
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, out.decode("utf-8", "replace")


def test_the_cli_on_a_terminal_shows_the_line_up_to_the_final_count(
    prefect_server, tmp_path: Path
) -> None:
    """(On a pipe the same run shows none of it: the CLI test in test_inference_flow.py.)"""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "CI"}
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PYTHONPATH=str(REPO),
        INFERGRAPH_HOME=str(tmp_path / "home"),
        TERM="xterm",
    )
    folder = tmp_path / "five"  # a folder: the total comes from walking it
    folder.mkdir()
    for image in sorted(SAMPLES.glob("*.png"))[:5]:
        shutil.copy(image, folder / image.name)
    args = [str(folder), "--batch-size", "2", "--sink", str(tmp_path / "out.jsonl")]

    code, shown = run_on_a_terminal(args, env, tmp_path)
    text = ANSI.sub("", shown)
    assert code == 0, text[-3000:]
    [*_, final] = re.findall(r"(\d+)/5 images · [\d.]+ images/s", text)
    assert final == "5", text[-3000:]
    assert "model loaded: infergraph.predictors.digits:DigitsClassifier" in text
    assert "first batch done after " in text
    # The line ends before the run's last log line, which starts a line of its own.
    assert re.search(r"0 errors\s*\n\S+ \| INFO\s+\| Flow run '.*' - done: 5 images", text), text
