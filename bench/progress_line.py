"""Benchmark: what the terminal progress line costs the flow's loop, per batch.

    python bench/progress_line.py            # 2,000 batches of 64 rows, on a pseudo-terminal
    python bench/progress_line.py --batches 500

The flow's loop calls the run summary's listener after each batch and Prefect logs two
lines per batch (the infer and write task runs). Both are timed on a pty, with and without
the progress line shown (with it, every log line is printed through the line's console,
above the line). Prints microseconds per batch for each case and their difference.
"""

from __future__ import annotations

import argparse
import logging
import os
import pty
import threading
import time

from prefect.logging.handlers import PrefectConsoleHandler

from infergraph.inference.progress import ProgressLine, RunFeedback
from infergraph.inference.reporting import RunSummary

ROW = {"uri": "a.png", "status": "ok", "class_id": 1, "category_name": "1", "label": "1"}


def drain(master: int, stop: threading.Event) -> None:
    """Read the terminal as a terminal would, so writes never block."""
    while not stop.is_set():
        try:
            os.read(master, 1 << 16)
        except OSError:
            return


def run(batches: int, rows: int, shown: bool) -> float:
    master, slave = pty.openpty()
    stop = threading.Event()
    reader = threading.Thread(target=drain, args=(master, stop), daemon=True)
    reader.start()
    stream = open(slave, "w", closefd=False)  # noqa: SIM115
    logger = logging.getLogger(f"bench.progress.{shown}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = PrefectConsoleHandler(stream=stream)
    logger.addHandler(handler)
    summary = RunSummary()
    line = ProgressLine(stream, total=batches * rows) if shown else None
    summary.listener = RunFeedback(logging.getLogger("bench.quiet"), line)
    batch = [ROW] * rows
    started = time.perf_counter()
    for i in range(batches):
        summary.add_rows(batch)
        logger.info("Task run 'infer-batch-%d' - Finished in state Completed()", i)
        logger.info("Task run 'write-results-%d' - Finished in state Completed()", i)
    if line is not None:
        line.close(summary)
    seconds = time.perf_counter() - started
    logger.removeHandler(handler)
    stop.set()
    stream.close()
    os.close(slave)
    os.close(master)
    return seconds / batches * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=64)
    args = parser.parse_args()
    os.environ.pop("CI", None)
    os.environ.setdefault("TERM", "xterm")
    run(50, args.rows, True)  # warm up imports
    plain = run(args.batches, args.rows, shown=False)
    shown = run(args.batches, args.rows, shown=True)
    print(f"{args.batches} batches of {args.rows} rows, 2 log lines each, on a pty")
    print(f"  without the progress line: {plain:8.0f} µs per batch")
    print(f"  with the progress line:    {shown:8.0f} µs per batch (+{shown - plain:.0f} µs)")


if __name__ == "__main__":
    main()
