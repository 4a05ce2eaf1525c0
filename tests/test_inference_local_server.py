"""A server kept by ``python -m infergraph.prefect_server`` is where local runs go."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from infergraph.predictors.digits import SAMPLES
from tests.support.servers import REPO, free_port


def test_local_run_is_recorded_on_the_kept_server(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for sample in sorted(SAMPLES.glob("*.png"))[:5]:
        shutil.copy(sample, images)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_")}
    env |= {
        "INFERGRAPH_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PYTHONPATH": str(REPO),
    }
    port = str(free_port())
    command = [sys.executable, "-m", "infergraph.prefect_server"]
    subprocess.run([*command, "start", "--port", port], env=env, check=True, timeout=240)
    try:
        run = subprocess.run(
            [sys.executable, str(REPO / "flows" / "inference.py"), str(images)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        api = f"http://127.0.0.1:{port}/api"
        assert f"using the local Prefect server at {api}" in run.stderr
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert [(r["name"], r["state_type"]) for r in runs] == [("images/ · 5 images", "COMPLETED")]
    finally:
        subprocess.run([*command, "stop", "--port", port], env=env, check=True, timeout=60)
    status = subprocess.run([*command, "status", "--port", port], env=env, timeout=60)
    assert status.returncode == 1
