"""The zero-setup demo in a fresh process: synthetic session → PostgreSQL → flow → commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support.servers import REPO


def test_demo_in_a_fresh_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("INFERGRAPH_SESSIONS_DB", None)
    done = subprocess.run(
        [sys.executable, "flows/sessions.py", "demo"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=500,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "12 commands for session S7" in done.stdout
    assert re.search(r"table counts: sessions 1, images 5, objects \d+, commands 12", done.stdout)
    assert len(re.findall(r"pick \[[\d.]+, [\d.]+\] → drop \[[\d.]+, [\d.]+\]", done.stdout)) == 12
