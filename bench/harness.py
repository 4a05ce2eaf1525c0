"""What every benchmark script needs around its measurements: the emulator and child runs."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto in server mode on a free loopback port (real HTTP, as in the tests); (process, URL)."""
    from tests.conftest import free_port, wait_for_http  # the test harness's own helpers

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/moto-api/", proc=proc)
    except RuntimeError:
        proc.kill()
        raise
    return proc, url


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
