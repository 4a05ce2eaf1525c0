"""Scenario runs as plain Python (no Prefect): real notebooks and scripts, on a local folder
store and on S3 (moto in server mode); bad inputs; the one-run-per-scenario lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from infergraph.scenarios.asl import DefinitionError
from infergraph.scenarios.lock import LOCK_NAME, ScenarioBusy, acquire, lock_key
from infergraph.scenarios.model import load_model
from infergraph.scenarios.run import ScenarioError, ScenarioFailed, run_scenario
from infergraph.scenarios.store import LocalStore, S3Store, ScenarioStore
from tests.support.scenarios import (
    HELPERS,
    NOTEBOOK_1,
    NOTEBOOK_2,
    reference_definition,
    reference_task,
    write_model,
    write_notebook,
)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ScenarioStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    creds = request.getfixturevalue("aws")
    S3Store("s3://models", creds).client.create_bucket(Bucket="models")
    return S3Store("s3://models", creds)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def reference_model(root: Path) -> Path:
    definition = reference_definition(
        [("STEP 1", "notebooks/A10_STEP_1.ipynb"), ("STEP 2", "notebooks/sub/A20_STEP_2.ipynb")]
    )
    write_model(root, definition, {"helpers.py": HELPERS})
    write_notebook(root / "notebooks/A10_STEP_1.ipynb", NOTEBOOK_1)
    write_notebook(root / "notebooks/sub/A20_STEP_2.ipynb", NOTEBOOK_2)
    return root


def script_model(root: Path, scripts: dict[str, str], **state_extra: object) -> Path:
    """Authorization, then one reference-shaped Task per script, in order."""
    names = list(scripts)
    definition = reference_definition([(n, f"steps/{n}.py") for n in names])
    for name in names:
        definition["States"][name].update(state_extra)
    return write_model(root, definition, {f"steps/{n}.py": s for n, s in scripts.items()})


def seed(store: ScenarioStore, scenario: str = "base", xs: tuple[int, ...] = (1, 2, 3)) -> None:
    store.put(f"{scenario}/inputs/params.json", json.dumps({"xs": list(xs)}).encode())


def status_of(store: ScenarioStore, scenario: str = "base") -> dict:
    return json.loads(store.get(f"{scenario}/status.json"))


def test_reference_shape_runs_unchanged(store: ScenarioStore, tmp_path: Path) -> None:
    model = reference_model(tmp_path / "model")
    seed(store)
    status = run_scenario(
        model, store, "base", '{"scale": 10}', caller="bo@example.com", metadata={"team": "t"}
    )
    assert status["state"] == "COMPLETED"
    assert [s["state"] for s in status["steps"]] == ["Authorization", "STEP 1", "STEP 2"]
    assert json.loads(store.get("base/outputs/total.json")) == {"total": 60}
    assert store.get("base/outputs/report.csv").decode() == "total\n60\n"
    log = store.get("base/logs/STEP 1.txt").decode()
    assert "Error: a word in the output does not fail a step" in log
    assert "end_of_notebook" in store.get("base/logs/STEP 2.txt").decode()
    meta = store.metadata("base/outputs/report.csv")
    assert meta["user-email"] == "bo@example.com" and meta["team"] == "t"
    assert meta["step"] == "STEP 2"
    # Inputs are not re-uploaded (unchanged), the lock is gone, status is final.
    assert "base/inputs/params.json" not in status["outcomes"][0]["outputs"]
    assert not [k for k in store.keys("base/") if k.endswith(LOCK_NAME)]
    assert status_of(store)["state"] == "COMPLETED"


def test_failing_step_keeps_log_stops_chain_and_marks_status(
    store: ScenarioStore, tmp_path: Path
) -> None:
    model = script_model(
        tmp_path / "model",
        {
            "first": "print('first ran')",
            "breaks": "import sys\nprint('about to fail', flush=True)\nsys.exit(3)",
            "never": "open('../outputs_never.txt', 'w').write('x')",
        },
    )
    seed(store)
    with pytest.raises(ScenarioFailed, match="exited with code 3"):
        run_scenario(model, store, "base", caller="ann@example.com")
    assert "about to fail" in store.get("base/logs/breaks.txt").decode()
    assert "exited with code 3" in store.get("base/logs/breaks.txt").decode()
    status = status_of(store)
    assert status["state"] == "FAILED" and "breaks" in status["error"]
    assert [s["state"] for s in status["steps"]] == ["Authorization", "first", "breaks"]
    assert not [k for k in store.keys("base/") if "never" in k]


def test_hanging_step_is_killed_at_its_timeout_with_its_children(
    local_store: LocalStore, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    hang = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('working...', flush=True)\ntime.sleep(300)\n"
    )
    model = script_model(tmp_path / "model", {"hang": hang}, TimeoutSeconds=3)
    seed(local_store)
    with pytest.raises(ScenarioFailed, match="timeout"):
        run_scenario(model, local_store, "base", caller="ann@example.com")
    log = local_store.get("base/logs/hang.txt").decode()
    assert "working..." in log and "killed at its 3 s timeout" in log
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"


def test_writes_outside_the_work_folder_are_not_uploaded(
    local_store: LocalStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    script = (
        "import os\n"
        f"open({str(outside)!r}, 'w').write('secret')\n"
        "os.makedirs('../outputs', exist_ok=True)\n"
        f"os.symlink({str(outside)!r}, '../outputs/link.txt')\n"
        "open('../outputs/fine.txt', 'w').write('ok')\n"
    )
    model = script_model(tmp_path / "model", {"escape": script})
    seed(local_store)
    status = run_scenario(model, local_store, "base", caller="ann@example.com")
    keys = local_store.keys("base/")
    assert "base/outputs/fine.txt" in keys and "base/outputs/link.txt" not in keys
    assert any("link.txt" in s for s in status["outcomes"][0]["skipped"])


def test_steps_yaml_with_when_parallel_and_retry(local_store: LocalStore, tmp_path: Path) -> None:
    root = tmp_path / "model"
    flaky = (  # fails on its first attempt only: a counter outside the work folder
        "import json, pathlib, sys\np = pathlib.Path(json.loads(sys.argv[1])['counter'])\n"
        "n = int(p.read_text()) if p.exists() else 0\np.write_text(str(n + 1))\n"
        "sys.exit(0 if n >= 1 else 1)\n"
    )
    files = {
        "a.py": "open('out_a.txt', 'w').write('a')",
        "b.py": "open('out_b.txt', 'w').write('b')",
        "c.py": "open('out_c.txt', 'w').write('c')",
        "skipped.py": "open('out_skipped.txt', 'w').write('s')",
        "flaky.py": flaky,
        "steps.yaml": (
            "steps:\n  - path: a.py\n  - parallel:\n      - {path: b.py}\n      - {path: c.py}\n"
            "  - {path: skipped.py, when: {path: $.launcher_arg.extra, equals: true}}\n"
            "  - {path: flaky.py, retry: 2, timeout: 30}\n"
        ),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    seed(local_store)
    slept: list[float] = []
    status = run_scenario(
        root, local_store, "base", {"counter": str(tmp_path / "count")}, authorize=False,
        sleep=slept.append,
    )  # fmt: skip
    keys = local_store.keys("base/")
    assert {"base/out_a.txt", "base/out_b.txt", "base/out_c.txt"} <= set(keys)
    assert "base/out_skipped.txt" not in keys
    assert slept == [2] and status["retries"] == [("flaky", 1, 2)]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no scenario", "scenario 'nope' does not exist"),
        ("bad launcher_arg", "launcher_arg is not JSON"),
        ("bad notebook", "notebook 'notebooks/bad.ipynb' is not valid JSON"),
        ("unknown resource", "no notebook_path in its Parameters(.Payload)"),
        ("denied", "caller 'eve@example.com' may not run model"),
        ("missing state", "Next 'STEP 9' is not a state"),
    ],
)
def test_bad_input_is_named(
    local_store: LocalStore, tmp_path: Path, case: str, message: str
) -> None:
    model = reference_model(tmp_path / "model")
    definition = json.loads((model / "step-functions.json").read_text())
    scenario, arg, caller = "base", "{}", "ann@example.com"
    if case == "no scenario":
        scenario = "nope"
    elif case == "bad launcher_arg":
        arg = "{scale: 10"
    elif case == "bad notebook":
        (model / "notebooks/bad.ipynb").write_text('{"cells": [')
        definition["States"]["STEP 2"] = reference_task("notebooks/bad.ipynb", None)
    elif case == "unknown resource":
        definition["States"]["STEP 2"] = {
            "Type": "Task", "Resource": "arn:aws:states:::sns:publish", "End": True,
        }  # fmt: skip
    elif case == "denied":
        caller = "eve@example.com"
    elif case == "missing state":
        definition["States"]["STEP 1"]["Next"] = "STEP 9"
    (model / "step-functions.json").write_text(json.dumps(definition))
    seed(local_store)
    with pytest.raises((DefinitionError, ScenarioError, ScenarioFailed)) as err:
        run_scenario(model, local_store, scenario, arg, caller=caller)
    assert message in str(err.value)
    assert "base/logs/STEP 1.txt" not in local_store.keys("base/")  # nothing ran


def test_definition_errors_are_all_listed_at_load(tmp_path: Path) -> None:
    model = reference_model(tmp_path / "model")
    definition = json.loads((model / "step-functions.json").read_text())
    definition["States"]["STEP 1"]["Next"] = "STEP 9"
    definition["States"]["STEP 2"]["Parameters"]["Payload"]["notebook_path"] = "missing.ipynb"
    definition["States"]["Orphan"] = {"Type": "Pass", "End": True}
    (model / "step-functions.json").write_text(json.dumps(definition))
    with pytest.raises(DefinitionError) as err:
        load_model(model)
    assert len(err.value.problems) == 4  # dangling Next, missing file, 2 unreachable
    assert "step-functions.json" in str(err.value)


def test_one_run_per_scenario_and_stale_locks(local_store: LocalStore) -> None:
    held = acquire(local_store, "base", None, "busy-run")
    with pytest.raises(ScenarioBusy, match="flow run busy-run"):
        acquire(local_store, "base", None, "second")
    other = acquire(local_store, "variant", None, "other")  # other scenarios run alongside
    other.release()
    held.release()
    again = acquire(local_store, "base", None, "third")  # released: free again
    again.release()
    # A lock left by a process that died (a killed run) is taken over.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"flow_run_name": "killed", "host": socket.gethostname(), "pid": dead.pid,
             "started": "2024-01-01T00:00:00+00:00"}  # fmt: skip
    local_store.put(lock_key("base"), json.dumps(stale).encode())
    acquire(local_store, "base", None, "after-kill").release()
    # An expired lock too, whichever host holds it.
    expired = {"host": "elsewhere", "pid": os.getpid(), "expires": "2000-01-01T00:00:00+00:00"}
    local_store.put(lock_key("base"), json.dumps(expired).encode())
    acquire(local_store, "base", None, "after-expiry").release()


def test_run_json_request_names_scenario_and_arguments(local_store: LocalStore) -> None:
    from infergraph.scenarios.run import read_request

    body = {"launcher_arg": {"params": {"mode": "compare"}}, "metadata": {"user_email": "a@b"}}
    local_store.put("bridge_closed/run.json", json.dumps(body).encode())
    request = read_request(local_store, "bridge_closed/run.json")
    assert request["scenario"] == "bridge_closed" and request["caller"] == "a@b"
    assert request["launcher_arg"] == {"params": {"mode": "compare"}}
    local_store.put("base/run.json", b"{not json")
    with pytest.raises(ScenarioError, match=r"run\.json is not JSON"):
        read_request(local_store, "base/run.json")
