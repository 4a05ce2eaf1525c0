"""Where local runs go: a server kept by ``python -m infergraph.prefect_server``, else their own."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx

from infergraph.predictors.digits import SAMPLES
from tests.support.servers import REPO, free_port


def _images(tmp_path: Path, count: int) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for sample in sorted(SAMPLES.glob("*.png"))[:count]:
        shutil.copy(sample, images)
    return images


def _no_server_configured(tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API_")}
    return env | {
        "INFERGRAPH_HOME": str(tmp_path / "home"),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PYTHONPATH": str(REPO),
    }


def _run_cli(images: Path, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    run = subprocess.run(
        [sys.executable, str(REPO / "flows" / "inference.py"), str(images), *options],
        env=env,
        cwd=images.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def test_local_run_is_recorded_on_the_kept_server(tmp_path: Path) -> None:
    env = _no_server_configured(tmp_path)
    port = str(free_port())
    command = [sys.executable, "-m", "infergraph.prefect_server"]
    subprocess.run([*command, "start", "--port", port], env=env, check=True, timeout=240)
    try:
        run = _run_cli(_images(tmp_path, 5), env)
        api = f"http://127.0.0.1:{port}/api"
        assert f"using the local Prefect server at {api}" in run.stderr
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        assert [(r["name"], r["state_type"]) for r in runs] == [("images/ · 5 images", "COMPLETED")]
    finally:
        subprocess.run([*command, "stop", "--port", port], env=env, check=True, timeout=60)
    status = subprocess.run([*command, "status", "--port", port], env=env, timeout=60)
    assert status.returncode == 1


def test_with_no_server_a_run_starts_its_own_early_records_everything_and_stops_it(
    tmp_path: Path,
) -> None:
    """The temporary server is started as the script starts (not by Prefect, later), the run's
    flow and task runs reach its database before it stops, and nothing is left running."""
    import psutil

    env = _no_server_configured(tmp_path)
    prefect_home = tmp_path / "prefect"
    run = _run_cli(_images(tmp_path, 3), env, "--batch-size", "2")
    assert "starting a temporary Prefect server" in run.stderr
    assert "Starting temporary server on" not in run.stderr + run.stdout  # Prefect's own: not used
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        flows = db.execute("SELECT name, state_type FROM flow_run").fetchall()
        tasks = db.execute("SELECT state_type, count(*) FROM task_run GROUP BY 1").fetchall()
    assert flows == [("images/ · 3 images", "COMPLETED")]
    assert dict(tasks) == {"COMPLETED": 4}  # two batches, each inferred and written
    left = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            command = " ".join(process.info["cmdline"] or [])
            ours = process.environ().get("PREFECT_HOME") == str(prefect_home)
            if "prefect.server.api.server:create_app" in command and ours:
                left.append(process.pid)
    assert left == []
