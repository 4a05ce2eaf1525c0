"""What every benchmark script needs around its measurements: the emulator and child runs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(script: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``script --child args`` in a fresh interpreter; the JSON line it prints last.

    A fresh process per measurement, so no run inherits another's warm caches or
    peak memory.
    """
    done = subprocess.run(
        [sys.executable, script, "--child", *args], stdout=subprocess.PIPE, env=env, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {args} failed with code {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])
