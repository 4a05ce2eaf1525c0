"""Scenario runs: orchestration overhead per step, and a Parallel's speed-up.

    python bench/scenarios.py            # both, through the Prefect flow (temporary server)

1. A 20-step chain of no-op scripts: (run time − 20 × one no-op script's own time) / 20,
   through the flow and as plain Python (no Prefect). Goal ≤ 0.5 s per step on 2 cores.
2. A Parallel of 4 branches of 2-second sleeping steps against one such branch, through
   the flow's thread task runner. Goal < 1.5×.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infergraph.scenarios.run import run_scenario as run_plain
from infergraph.scenarios.store import LocalStore

STEPS = 20


def task(path: str, nxt: str | None) -> dict:
    state = {"Type": "Task", "Resource": "infergraph:step", "Parameters": {"notebook_path": path}}
    return {**state, **({"Next": nxt} if nxt else {"End": True})}


def chain_model(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "noop.py").write_text("pass\n")
    names = [f"step {i:02d}" for i in range(STEPS)]
    states = {
        n: task("noop.py", names[i + 1] if i + 1 < STEPS else None) for i, n in enumerate(names)
    }
    (root / "step-functions.json").write_text(json.dumps({"StartAt": names[0], "States": states}))
    return root


def parallel_model(root: Path, branches: int) -> Path:
    root.mkdir(parents=True)
    (root / "sleep.py").write_text("import time\ntime.sleep(2)\n")
    branch = lambda i: {"StartAt": f"sleep {i}", "States": {f"sleep {i}": task("sleep.py", None)}}  # noqa: E731
    definition = {
        "StartAt": "P",
        "States": {
            "P": {"Type": "Parallel", "Branches": [branch(i) for i in range(branches)], "End": True}
        },
    }
    (root / "step-functions.json").write_text(json.dumps(definition))
    return root


def script_seconds(model: Path, repeat: int = 10) -> float:
    """One no-op step's own time: the interpreter start of ``python noop.py '{}'``."""
    started = time.perf_counter()
    for _ in range(repeat):
        subprocess.run([sys.executable, str(model / "noop.py"), "{}"], check=True)
    return (time.perf_counter() - started) / repeat


def main() -> None:
    from flows.scenarios import run_scenario as run_flow

    work = Path(tempfile.mkdtemp(prefix="bench-scenarios-"))
    store = LocalStore(work / "store")
    for name in ("chain", "p1", "p4", "warm"):
        store.put(f"{name}/inputs/x.txt", b"x")
    chain = chain_model(work / "chain")
    p1, p4 = parallel_model(work / "p1", 1), parallel_model(work / "p4", 4)

    def flow(model: Path, scenario: str) -> float:
        started = time.perf_counter()
        run_flow(model=str(model), scenario=scenario, store=str(store.root), authorize=False)
        return time.perf_counter() - started

    flow(p1, "warm")  # start the temporary Prefect server outside the measurements
    own = script_seconds(chain)
    started = time.perf_counter()
    run_plain(chain, store, "chain", authorize=False)
    plain = time.perf_counter() - started
    through_flow = min(flow(chain, "chain") for _ in range(2))
    one, four = min(flow(p1, "p1") for _ in range(2)), min(flow(p4, "p4") for _ in range(2))
    print(f"no-op script's own time: {own * 1000:.0f} ms")
    print(
        f"{STEPS}-step chain: flow {through_flow:.2f} s → overhead "
        f"{(through_flow - STEPS * own) / STEPS * 1000:.0f} ms/step; plain Python {plain:.2f} s → "
        f"{(plain - STEPS * own) / STEPS * 1000:.0f} ms/step (goal ≤ 500)"
    )
    print(f"Parallel of 4 × 2 s: {four:.2f} s; one branch: {one:.2f} s; ratio {four / one:.2f} "
          "(goal < 1.5)")  # fmt: skip


if __name__ == "__main__":
    main()
