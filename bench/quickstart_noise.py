"""Count alarming lines in cold quick-start runs: ``python bench/quickstart_noise.py --runs 10``.

Each run is the README's quick start as a new user types it: a fresh interpreter,
no ``PREFECT_API_URL`` (so a temporary Prefect server starts and stops), in a
fresh folder. A successful run must print no ``ERROR`` and no ``Traceback``
line; the script prints one JSON line per run and a total, and exits 1 if any
run failed or printed one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALARMING = ("ERROR", "Traceback", "CancelledError", "Failed to send telemetry")


def one_run(home: Path, folder: Path, repo: Path = REPO) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DO_NOT_TRACK"))}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(repo))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(repo / "flows" / "inference.py")],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lines = (done.stdout + done.stderr).splitlines()
    alarming = [line for line in lines if any(word in line for word in ALARMING)]
    return {
        "exit": done.returncode,
        "seconds": round(time.monotonic() - began, 1),
        "lines": len(lines),
        "alarming": len(alarming),
        "first": alarming[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--fresh-home", action="store_true", help="a new PREFECT_HOME per run (database migrated)"
    )
    parser.add_argument(
        "--repo", type=Path, default=REPO, help="checkout to run (e.g. a baseline branch)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quickstart-noise-") as tmp:
        root = Path(tmp)
        results = []
        for i in range(args.runs):
            home = root / (f"prefect-{i}" if args.fresh_home else "prefect")
            folder = root / f"run-{i}"
            folder.mkdir()
            result = one_run(home, folder, args.repo)
            print(json.dumps({"run": i, **result}), flush=True)
            results.append(result)
    bad = [r for r in results if r["exit"] != 0 or r["alarming"]]
    print(
        json.dumps(
            {
                "runs": len(results),
                "failed": sum(r["exit"] != 0 for r in results),
                "runs_with_alarming_lines": len(bad),
                "alarming_lines": sum(int(r["alarming"]) for r in results),  # type: ignore[call-overload]
            }
        )
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
