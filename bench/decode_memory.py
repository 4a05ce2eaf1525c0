"""Benchmark: peak memory of decoding small-file, large-canvas 16-bit PNGs.

    python bench/decode_memory.py                       # all cases, this checkout
    python bench/decode_memory.py --repo /tmp/before    # the same cases on another checkout
    python bench/decode_memory.py --cases decode,api1   # some cases only

Each case runs in a fresh process (the API in its own server process) and reports
that process's peak RSS above its RSS just before the work: the kernel's high-water
mark (VmHWM) is reset through ``/proc/PID/clear_refs`` first, so start-up and model
loading do not count. The ratio is against the H×W×3 uint8 image ``decode_image``
returns for one input. Cases:

- ``decode``: ``decode_image`` of one 4470×4470 16-bit grey PNG;
- ``api1``: that PNG through ``POST /predict`` of ``python -m infergraph.api``;
- ``api32``: 32 copies of it in one ``POST /predict/batch``;
- ``flow4``: four 7000×7000 16-bit grey PNGs through ``run_batch`` (the batch flow's
  ``infer-batch`` task body) with the shipped digits predictor.

``--budget-mb`` sets the per-process decode budget (``INFERGRAPH_DECODE_BUDGET_MB``
and ``INFERGRAPH_API_DECODE_BUDGET_MB``) in every measured process.
Prints a table and writes JSON (default ``bench/out/decode_memory.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MIB = 1024 * 1024
PASSWORD = "bench-password"
CASES = ("decode", "api1", "api32", "flow4")


def make_png(path: Path, side: int) -> Path:
    """A 16-bit grey PNG: a smooth ramp (compresses to tens of KB) with a dark square."""
    if not path.exists():
        ramp = np.linspace(0, 65535, side, dtype=np.uint16)
        pixels = np.broadcast_to(ramp, (side, side)).copy()
        pixels[side // 3 : side // 2, side // 3 : side // 2] = 1000
        Image.fromarray(pixels).save(path, "PNG", optimize=True)
    return path


def status(pid: int | str) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int | str) -> int:
    """Reset the process's peak RSS to its current RSS (Linux ≥ 4.0); return that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status(pid)["VmRSS"]


IN_PROCESS = r"""
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from pathlib import Path
case, files = sys.argv[2], [Path(p) for p in sys.argv[3:]]
if case == "decode":
    from infergraph.inference.decode import decode_image
    data = files[0].read_bytes()
    run = lambda: decode_image(data, str(files[0])).shape
else:
    from infergraph.inference.batch import run_batch
    from infergraph.inference.fetch import FetchOptions
    from infergraph.inference.records import ImageRecord
    from infergraph.predictors.loading import PredictorSpec, get_predictor
    predictor = get_predictor(PredictorSpec(path="infergraph.predictors.digits:DigitsClassifier"))
    records = [ImageRecord(uri=str(p)) for p in files]
    run = lambda: [r["status"] for r in run_batch(records, predictor, FetchOptions()).rows]
Path("/proc/self/clear_refs").write_text("5")
def mem():
    text = Path("/proc/self/status").read_text().splitlines()
    return {l.split(":")[0]: int(l.split()[1]) * 1024 for l in text if l.startswith("Vm")}
before = mem()["VmRSS"]
outcome = run()
print(json.dumps({"before": before, "peak": mem()["VmHWM"], "outcome": str(outcome)}))
"""


def in_process(repo: Path, case: str, files: list[Path]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(repo), case, *map(str, files)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{case} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def through_api(repo: Path, root: Path, files: list[Path]) -> dict[str, Any]:
    """Start the API from ``repo``, send ``files`` in one request, return its peak RSS."""
    sys.path.insert(0, str(repo))
    from infergraph.api.users import hash_password

    port = _free_port()
    users = root / "users.htpasswd"
    users.write_text(f"bench:{hash_password(PASSWORD, rounds=4)}\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(repo),
        "PREFECT_HOME": str(root / "prefect"),
        "INFERGRAPH_API_SIGNING_KEY": secrets.token_urlsafe(48),
        "INFERGRAPH_API_USERS_FILE": str(users),
        "INFERGRAPH_API_PORT": str(port),
        "INFERGRAPH_API_REQUEST_LOG": str(root / "requests.jsonl"),
    }
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "infergraph.api", "--log-level", "warning"],
            cwd=repo,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError((root / "server.log").read_text())
            try:
                httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        token = httpx.post(f"{url}/token", data={"username": "bench", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        before = reset_peak(proc.pid)
        contents = [(f"{i}-{p.name}", p.read_bytes()) for i, p in enumerate(files)]
        if len(files) == 1:
            response = httpx.post(
                f"{url}/predict", files={"file": contents[0]}, headers=headers, timeout=600
            )
            outcome = response.status_code
        else:
            response = httpx.post(
                f"{url}/predict/batch",
                files=[("files", c) for c in contents],
                headers=headers,
                timeout=600,
            )
            body = response.json()
            outcome = f"{response.status_code}: {body.get('succeeded')}/{body.get('count')}"
        return {"before": before, "peak": status(proc.pid)["VmHWM"], "outcome": str(outcome)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code is measured")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {CASES}")
    parser.add_argument("--images", type=Path, default=Path(tempfile.gettempdir()) / "decode-mem")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "decode_memory.json")
    parser.add_argument("--budget-mb", type=float, help="decode budget (default: the code's)")
    args = parser.parse_args()
    if args.budget_mb is not None:
        os.environ["INFERGRAPH_DECODE_BUDGET_MB"] = f"{args.budget_mb:g}"
        os.environ["INFERGRAPH_API_DECODE_BUDGET_MB"] = f"{args.budget_mb:g}"
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; choose from {', '.join(CASES)}")
    args.images.mkdir(parents=True, exist_ok=True)
    small = make_png(args.images / "grey16-4470.png", 4470)
    large = make_png(args.images / "grey16-7000.png", 7000) if "flow4" in cases else small
    results: dict[str, Any] = {
        "repo": str(args.repo.resolve()),
        "budget_mb": args.budget_mb,
        "cases": {},
    }
    budget = f"decode budget {args.budget_mb:g} MiB" if args.budget_mb else "default budget"
    print(f"code: {args.repo.resolve()}; {budget}; {small.name}: {small.stat().st_size:,} bytes")
    print(f"{'case':8} {'image MiB':>10} {'peak-before MiB':>16} {'ratio':>6}  outcome")
    for case in cases:
        if case in ("decode", "flow4"):
            files = [small] if case == "decode" else [large] * 4
            measured = in_process(args.repo, case, files)
        else:
            with tempfile.TemporaryDirectory() as root:
                measured = through_api(
                    args.repo, Path(root), [small] * (1 if case == "api1" else 32)
                )
        side = 7000 if case == "flow4" else 4470
        image = side * side * 3
        grown = measured["peak"] - measured["before"]
        measured.update(decoded_bytes=image, grown=grown, ratio=round(grown / image, 2))
        results["cases"][case] = measured
        print(
            f"{case:8} {image / MIB:10.0f} {grown / MIB:16.0f} {grown / image:6.2f}  "
            f"{measured['outcome']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
