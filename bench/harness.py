"""What every benchmark script needs around its measurements: the emulator and child runs."""

from __future__ import annotations

import json
import os
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


def credentials(endpoint: str) -> Any:
    """An AwsCredentials block for the emulator at ``endpoint`` (moto takes any key)."""
    from prefect_aws import AwsCredentials

    return AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": endpoint},
    )


def image_keys(prefix: str, count: int) -> list[str]:
    """The object keys benchmarks upload their ``count`` images under."""
    return [f"{prefix}img_{i:06d}.png" for i in range(count)]


def offline_emulator_environment() -> None:
    """No telemetry (no network here) and moto's placeholder keys, unless already set."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "testing")
