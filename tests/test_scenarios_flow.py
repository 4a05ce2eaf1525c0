"""The run-scenario Prefect flow on the session's Prefect server (kept few: each flow run
costs seconds), and the zero-setup demo in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.scenarios import run_scenario
from infergraph.scenarios.lock import ScenarioBusy, acquire, lock_key
from infergraph.scenarios.store import LocalStore, S3Store
from tests.support.scenarios import (
    HELPERS,
    NOTEBOOK_1,
    NOTEBOOK_2,
    reference_definition,
    write_model,
    write_notebook,
)
from tests.support.servers import REPO

pytestmark = pytest.mark.usefixtures("prefect_server")


def task_run_names(flow_run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


def test_reference_model_on_s3_one_task_per_state(aws: Any, tmp_path: Path) -> None:
    model = tmp_path / "model"
    definition = reference_definition(
        [("STEP 1", "notebooks/A10_STEP_1.ipynb"), ("STEP 2", "notebooks/A20_STEP_2.ipynb")]
    )
    write_model(model, definition, {"helpers.py": HELPERS})
    write_notebook(model / "notebooks/A10_STEP_1.ipynb", NOTEBOOK_1)
    write_notebook(model / "notebooks/A20_STEP_2.ipynb", NOTEBOOK_2)
    aws.save("scenario-test-aws", overwrite=True)
    store = S3Store("s3://scenario-models", aws)
    store.client.create_bucket(Bucket="scenario-models")
    store.put("base/inputs/params.json", b'{"xs": [4, 5]}')

    status = run_scenario(
        model=str(model),
        scenario="base",
        launcher_arg={"scale": 2},
        store="s3://scenario-models",
        aws_credentials="scenario-test-aws",
        caller="ann@example.com",
    )
    assert status["state"] == "COMPLETED" and status["flow_run_id"]
    assert store.get("base/outputs/report.csv").decode() == "total\n18\n"
    assert task_run_names(status["flow_run_id"]) == ["Authorization", "STEP 1", "STEP 2"]
    stored = json.loads(store.get("base/status.json"))
    assert stored["flow_run_url"] and stored["state"] == "COMPLETED"


HOLD = (
    "import json, os, sys, time\narg = json.loads(sys.argv[1])\n"
    "while arg.get('hold') and not os.path.exists(arg['hold']):\n    time.sleep(0.05)\n"
    "open('../done.txt', 'w').write('done')\n"
)


def test_one_run_per_scenario_while_other_scenarios_run(tmp_path: Path) -> None:
    model = write_model(
        tmp_path / "model",
        reference_definition([("hold", "steps/hold.py")]),
        {"steps/hold.py": HOLD},
    )
    store = LocalStore(tmp_path / "store")
    for name in ("a", "b"):
        store.put(f"{name}/inputs/x.txt", b"x")
    release = tmp_path / "release"
    first: dict[str, Any] = {}

    def run_a() -> None:
        first["status"] = run_scenario(
            model=str(model), scenario="a", launcher_arg={"hold": str(release)},
            store=str(store.root), authorize=False,
        )  # fmt: skip

    thread = threading.Thread(target=run_a)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            keys = store.keys("a/")
            if "a/status.json" in keys and json.loads(store.get("a/status.json"))["step"] == "hold":
                break
            time.sleep(0.1)
        running = json.loads(store.get("a/status.json"))
        with pytest.raises(ScenarioBusy) as err:
            run_scenario(model=str(model), scenario="a", store=str(store.root), authorize=False)
        assert running["flow_run_name"] in str(err.value)
        assert running["flow_run_id"] in str(err.value)
        # Another scenario runs meanwhile, to the end.
        other = run_scenario(model=str(model), scenario="b", store=str(store.root), authorize=False)
        assert other["state"] == "COMPLETED" and thread.is_alive()
    finally:
        release.write_text("go")
        thread.join(60)
    assert first["status"]["state"] == "COMPLETED"


def test_lock_of_a_crashed_flow_run_is_cleared(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    store = LocalStore(tmp_path / "store")
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(run_scenario, state=Running())
    holder = {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "host": "worker-2"}
    store.put(lock_key("base"), json.dumps(holder).encode())
    with pytest.raises(ScenarioBusy, match=flow_run.name):
        acquire(store, "base", None, "next")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Crashed(), force=True)
    acquire(store, "base", None, "next").release()


def test_demo_runs_in_a_fresh_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    proc = subprocess.run(
        [sys.executable, "flows/scenarios.py", "demo", "--store", str(tmp_path / "store")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "scenario base: COMPLETED" in out and "scenario bridge_closed: COMPLETED" in out
    assert "B20 Incremental" in out and "B20 Assign " in out  # the Parallel, then the Default
    summary = (tmp_path / "store/base/outputs/summary.csv").read_text()
    assert summary.startswith("method,vehicle_hours") and "incremental" in summary
    assert (tmp_path / "store/bridge_closed/logs/C30 Report.txt").is_file()
